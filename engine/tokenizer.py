"""Byte-level BPE tokenizer wrapper: special tokens by name, vocab size from the file."""
from __future__ import annotations

import hashlib
from pathlib import Path

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


class Tokenizer:
    """A `tokenizers` BPE with the project's special tokens; decodes text byte-exactly."""

    def __init__(self, hf: HFTokenizer) -> None:
        self.hf = hf
        missing = [s for s in SPECIAL_TOKENS.values() if hf.token_to_id(s) is None]
        if missing:
            raise CodecompleteError(
                f"tokenizer lacks special tokens {missing}; train one with `codecomplete-train tokenizer`"
            )
        self.special_ids: dict[str, int] = {
            name: hf.token_to_id(tok) for name, tok in SPECIAL_TOKENS.items()
        }
        self.eot_id = self.special_ids["eot"]
        # Code that mentions "<|endoftext|>" is text: only our own code inserts control tokens.
        self.hf.encode_special_tokens = True

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
        self.hf.save(str(path))

    def to_str(self) -> str:
        return self.hf.to_str()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_str().encode()).hexdigest()

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and each token's (start, end) character span in text."""
        enc = self.hf.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        # skip_special_tokens=False keeps FIM markers visible; clean-up is off in the file itself.
        return self.hf.decode(ids, skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (a token may end inside a UTF-8 character)."""
        tok = self.hf.id_to_token(token_id)
        if tok in SPECIAL_TOKENS.values():
            return tok.encode()
        return bytes(_BYTE_DECODER[c] for c in tok)


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
