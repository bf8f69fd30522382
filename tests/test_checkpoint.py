"""Checkpoint folders: exact round trip, atomic replacement, one-line errors for every bad file."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from codecomplete.engine.checkpoint import load_checkpoint, save_checkpoint
from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.model import GPT, config_from_preset
from codecomplete.engine.tokenizer import Tokenizer
from codecomplete.train.tokenizer_train import train_tokenizer

FILES = {"config.json", "model.safetensors", "tokenizer.json"}
CODE = "".join(
    f"def f{i}(x, y={i * 37}):\n    if x > {i}:\n        return x * {i} + y\n\treturn 'v{i % 7}'\n"
    for i in range(200)
)




@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer([CODE], 400)


@pytest.fixture(scope="module")
def other_tok(tok: Tokenizer) -> Tokenizer:
    other = train_tokenizer([CODE], 330)
    assert other.vocab_size != tok.vocab_size
    return other


def tiny_model(tok: Tokenizer, seed: int = 0, **overrides: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(config_from_preset("tiny", tok.vocab_size, **overrides)).eval()


@pytest.fixture
def saved(tmp_path: Path, tok: Tokenizer) -> Path:
    return save_checkpoint(tmp_path / "ckpt", tiny_model(tok), tok, {"step": 7})


def load_error(path: Path, *names: object) -> str:
    """Load a broken checkpoint; the error is one line naming the file, then '; what to do'."""
    with pytest.raises(CodecompleteError) as excinfo:
        load_checkpoint(path)
    message = str(excinfo.value)
    assert "\n" not in message
    for name in names:
        assert str(name) in message
    assert message.rsplit("; ", 1)[-1].strip() != message.strip()  # a fix follows the diagnosis
    return message


# --- round trip ---------------------------------------------------------------------------


def test_round_trip_is_exact(tmp_path: Path, tok: Tokenizer) -> None:
    model = tiny_model(tok)
    provenance = {"step": 123, "data": "corpus/", "val_loss": 1.25}
    path = save_checkpoint(tmp_path / "runs" / "best", model, tok, provenance)

    assert {f.name for f in path.iterdir()} == FILES
    assert [p.name for p in path.parent.iterdir()] == ["best"]  # no temp folder left behind

    ckpt = load_checkpoint(path)
    idx = torch.tensor([tok.encode(CODE)[:100]])
    with torch.no_grad():
        assert torch.equal(ckpt.model(idx)[0], model(idx)[0])
    assert ckpt.model.config == model.config
    assert not ckpt.model.training
    assert ckpt.model.lm_head.weight is ckpt.model.transformer.wte.weight  # still tied
    assert ckpt.tokenizer.to_str() == tok.to_str()
    assert ckpt.tokenizer.sha256 == tok.sha256
    assert ckpt.tokenizer.encode(CODE[:500]) == tok.encode(CODE[:500])
    assert ckpt.provenance == provenance


def test_config_records_the_tokenizer(saved: Path, tok: Tokenizer) -> None:
    config = json.loads((saved / "config.json").read_text())
    assert config["tokenizer"]["vocab_size"] == tok.vocab_size
    assert config["tokenizer"]["special_ids"] == tok.special_ids
    assert config["tokenizer"]["sha256"] == tok.sha256
    assert config["model"]["vocab_size"] % 64 == 0
    assert config["model"]["vocab_size"] >= tok.vocab_size


def test_saving_over_a_checkpoint_replaces_it(saved: Path, tok: Tokenizer) -> None:
    (saved / "stale.txt").write_text("from an older save")
    newer = tiny_model(tok, seed=1, n_layer=3)
    save_checkpoint(saved, newer, tok, {"step": 8})

    assert {f.name for f in saved.iterdir()} == FILES
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]
    ckpt = load_checkpoint(saved)
    assert ckpt.provenance == {"step": 8}
    assert ckpt.model.config.n_layer == 3
    idx = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(ckpt.model(idx)[0], newer(idx)[0])


# --- errors -------------------------------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    load_error(tmp_path / "nowhere", tmp_path / "nowhere")


@pytest.mark.parametrize("name", sorted(FILES))
def test_missing_file(saved: Path, name: str) -> None:
    (saved / name).unlink()
    load_error(saved, saved, name)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda b: b[: len(b) // 2],  # cut in half
        lambda b: b[:6],  # shorter than the header length
        lambda b: b"",
        lambda b: bytes(range(256)) * 40,  # garbage: absurd header length
        lambda b: struct.pack("<Q", 12) + b"{not json!!}" + b[20:],  # plausible length, bad header
    ],
    ids=["half", "six-bytes", "empty", "garbage", "bad-header"],
)
def test_corrupt_weights(saved: Path, corrupt: Callable[[bytes], bytes]) -> None:
    weights = saved / "model.safetensors"
    weights.write_bytes(corrupt(weights.read_bytes()))
    load_error(saved, weights)


@pytest.mark.parametrize("text", ["{", '{"format_version": 1,', "", "\xff\xfe"])
def test_invalid_json_config(saved: Path, text: str) -> None:
    (saved / "config.json").write_bytes(text.encode("latin-1"))
    load_error(saved, saved / "config.json")


@pytest.mark.parametrize("value", [[], None, "text", 1])
def test_config_that_is_not_an_object(saved: Path, value: object) -> None:
    (saved / "config.json").write_text(json.dumps(value))
    load_error(saved, saved / "config.json")


def test_wrong_format_version(saved: Path) -> None:
    config = json.loads((saved / "config.json").read_text())
    config["format_version"] = 99
    (saved / "config.json").write_text(json.dumps(config))
    assert "99" in load_error(saved, saved / "config.json")


def test_unknown_model_field(saved: Path) -> None:
    config = json.loads((saved / "config.json").read_text())
    config["model"]["n_experts"] = 8
    (saved / "config.json").write_text(json.dumps(config))
    load_error(saved, saved / "config.json")


def set_completion(saved: Path, section: object) -> None:
    config = json.loads((saved / "config.json").read_text())
    config["completion"] = section
    (saved / "config.json").write_text(json.dumps(config))


def test_completion_settings_travel_with_the_weights(saved: Path) -> None:
    from codecomplete.engine.completion import CONTEXT_WEIGHT, CompletionEngine

    assert load_checkpoint(saved).completion == {}
    assert CompletionEngine.from_checkpoint(saved, "cpu").context_weight == CONTEXT_WEIGHT
    set_completion(saved, {"context_weight": 0.1})
    assert load_checkpoint(saved).completion == {"context_weight": 0.1}
    assert CompletionEngine.from_checkpoint(saved, "cpu").context_weight == 0.1
    assert CompletionEngine.from_checkpoint(saved, "cpu", context_weight=0.0).context_weight == 0.0  # the caller's word wins


@pytest.mark.parametrize("section", [{"context_weight": 1.5}, {"context_weight": -0.1}, {"context_weight": "high"},
                                     {"context_weight": True}, {"temperature": 0.2}, [0.1]])
def test_bad_completion_settings(saved: Path, section: object) -> None:
    set_completion(saved, section)
    assert "context_weight" in load_error(saved, saved / "config.json")


def test_tokenizer_from_another_run(saved: Path, tok: Tokenizer, other_tok: Tokenizer) -> None:
    other_tok.save(saved / "tokenizer.json")
    message = load_error(saved, saved)
    assert str(other_tok.vocab_size) in message and str(tok.vocab_size) in message


def test_garbage_tokenizer(saved: Path) -> None:
    (saved / "tokenizer.json").write_text('{"model": 3}')
    load_error(saved, saved / "tokenizer.json")


def test_weights_of_another_shape(tmp_path: Path, tok: Tokenizer) -> None:
    wide = save_checkpoint(tmp_path / "wide", tiny_model(tok, n_embd=64), tok)
    narrow = save_checkpoint(tmp_path / "narrow", tiny_model(tok, n_embd=32), tok)
    shutil.copy(narrow / "model.safetensors", wide / "model.safetensors")
    assert "size mismatch" in load_error(wide, wide / "model.safetensors", "config.json")


@pytest.mark.parametrize(
    "config_layers, weight_layers, word", [(2, 3, "unexpected"), (3, 2, "missing")]
)
def test_weights_with_another_number_of_layers(
    tmp_path: Path, tok: Tokenizer, config_layers: int, weight_layers: int, word: str
) -> None:
    target = save_checkpoint(tmp_path / "target", tiny_model(tok, n_layer=config_layers), tok)
    donor = save_checkpoint(tmp_path / "donor", tiny_model(tok, n_layer=weight_layers), tok)
    shutil.copy(donor / "model.safetensors", target / "model.safetensors")
    assert word in load_error(target, target / "model.safetensors")
