"""Hugging Face model folders: tiny random Llama, Qwen2 and StarCoder2 models built with
`transformers` in the test, served by our one GPT: logits, cached decoding, greedy completions,
FIM prompts and tokenizers against transformers' own; bad folders are one-line errors."""
from __future__ import annotations

import itertools
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import synthetic_module
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from codecomplete.engine.checkpoint import load_checkpoint
from codecomplete.engine.completion import CompletionEngine
from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.hf import SERVED_CONTEXT
from codecomplete.engine.prompt import build_prompt
from codecomplete.engine.stops import StopRule
from codecomplete.engine.tokenizer import Tokenizer
from codecomplete.train.tokenizer_train import build_untrained

transformers = pytest.importorskip("transformers")

TEXTS = [synthetic_module(random.Random(i)) for i in range(16)]
# Ends in ':' inside brackets: no token to heal, no indentation to force (what generate() does not do).
PREFIX = "import os\n\n\ndef load_items(path, items=None):\n    return {path:"
SUFFIX = "}\n\n\ndef main():\n    pass\n"
UNICODE = "def grüße(x):\n    return 'naïve ☃ 日本' + x  # ✓\n\tpass\n"


@dataclass(frozen=True)
class Family:
    config: Any  # a transformers config
    specials: list[str]  # added as special tokens
    markers: list[str]  # added as plain (non-special) tokens, as Qwen2.5 does with its FIM tokens
    eos: str
    bos: str | None = None
    bos_in: str = "post_processor"  # or tokenizer_config (add_bos_token), as Llama 2 folders have it
    fim: tuple[str, str, str] | None = None
    sentencepiece: bool = False
    legacy_config: dict[str, Any] | None = None  # top-level keys of pre-5.0 config.json files, as on the Hub


def shape(**kw: Any) -> dict[str, Any]:
    return dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, initializer_range=0.2) | kw


def families() -> dict[str, Family]:
    t = transformers
    return {
        "qwen2": Family(
            t.Qwen2Config(**shape(num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=32768,
                                  rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
            ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"],
            "<|endoftext|>", fim=("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")),
        "starcoder2": Family(
            t.Starcoder2Config(**shape(num_key_value_heads=2, intermediate_size=256, max_position_embeddings=16384,
                                       sliding_window=4096, rope_parameters={"rope_type": "default", "rope_theta": 1e5})),
            ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<repo_name>", "<file_sep>"], [],
            "<|endoftext|>", fim=("<fim_prefix>", "<fim_suffix>", "<fim_middle>")),
        "deepseek": Family(
            t.LlamaConfig(**shape(num_key_value_heads=4, intermediate_size=160, max_position_embeddings=16384,
                                  rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 1e5})),
            ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>"], [],
            "<｜end▁of▁sentence｜>", bos="<｜begin▁of▁sentence｜>", fim=("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
            legacy_config={"rope_theta": 1e5, "rope_scaling": {"type": "linear", "factor": 4.0}}),
        "codellama": Family(
            t.LlamaConfig(**shape(num_key_value_heads=4, rms_norm_eps=1e-5, max_position_embeddings=16384,
                                  rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
            ["<unk>", "<s>", "</s>", "▁<PRE>", "▁<MID>", "▁<SUF>", "▁<EOT>"], [], "</s>", bos="<s>", bos_in="tokenizer_config",
            fim=("▁<PRE>", "▁<SUF>", "▁<MID>"), sentencepiece=True),
        "llama3": Family(
            t.LlamaConfig(**shape(num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=8192,
                                  rope_parameters={"rope_type": "default", "rope_theta": 5e5})),
            ["<|begin_of_text|>", "<|end_of_text|>"], [], "<|end_of_text|>", bos="<|begin_of_text|>"),
    }


FAMILIES = list(families())
FIM_FAMILIES = [f for f in FAMILIES if families()[f].fim]


def byte_level(f: Family) -> HFTokenizer:
    hf = build_untrained()
    trainer = trainers.BpeTrainer(vocab_size=360, special_tokens=f.specials, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(TEXTS, trainer=trainer)
    return hf


def sentencepiece(f: Family) -> HFTokenizer:
    """Llama 2's layout: "▁" for spaces, a dummy-prefix space, <0xNN> byte fallback after 3 specials."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Metaspace()
    hf.train_from_iterator(TEXTS, trainer=trainers.BpeTrainer(vocab_size=300, min_frequency=2))
    learned = json.loads(hf.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    for piece in sorted(learned["vocab"], key=learned["vocab"].get):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    hf = HFTokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    hf.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    hf.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    hf.add_special_tokens(f.specials)
    return hf


def build_family(root: Path, name: str) -> Path:
    out = root / name
    if out.exists():
        return out
    f = families()[name]
    hf = sentencepiece(f) if f.sentencepiece else byte_level(f)
    hf.add_tokens([AddedToken(m, special=False, normalized=False) for m in f.markers])
    if f.bos and f.bos_in == "post_processor":
        hf.post_processor = processors.TemplateProcessing(single=f"{f.bos} $A", special_tokens=[(f.bos, hf.token_to_id(f.bos))])
    config = f.config
    config.vocab_size = hf.get_vocab_size() + 50  # embedding rows past the tokenizer's, as real models have
    config.eos_token_id = hf.token_to_id(f.eos)
    config.bos_token_id = hf.token_to_id(f.bos) if f.bos else None
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    hf.save(str(out / "tokenizer.json"))
    if f.bos_in == "tokenizer_config":
        (out / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "bos_token": f.bos, "eos_token": f.eos}))
    if f.legacy_config:
        saved = json.loads((out / "config.json").read_text())
        saved.pop("rope_parameters")
        (out / "config.json").write_text(json.dumps(saved | f.legacy_config))
    return out


@pytest.fixture(scope="session")
def hf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "hf-families"


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest, hf_root: Path) -> tuple[str, Path]:
    return request.param, build_family(hf_root, request.param)


def reference(path: Path) -> Any:
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def with_bos(tok: Tokenizer, ids: list[int]) -> list[int]:
    return [tok.special_ids["bos"], *ids] if "bos" in tok.special_ids else ids


# --- the model --------------------------------------------------------------------------------


@torch.no_grad()
def test_logits_match_transformers_with_and_without_the_cache(family: tuple[str, Path]) -> None:
    name, path = family
    ckpt, ref = load_checkpoint(path), reference(path)
    ids = torch.tensor([with_bos(ckpt.tokenizer, ckpt.tokenizer.encode(TEXTS[0]))[:72]])
    expected = ref(ids).logits
    ours, _ = ckpt.model(ids)
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max().item() < 1e-4

    cache = ckpt.model.new_cache(1)
    prefill, _ = ckpt.model(ids[:, :48], cache=cache)
    steps = [ckpt.model(ids[:, t : t + 1], cache=cache)[0] for t in range(48, 72)]
    assert (torch.cat([prefill, *steps], dim=1) - expected).abs().max().item() < 1e-4
    assert cache.k.size(2) == ref.config.num_key_value_heads  # the cache holds only the shared heads


def test_configs_map_onto_our_options(hf_root: Path) -> None:
    c = {name: load_checkpoint(build_family(hf_root, name)).model.config for name in FAMILIES}
    assert (c["qwen2"].qkv_bias, c["qwen2"].bias, c["qwen2"].n_kv_head, c["qwen2"].tie_embeddings) == (True, False, 2, True)
    assert (c["starcoder2"].mlp, c["starcoder2"].norm, c["starcoder2"].bias) == ("gelu", "layernorm", True)
    assert (c["deepseek"].rope_scale, c["deepseek"].rope_theta, c["deepseek"].mlp) == (4.0, 1e5, "swiglu")
    assert c["qwen2"].block_size == 4096  # 32K declared: the cap bounds the preallocated cache
    assert load_checkpoint(build_family(hf_root, "qwen2"), max_context=1024).model.config.block_size == 1024


@torch.no_grad()
@pytest.mark.parametrize("suffix", ["", SUFFIX], ids=["prefix", "fim"])
def test_greedy_completion_equals_generate(family: tuple[str, Path], suffix: str) -> None:
    name, path = family
    ckpt, ref = load_checkpoint(path), reference(path)
    tok = ckpt.tokenizer
    engine = CompletionEngine(ckpt.model, tok, context_weight=0.0, min_score=float("-inf"))
    candidates = engine.complete(PREFIX, suffix, n=1, max_new_tokens=12, multiline=True, max_lines=None)
    prompt = build_prompt(tok, PREFIX, suffix, ckpt.model.config.block_size - 12, True)
    assert prompt.heal == b"" and StopRule.at_cursor(PREFIX, True, None).lead == ""
    out = ref.generate(torch.tensor([prompt.ids]), max_new_tokens=12, do_sample=False, pad_token_id=tok.eot_id)[0, len(prompt.ids) :]
    ends = [i for i, t in enumerate(out.tolist()) if t in tok.control_ids or t >= tok.vocab_size]  # where the engine stops
    text = b"".join(tok.token_bytes(t) for t in out[: min(ends, default=len(out))].tolist()).decode(errors="ignore")
    if candidates:
        assert text.startswith(candidates[0].text)
    else:  # a random model may well begin with a control token: then neither has anything to insert
        assert not text.strip()


# --- tokenizers and prompts -------------------------------------------------------------------


def test_fim_prompt_holds_the_family_tokens_in_psm_order(hf_root: Path) -> None:
    for name in FIM_FAMILIES:
        f, tok = families()[name], load_checkpoint(build_family(hf_root, name)).tokenizer
        pre, suf, mid = (tok.hf.token_to_id(t) for t in f.fim)
        assert (tok.special_ids["fim_prefix"], tok.special_ids["fim_suffix"], tok.special_ids["fim_middle"]) == (pre, suf, mid)
        assert tok.fim_order == "psm" and tok.eot_id == tok.hf.token_to_id(f.eos)
        start = tok.hf.token_to_id(f.bos or f.eos)
        assert build_prompt(tok, PREFIX, SUFFIX, 200, True).ids == [start, pre, *tok.encode(PREFIX), suf, *tok.encode(SUFFIX), mid]
        assert build_prompt(tok, PREFIX, "", 200, True).ids == [start, *tok.encode(PREFIX)]
        # a window that starts mid-file keeps the start token only where every text has one
        window = build_prompt(tok, TEXTS[2], "", 60, True)
        assert window.prefix_start > 0 and (window.ids[0] == start) == bool(f.bos)


def test_a_model_without_fim_tokens_completes_from_the_prefix_and_says_so_once(hf_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = build_family(hf_root, "llama3")
    with caplog.at_level(logging.WARNING, logger="codecomplete"):
        tok = load_checkpoint(path).tokenizer
    assert [r.getMessage() for r in caplog.records if "fill-in-the-middle" in r.getMessage()] == [
        f"{path}: its tokenizer has no fill-in-the-middle tokens, so it completes from the text before the cursor alone"]
    assert not tok.has_fim
    assert build_prompt(tok, PREFIX, SUFFIX, 200, True).ids == [tok.special_ids["bos"], *tok.encode(PREFIX)]


def test_tokens_are_bytes_for_byte_level_and_sentencepiece_tokenizers(hf_root: Path) -> None:
    for name in FAMILIES:
        tok = load_checkpoint(build_family(hf_root, name)).tokenizer
        for text in (UNICODE, PREFIX, " leading space", TEXTS[1][:300]):
            ids = tok.encode(text)
            assert b"".join(tok.token_bytes(i) for i in ids) == text.encode(), name
            assert tok.decode(ids) == text
            assert not set(ids) & tok.control_ids
    spm = load_checkpoint(build_family(hf_root, "codellama")).tokenizer
    assert not spm.byte_level and spm.token_bytes(spm.hf.token_to_id("<0x0A>")) == b"\n"
    assert any(spm.hf.id_to_token(i).startswith("<0x") for i in spm.encode(UNICODE))  # byte fallback was used
    # newer conversions put the dummy prefix in a Metaspace pre-tokenizer instead of the normalizer
    spec = json.loads(spm.source) | {"normalizer": None}
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    modern = Tokenizer(HFTokenizer.from_str(json.dumps(spec)), eos="</s>")
    assert modern.encode(UNICODE) == spm.encode(UNICODE) and modern.decode(modern.encode(" x")) == " x"
    qwen = load_checkpoint(build_family(hf_root, "qwen2")).tokenizer
    assert {qwen.hf.token_to_id(t) for t in ("<|im_end|>", "<|fim_pad|>", "<|repo_name|>")} <= qwen.control_ids


def test_a_sharded_folder_loads_like_one_file(hf_root: Path, tmp_path: Path) -> None:
    path = build_family(hf_root, "qwen2")
    reference(path).save_pretrained(tmp_path, safe_serialization=True, max_shard_size="40KB")
    shutil.copy(path / "tokenizer.json", tmp_path)
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    ids = torch.tensor([list(range(5, 40))])
    with torch.no_grad():
        assert torch.equal(load_checkpoint(tmp_path).model(ids)[0], load_checkpoint(path).model(ids)[0])


# --- bad folders ------------------------------------------------------------------------------


def copy_of(hf_root: Path, tmp_path: Path, name: str = "qwen2") -> Path:
    return Path(shutil.copytree(build_family(hf_root, name), tmp_path / name))


def edit_config(path: Path, **changes: Any) -> None:
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | changes))


def one_line_error(path: Path) -> str:
    with pytest.raises(CodecompleteError) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and "; " in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("change, words", [
    ({"model_type": "gpt_neox"}, ["'gpt_neox' is not supported", "llama", "qwen2", "starcoder2"]),
    ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, ["quantised", "gptq", "unquantised"]),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, ["'yarn' is not supported"]),
    ({"hidden_act": "relu"}, ["'relu' is not supported"]),
])
def test_unsupported_configs(hf_root: Path, tmp_path: Path, change: dict[str, Any], words: list[str]) -> None:
    path = copy_of(hf_root, tmp_path)
    edit_config(path, **change)
    message = one_line_error(path)
    assert all(w in message for w in words), message


def test_missing_or_foreign_files(hf_root: Path, tmp_path: Path) -> None:
    path = copy_of(hf_root, tmp_path)
    (path / "tokenizer.json").unlink()
    assert "lacks tokenizer.json" in one_line_error(path)
    path = copy_of(hf_root, tmp_path / "b")
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    assert "pytorch_model.bin" in one_line_error(path) and "safetensors" in one_line_error(path)
    path = copy_of(hf_root, tmp_path / "c")
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-00002-of-00002.safetensors"}}))
    assert "model-00002-of-00002.safetensors" in one_line_error(path)
    path = copy_of(hf_root, tmp_path / "d")
    edit_config(path, num_hidden_layers=3)
    assert "model.layers.2" in one_line_error(path)
    path = copy_of(hf_root, tmp_path / "e", "codellama")
    (path / "tokenizer_config.json").write_text("{")
    assert "tokenizer_config.json is not valid JSON" in one_line_error(path)


# --- served -----------------------------------------------------------------------------------


def test_the_engine_caps_the_context_by_device(hf_root: Path) -> None:
    path = build_family(hf_root, "qwen2")  # declares 32K positions
    assert CompletionEngine.from_checkpoint(path, "cpu").model.config.block_size == SERVED_CONTEXT["cpu"]
    engine = CompletionEngine.from_checkpoint(path, "cpu", max_context=256)
    assert engine.model.config.block_size == 256 and engine.model.new_cache(1).k.size(3) == 256
    engine.complete(TEXTS[3] * 4, SUFFIX, n=1, max_new_tokens=8)  # a long file is cut to the window
    assert 200 < engine.stats.prompt_tokens <= 256 - 8


def test_the_language_server_serves_a_hugging_face_folder(hf_root: Path) -> None:
    from test_lsp_wire import STATUS, Raw, frame, request

    path = build_family(hf_root, "deepseek")
    options = {"checkpoint": str(path), "device": "cpu", "threads": 1, "minScore": -100, "acceptanceLog": False}
    raw = Raw()
    try:
        raw.write(frame(request(1, "initialize", {"processId": None, "rootUri": None, "capabilities": {}, "initializationOptions": options})))
        raw.wait(1)
        raw.write(frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        end = time.monotonic() + 120
        for i in itertools.count(2):  # until the model has loaded
            raw.write(frame(request(i, "workspace/executeCommand", STATUS)))
            status = raw.wait(i)["result"]
            if status["ready"] or status["error"] or time.monotonic() > end:
                break
            time.sleep(0.05)  # a poll interval, as tests/test_lsp.py's wait_for
        assert status["ready"], status["error"]
        assert status["model"]["config"]["mlp"] == "swiglu" and status["model"]["config"]["rope_scale"] == 4.0
        text = PREFIX + SUFFIX
        doc = {"uri": "file:///p/m.py", "languageId": "python", "version": 1, "text": text}
        raw.write(frame({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": doc}}))
        where = {"line": PREFIX.count("\n"), "character": len(PREFIX.rsplit("\n", 1)[-1])}
        raw.write(frame(request(9999, "textDocument/inlineCompletion", {"textDocument": {"uri": doc["uri"]}, "position": where,
                                                                        "context": {"triggerKind": 1}})))
        items = raw.wait(9999, timeout=120)["result"]["items"]
        assert items and all(item["insertText"] for item in items)
        assert raw.finish() == 0
    finally:
        raw.proc.kill()


# --- out: export, and in for fine-tuning ------------------------------------------------------


def invoke(*args: str | Path) -> str:
    from typer.testing import CliRunner

    from codecomplete.train.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result.output


TRAIN = ["--preset", "tiny", "--block-size", 32, "--batch-size", 4, "--eval-every", 4, "--eval-tokens", 256, "--device", "cpu"]


def test_a_swiglu_checkpoint_exports_to_a_folder_transformers_loads(prepared: dict[str, Path], tmp_path: Path) -> None:
    invoke("train", prepared["data"], "--out", tmp_path / "run", "--mlp", "swiglu", "--max-steps", 8, *TRAIN)
    invoke("export", tmp_path / "run" / "best", "--out", tmp_path / "hf")
    ckpt = load_checkpoint(tmp_path / "run" / "best")
    assert ckpt.model.config.mlp == "swiglu"

    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    ids = torch.tensor([[ckpt.tokenizer.eot_id, *ckpt.tokenizer.encode(TEXTS[4])][:32]])  # the block size
    with torch.no_grad():
        assert (model(ids).logits - ckpt.model(ids)[0]).abs().max().item() < 1e-4
        again = load_checkpoint(tmp_path / "hf")  # and back: the same model, still prompted in its SPM order
        assert torch.equal(again.model(ids)[0], ckpt.model(ids)[0]) and again.tokenizer.fim_order == "spm"
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in (TEXTS[5], UNICODE):
        assert theirs(text)["input_ids"] == ckpt.tokenizer.encode(text)
    assert theirs.eos_token == "<|endoftext|>" and "<|fim_middle|>" in theirs.all_special_tokens
    assert "<|endoftext|><|fim_prefix|><|fim_suffix|>SUFFIX<|fim_middle|>PREFIX" in (tmp_path / "hf" / "README.md").read_text()


def test_exporting_a_gelu_checkpoint_says_which_option_exports(prepared: dict[str, Path], tmp_path: Path) -> None:
    from codecomplete.train.export import export_checkpoint

    invoke("train", prepared["data"], "--out", tmp_path / "run", "--max-steps", 2, *TRAIN)
    with pytest.raises(CodecompleteError, match="train with --mlp swiglu"):
        export_checkpoint(tmp_path / "run" / "best", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


@torch.no_grad()
@pytest.mark.parametrize("name", ["qwen2", "starcoder2"])
def test_an_imported_model_exports_back_to_its_family(hf_root: Path, tmp_path: Path, name: str) -> None:
    from codecomplete.train.export import export_checkpoint

    path = build_family(hf_root, name)
    export_checkpoint(path, tmp_path / "out")
    ids = torch.tensor([list(range(3, 60))])
    assert torch.equal(reference(tmp_path / "out")(ids).logits, reference(path)(ids).logits)


def test_fine_tuning_an_imported_model_lowers_its_loss(hf_root: Path, code_tree: Path, tmp_path: Path) -> None:
    from codecomplete.train.cli import run_collect, run_prepare
    from codecomplete.train.loop import TrainConfig, Trainer

    path = build_family(hf_root, "qwen2")
    run_collect([code_tree], tmp_path / "corpus")
    run_prepare(tmp_path / "corpus", path / "tokenizer.json", tmp_path / "data", val_fraction=0.2)
    cfg = TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "run"), init_from=str(path), block_size=64, batch_size=4,
                      lr=1e-3, warmup_steps=2, max_steps=12, eval_every=12, eval_tokens=512, device="cpu", fim_rate=0.5)
    trainer = Trainer(cfg)
    before = trainer.evaluate()["val_loss"]
    after = trainer.run()["val_loss"]
    assert after < before - 0.5
    tuned = load_checkpoint(tmp_path / "run" / "best")
    assert tuned.provenance["init_from"] == str(path) and "preset" not in tuned.provenance  # its shape, not a preset's
    assert tuned.model.config.qkv_bias and tuned.tokenizer.fim_order == "psm"

    other = tmp_path / "other"
    run_prepare(tmp_path / "corpus", build_family(hf_root, "starcoder2") / "tokenizer.json", other, val_fraction=0.2)
    with pytest.raises(CodecompleteError, match="prepare the corpus with"):
        Trainer(TrainConfig(**{**cfg.__dict__, "data": str(other), "out": str(tmp_path / "run2")}))


def test_sample_complete_and_eval_take_a_hugging_face_folder(hf_root: Path, code_tree: Path, tmp_path: Path) -> None:
    from codecomplete.train.cli import run_collect

    path = build_family(hf_root, "starcoder2")
    assert invoke("sample", path, "--prompt", "def load(", "--n", 1, "--max-new-tokens", 6, "--device", "cpu")
    source = tmp_path / "m.py"
    source.write_text(PREFIX + SUFFIX)
    assert " ms, " in invoke("complete", path, source, "--line", PREFIX.count("\n") + 1, "--max-new-tokens", 6, "--device", "cpu")
    run_collect([code_tree], tmp_path / "corpus")
    invoke("eval", path, "--corpus", tmp_path / "corpus", "--no-baseline", "--line-cases", 4, "--body-cases", 1,
           "--lm-tokens", 256, "--out", tmp_path / "eval.json")
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["lm"]["tokens"] > 0 and set(report["line"]) == set(report["body"]) == {"model"}
