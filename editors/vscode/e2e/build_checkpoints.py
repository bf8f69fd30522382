"""Tiny checkpoints for the VS Code end-to-end test, made by the test suite's own builder
(tests/test_lsp.py: build_checkpoints): `a` trained a little, `b` another model on the same tokenizer.

    python editors/vscode/e2e/build_checkpoints.py DIR   # prints DIR/a and DIR/b
"""
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[3] / "tests"
sys.path.insert(0, str(TESTS))  # test_lsp imports conftest from there

from test_lsp import build_checkpoints  # noqa: E402

if __name__ == "__main__":
    out = build_checkpoints(Path(sys.argv[1]).resolve())
    print(out.a)
    print(out.b)
