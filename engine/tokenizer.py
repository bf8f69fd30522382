"""Tokenizer wrapper: special tokens by role, vocab size from the file, each token's raw bytes.

A tokenizer trained here holds this project's five special tokens, and its models learned
fill-in-the-middle in SPM order (train/data.py). A Hugging Face model's tokenizer.json holds its
family's markers instead: they are looked up among its tokens (the first candidate it holds wins),
and those models learned PSM order. Tokens are byte-level BPE (GPT-2's alphabet: this project,
Qwen, StarCoder2, DeepSeek-Coder, Llama 3) or SentencePiece-style pieces (`▁` for a space,
`<0xNN>` byte fallback: Llama 2, CodeLlama).
"""
from __future__ import annotations

import hashlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from codecomplete.engine.errors import CodecompleteError

# Names used everywhere in the code; the strings live only here.
SPECIAL_TOKENS: dict[str, str] = {
    "eot": "<|endoftext|>",
    "file_sep": "<|file_separator|>",
    "fim_prefix": "<|fim_prefix|>",
    "fim_suffix": "<|fim_suffix|>",
    "fim_middle": "<|fim_middle|>",
}
# Other families' markers, checked against the tokenizer rather than trusted by model type.
FIM_MARKERS = [  # (prefix, suffix, middle)
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, StarCoder2
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
    ("▁<PRE>", "▁<SUF>", "▁<MID>"),  # CodeLlama
]
END_MARKERS = ["<|endoftext|>", "<|end_of_text|>", "<｜end▁of▁sentence｜>", "</s>"]  # Qwen/StarCoder2, Llama 3, DeepSeek, Llama 2
FILE_SEP_MARKERS = ["<|file_sep|>", "<file_sep>"]
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece byte fallback
_MARKUP = re.compile(r"▁?<.+>")  # an added token that marks structure (<|im_end|>, <file_sep>) ends a completion


class Tokenizer:
    """A `tokenizers` tokenizer with its special tokens by role; decodes text byte-exactly.

    special_ids: role -> id. Always "eot" (end of text); "fim_prefix", "fim_suffix", "fim_middle"
    when the tokenizer has them; "bos" when it puts a start token before every text (Llama,
    DeepSeek-Coder); "file_sep" when it has one. eos: the end-of-text token to use instead of
    the first of END_MARKERS, and bos: a start token to put before every text, where the
    tokenizer's post-processor does not say (a model's config files name them).
    """

    def __init__(self, hf: HFTokenizer, eos: str | None = None, bos: str | None = None) -> None:
        self.source = hf.to_str()  # as given: what save() writes and sha256 hashes
        if all(hf.token_to_id(s) is not None for s in SPECIAL_TOKENS.values()) and eos in (None, SPECIAL_TOKENS["eot"]):
            self.special_ids: dict[str, int] = {name: hf.token_to_id(tok) for name, tok in SPECIAL_TOKENS.items()}
            self.fim_order = "spm"
        else:
            self.special_ids = _family_ids(hf, eos)
            self.fim_order = "psm"
        spec = json.loads(self.source)
        decoder = json.dumps(spec.get("decoder"))
        self.byte_level = "ByteLevel" in decoder
        if not self.byte_level and not ("Metaspace" in decoder or "ByteFallback" in decoder):
            raise CodecompleteError("tokenizer.json holds neither byte-level BPE nor SentencePiece-style pieces; "
                                    "use the tokenizer.json of a supported model or train one with `codecomplete-train tokenizer`")
        if _drop_dummy_prefix(spec):
            hf = HFTokenizer.from_str(json.dumps(spec))
        # Code that mentions "<|endoftext|>" is text: only our own code inserts control tokens.
        hf.encode_special_tokens = True
        self.hf = hf
        self.eot_id = self.special_ids["eot"]
        plain, marked = hf.encode("a", add_special_tokens=False).ids, hf.encode("a", add_special_tokens=True).ids
        if bos is not None and hf.token_to_id(bos) is not None:
            self.special_ids["bos"] = hf.token_to_id(bos)
        elif len(marked) == len(plain) + 1 and marked[1:] == plain:  # a post-processor that adds a start token
            self.special_ids["bos"] = marked[0]
        # Ids that end a completion and never appear in one: the roles and every marker-like added token.
        self.control_ids = frozenset(self.special_ids.values()) | {
            i for i, t in hf.get_added_tokens_decoder().items() if t.special or _MARKUP.fullmatch(t.content)}

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise CodecompleteError(f"tokenizer file {path} not found; pass the tokenizer.json written by `codecomplete-train tokenizer`")
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CodecompleteError(f"{path} is not a valid tokenizer.json ({first}); retrain it with `codecomplete-train tokenizer`") from e
        return cls(hf)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.source)

    def to_str(self) -> str:
        return self.source

    @cached_property
    def sha256(self) -> str:  # asked per request by the server's repository context: hash once
        return hashlib.sha256(self.source.encode()).hexdigest()

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    @property
    def has_fim(self) -> bool:
        return {"fim_prefix", "fim_suffix", "fim_middle"} <= self.special_ids.keys()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and each token's (start, end) character span in text."""
        enc = self.hf.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # _fast skips the offsets, which nothing batched needs: a quarter less time on a workspace
        return [e.ids for e in self.hf.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        # skip_special_tokens=False keeps FIM markers visible; clean-up is off in the file itself.
        return self.hf.decode(ids, skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (a token may end inside a UTF-8 character)."""
        tok = self.hf.id_to_token(token_id)
        if token_id in self.control_ids:
            return tok.encode()
        if self.byte_level:
            try:
                return bytes(_BYTE_DECODER[c] for c in tok)
            except KeyError:  # an added token written as plain text
                return tok.encode()
        byte = _BYTE_PIECE.fullmatch(tok)
        return bytes([int(byte[1], 16)]) if byte else tok.replace("▁", " ").encode()


def _family_ids(hf: HFTokenizer, eos: str | None) -> dict[str, int]:
    def has(*tokens: str) -> bool:
        return all(hf.token_to_id(t) is not None for t in tokens)

    ends = [eos] if eos is not None else END_MARKERS
    end = next((t for t in ends if has(t)), None)
    if end is None:
        raise CodecompleteError(
            f"tokenizer has neither this project's special tokens nor an end-of-text token ({', '.join(ends)}); "
            "train one with `codecomplete-train tokenizer` or use the tokenizer.json of a supported model")
    ids = {"eot": hf.token_to_id(end)}
    fim = next((m for m in FIM_MARKERS if has(*m)), None)
    if fim is not None:
        ids |= {role: hf.token_to_id(t) for role, t in zip(("fim_prefix", "fim_suffix", "fim_middle"), fim)}
    sep = next((t for t in FILE_SEP_MARKERS if has(t)), None)
    if sep is not None:
        ids["file_sep"] = hf.token_to_id(sep)
    return ids


def _drop_dummy_prefix(spec: dict[str, Any]) -> bool:
    """Make the tokenizer encode text as it is: whether anything changed.

    SentencePiece-style tokenizers put a space before the text ("▁" + text), and a GPT-2 one
    may too: right for a whole document, wrong for the windows and suffixes the engine encodes,
    and it breaks byte-exact round trips. The decoder's matching strip of that space goes too.
    """
    changed = False

    def clean(node: Any, drop: str, prefixing: tuple[str, ...]) -> Any:
        nonlocal changed
        if isinstance(node, list):
            kept = [n for n in node if not (isinstance(n, dict) and n.get("type") == drop)]
            changed |= len(kept) < len(node)
            return [clean(n, drop, prefixing) for n in kept]
        if not isinstance(node, dict):
            return node
        if node.get("type") == drop:
            changed = True
            return None
        node = {k: clean(v, drop, prefixing) for k, v in node.items()}
        for key, off in (("prepend_scheme", "never"), ("add_prefix_space", False)):
            if node.get("type") in prefixing and key in node and node[key] != off:
                node[key], changed = off, True
        return node

    spec["normalizer"] = clean(spec.get("normalizer"), "Prepend", ())
    spec["pre_tokenizer"] = clean(spec.get("pre_tokenizer"), "Prepend", ("Metaspace", "ByteLevel"))
    spec["decoder"] = clean(spec.get("decoder"), "Strip", ("Metaspace",))
    return changed


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, inverted."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


_BYTE_DECODER = _byte_level_alphabet()
