"""The wheel a user installs (pip, pipx, uv): it carries the model and only the codecomplete namespace.

Built with `python -m build`, installed into a fresh virtual environment outside the repository and
run from another folder, so nothing can come from the checkout. The environment borrows this one's
dependencies (torch, pygls, ...) through a .pth line placed after its own site-packages: a real
install of them would download torch's GPU build on a developer's GPU machine.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from test_lsp_wire import INIT, STATUS, Raw, frame, request

REPO = Path(__file__).resolve().parents[1]


def run(*args: str | Path, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    built = run(sys.executable, "-m", "build", "--outdir", tmp / "dist", REPO, cwd=tmp)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("codecomplete-*.whl")
    assert len(list((tmp / "dist").glob("codecomplete-*.tar.gz"))) == 1
    env = tmp / "venv"
    assert run(sys.executable, "-m", "venv", env, cwd=tmp).returncode == 0
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run(env / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index", wheel, cwd=tmp)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return env


def site_packages(env: Path) -> Path:
    return next((env / "lib").glob("python3*/site-packages"))


def test_only_the_codecomplete_namespace_lands_in_site_packages(venv: Path) -> None:
    names = {p.name for p in site_packages(venv).iterdir()}
    assert "codecomplete" in names and not names & {"engine", "lsp", "train", "models", "tests", "benchmarks"}
    files = {str(p.relative_to(site_packages(venv))) for p in (site_packages(venv) / "codecomplete").rglob("*")}
    assert {"codecomplete/models/default/model.safetensors", "codecomplete/models/default/tokenizer.json"} <= files
    assert not any(re.search(r"tests?/|node_modules|benchmarks|recipe", f) for f in files)


def test_metadata_names_licence_readme_urls_and_dependencies(venv: Path) -> None:
    meta = importlib.metadata.Distribution.at(next(site_packages(venv).glob("codecomplete-*.dist-info")))
    assert meta.metadata["License-Expression"] == "MIT" and meta.metadata["Description-Content-Type"] == "text/markdown"
    assert meta.metadata.get_all("Project-URL") and meta.metadata.get_all("Classifier")
    needed = {re.match(r"[\w.-]+", r).group(0).lower() for r in meta.requires or [] if "extra ==" not in r}
    assert {"torch", "pygls", "tokenizers", "safetensors"} <= needed
    for name in needed:  # what a real install would resolve is importable for the server
        importlib.metadata.version(name)


def test_scripts_run_from_another_folder(venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CODECOMPLETE_CHECKPOINT", "PYTHONPATH")}
    helped = run(venv / "bin" / "codecomplete-train", "--help", cwd=tmp_path, env=env)
    assert helped.returncode == 0 and "quickstart" in helped.stdout
    where = run(venv / "bin" / "python", "-c", "import codecomplete.lsp, codecomplete.models as m; "
                "print(codecomplete.lsp.__file__); print(m.DEFAULT_CHECKPOINT)", cwd=tmp_path, env=env)
    assert all(line.startswith(str(site_packages(venv))) for line in where.stdout.split()), where


def test_the_installed_server_completes_from_the_bundled_model(venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CODECOMPLETE_CHECKPOINT", "PYTHONPATH")}
    raw = Raw([str(venv / "bin" / "codecomplete-lsp")], env=env | {"OMP_NUM_THREADS": "1"})
    try:
        (tmp_path / "helpers.py").write_text("def read_lines(path):\n    with open(path) as f:\n        return f.readlines()\n")
        init = request(1, "initialize", {**INIT["params"], "rootUri": tmp_path.as_uri()})  # repository context on
        raw.write(frame(init))
        raw.wait(1)
        raw.write(frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        deadline, i = time.monotonic() + 180, 1
        while True:  # the model loads in the background: poll until it is served or fails
            i += 1
            raw.write(frame(request(i, "workspace/executeCommand", STATUS)))
            status = raw.wait(i, 120)["result"]
            indexed = status["workspace"] and status["workspace"][0]["index"] and not status["workspace"][0]["index"]["stale"]
            if (status["ready"] and indexed) or status.get("error") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status["ready"], status
        assert Path(status["model"]["checkpoint"]).is_relative_to(site_packages(venv))
        assert status["workspace"][0]["files"] == 1 and status["workspace"][0]["index"]["tokens"] > 0
        uri = (tmp_path / "x.py").as_uri()
        text = "import os\n\n\ndef read_lines(path):\n    with open(path) as f:\n        return f.read"
        doc = {"uri": uri, "languageId": "python", "version": 1, "text": text}
        raw.write(frame({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": doc}}))
        raw.write(frame(request(500, "textDocument/completion",
                                {"textDocument": {"uri": uri}, "position": {"line": 5, "character": 21}})))
        items = raw.wait(500, 120)["result"]["items"]
        assert items and all(item["label"] for item in items)
        assert raw.stderr.count(b"indexed ") == 1 and b"Traceback" not in raw.stderr
        assert raw.finish() == 0
    finally:
        raw.proc.kill()
