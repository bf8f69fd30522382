"""`codecomplete-train export`: a checkpoint as a Hugging Face model folder.

transformers' AutoModelForCausalLM and AutoTokenizer load it with no custom code (a model trained
with --mlp swiglu is a LlamaForCausalLM), and so do vLLM, TGI and llama.cpp's converter. The
weight names and config keys come from engine/hf.py's table, the one the import uses; the folder
is written atomically, like a checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from codecomplete.engine import hf
from codecomplete.engine.checkpoint import load_checkpoint, write_folder
from codecomplete.engine.errors import CodecompleteError

CARD = """# {name}

Exported from a codecomplete checkpoint as a `{architecture}` (transformers loads it with no custom code).

Fill-in-the-middle prompts in the order the model was trained with ({order}):

    {layout}

The completion is what the model writes next, up to `{eos}`.
"""
LAYOUTS = {"spm": "{eot}{pre}{suf}SUFFIX{mid}PREFIX", "psm": "{first}{pre}PREFIX{suf}SUFFIX{mid}"}


def export_checkpoint(checkpoint: Path, out: Path) -> Path:
    ckpt = load_checkpoint(checkpoint)
    c, tok = ckpt.model.config, ckpt.tokenizer
    if hf.family_of(c) is None:
        raise CodecompleteError(f"{checkpoint} has a {c.mlp.upper()} MLP with {c.norm}, a layout no transformers architecture has; "
                                f"train with --mlp swiglu (the Llama layout) to export")
    config = hf.hf_config(c, tok)
    names = {role: tok.hf.id_to_token(i) for role, i in tok.special_ids.items()}

    def fill(tmp: Path) -> None:
        state = hf.to_hf({k: v.detach().cpu() for k, v in ckpt.model.state_dict().items()}, c)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"], "pad_token_id": tok.eot_id}
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        tok.save(tmp / "tokenizer.json")
        settings = {
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": c.block_size, "clean_up_tokenization_spaces": False,
            "eos_token": names["eot"], "pad_token": names["eot"], "bos_token": names.get("bos"),
            "additional_special_tokens": [names[r] for r in ("fim_prefix", "fim_suffix", "fim_middle", "file_sep") if r in names],
        }
        (tmp / "tokenizer_config.json").write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
        if tok.has_fim:
            layout = LAYOUTS[tok.fim_order].format(eot=names["eot"], first=names.get("bos", names["eot"]), pre=names["fim_prefix"],
                                                   suf=names["fim_suffix"], mid=names["fim_middle"])
            card = CARD.format(name=out.name, architecture=config["architectures"][0], order=tok.fim_order.upper(),
                               layout=layout, eos=names["eot"])
            (tmp / "README.md").write_text(card)

    return write_folder(out, fill)
