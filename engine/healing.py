"""Token healing: back off the prompt's last token and make the first generated tokens retype it.

A cursor after `os.pa` ends the prompt on the token `pa`, a boundary the model rarely saw
before `th`; without healing it must continue from there. Removing that token and allowing
only tokens that extend its bytes lets the model pick `path` whole.
"""
from __future__ import annotations

import bisect

import torch

from codecomplete.engine.tokenizer import Tokenizer


def worth_healing(token: bytes) -> bool:
    """Whether to back off this last prompt token.

    Not a token ending in `:` (a block header, a dict key, a slice): the model has seen plenty of
    cursors after that colon, and backing it off lets a weak model reopen the header instead of
    writing the body (`def f(path):` healed went on `): str = None) -> None:`).

    Not a line break followed by indentation: the cursor sits after the indentation, which is
    a pre-token of its own (code after it never merges into it), and backing it off would only
    let the model indent deeper than the cursor. A bare line break is healed: the line may
    still need its indentation.
    """
    if token.endswith(b":"):
        return False
    return not (b"\n" in token and not token.strip(b" \t\r\n") and token.endswith((b" ", b"\t")))


class TokenHealer:
    def __init__(self, tokenizer: Tokenizer, vocab_rows: int) -> None:
        special = tokenizer.control_ids
        pieces = [(tokenizer.token_bytes(i), i) for i in range(tokenizer.vocab_size) if i not in special]
        pieces.sort()
        self.sorted_bytes = [b for b, _ in pieces]
        self.sorted_ids = [i for _, i in pieces]
        self.id_of = {b: i for b, i in pieces}
        self.vocab_rows = vocab_rows

    def allowed(self, pending: bytes) -> list[int]:
        """Ids whose bytes start with `pending`, or are a non-empty start of it."""
        lo = bisect.bisect_left(self.sorted_bytes, pending)
        hi = bisect.bisect_left(self.sorted_bytes, _next_prefix(pending)) if pending.rstrip(b"\xff") else len(self.sorted_bytes)
        ids = self.sorted_ids[lo:hi]
        ids += [self.id_of[pending[:k]] for k in range(1, len(pending)) if pending[:k] in self.id_of]
        return ids

    def mask(self, pending: bytes, device: torch.device) -> torch.Tensor:
        """(vocab_rows,) additive mask: 0 where allowed, -inf elsewhere."""
        m = torch.full((self.vocab_rows,), float("-inf"), device=device)
        m[torch.tensor(self.allowed(pending), dtype=torch.long, device=device)] = 0.0
        return m


def _next_prefix(b: bytes) -> bytes:
    """The smallest byte string greater than every string that starts with b."""
    b = b.rstrip(b"\xff")
    return b[:-1] + bytes([b[-1] + 1])


def remaining(pending: bytes, token: bytes) -> bytes:
    """What of `pending` is still to be retyped after emitting `token`."""
    return pending[len(token) :] if len(token) < len(pending) else b""
