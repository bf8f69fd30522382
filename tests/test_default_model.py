"""The checkpoint shipped in models/default: small, consistent, and it completes Python."""
from __future__ import annotations

import ast
import time
from pathlib import Path

from codecomplete.engine.checkpoint import load_checkpoint, read_config
from codecomplete.engine.completion import CompletionEngine
from codecomplete.engine.model import padded_vocab_size
from codecomplete.engine.tokenizer import Tokenizer
from codecomplete.models import DEFAULT_CHECKPOINT

DEFAULT = DEFAULT_CHECKPOINT
MAX_BYTES = 40_000_000  # the repository must stay clonable


def test_the_default_model_is_shipped_small_and_documented() -> None:
    files = {p.name: p.stat().st_size for p in DEFAULT.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "MODEL_CARD.md"} <= set(files)
    assert sum(files.values()) <= MAX_BYTES
    card = (DEFAULT / "MODEL_CARD.md").read_text()
    for needed in ("License", "codecomplete-train", "bits per byte", "exact match", "n-gram"):
        assert needed in card


def test_its_config_matches_its_tokenizer() -> None:
    config = read_config(DEFAULT)
    tok = Tokenizer.from_file(DEFAULT / "tokenizer.json")
    assert config["tokenizer"]["sha256"] == tok.sha256
    assert config["model"]["vocab_size"] == padded_vocab_size(tok.vocab_size)
    assert config["tokenizer"]["special_ids"] == tok.special_ids
    assert load_checkpoint(DEFAULT).model.num_params() > 1_000_000


def test_its_provenance_names_no_path_of_the_machine_that_trained_it() -> None:
    provenance = read_config(DEFAULT)["provenance"]
    assert provenance["data"] == "../data"  # the recipe's data folder, seen from its run folder
    assert not any(isinstance(v, str) and Path(v).is_absolute() for v in provenance.values())


def test_it_completes_an_import_with_python_that_parses() -> None:
    engine = CompletionEngine.from_checkpoint(DEFAULT, "cpu", min_score=-1e9)
    top = engine.complete("import numpy as ", "", n=3)[0].text
    ast.parse("import numpy as " + top)


def test_the_server_serves_it_with_no_settings() -> None:
    """No checkpoint setting, no environment variable: completions come from models/default."""
    from tests.test_lsp_wire import ENV, INIT, STATUS, Raw, frame, request

    env = {k: v for k, v in ENV.items() if k != "CODECOMPLETE_CHECKPOINT"}
    raw = Raw(env=env)
    try:
        raw.write(frame(INIT))
        raw.wait(1)
        raw.write(frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        deadline, i, status = time.monotonic() + 120, 2, {}
        while not status.get("ready") and time.monotonic() < deadline:  # poll until the model has loaded
            raw.write(frame(request(i, "workspace/executeCommand", STATUS)))
            status, i = raw.wait(i)["result"], i + 1
            time.sleep(0.2)
        assert status.get("ready"), status
        assert Path(status["model"]["checkpoint"]) == DEFAULT
        doc = {"uri": "file:///x.py", "languageId": "python", "version": 1, "text": "import numpy as "}
        raw.write(frame({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": doc}}))
        raw.write(frame(request(i, "textDocument/completion", {"textDocument": {"uri": "file:///x.py"}, "position": {"line": 0, "character": 16}})))
        assert raw.wait(i)["result"]["items"]
        assert raw.finish() == 0
    finally:
        raw.proc.kill()
