"""Decode several continuations of one prefilled prompt as a batch, with stop rules.

Each row keeps its token ids, the model's log-probability of them and the bytes it has
produced. A row ends on a special token, on its stop rule, on a token loop, or at the token
budget. Greedy, temperature/top-k/top-p sampling and beam search share that bookkeeping.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import inf

import torch

from codecomplete.engine.context_ngrams import NextTokenCache, mix
from codecomplete.engine.healing import TokenHealer, remaining
from codecomplete.engine.model import GPT, KVCache
from codecomplete.engine.tokenizer import Tokenizer


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """(B, V) logits -> scaled logits with the excluded tokens at -inf."""
    logits = logits.float() / max(temperature, 1e-6)
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set whose mass reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class Cancelled(Exception):
    """The request was cancelled between two decoding steps."""


@dataclass(frozen=True)
class DecodeParams:
    n: int = 3
    max_new_tokens: int = 48
    temperature: float = 0.0  # 0: greedy (row i starts from the i-th best first token)
    top_k: int | None = None
    top_p: float | None = None
    num_beams: int = 1  # > 1: beam search
    seed: int | None = 0


@dataclass
class Row:
    ids: list[int] = field(default_factory=list)
    logprob: float = 0.0
    raw: bytearray = field(default_factory=bytearray)
    pending: bytes = b""  # bytes the row must still write: the healed token's, then the required lead
    done: str = ""  # why the row ended: eos, stop, loop, length, deadline
    keep: int | None = None  # characters of text to keep, when a stop rule cut it

    def fork(self) -> Row:
        return Row(list(self.ids), self.logprob, bytearray(self.raw), self.pending, self.done, self.keep)


@dataclass(frozen=True)
class Decoded:
    text: str
    logprob: float  # sum over the row's tokens
    n_tokens: int
    reason: str

    @property
    def score(self) -> float:
        return self.logprob / max(self.n_tokens, 1)


def mean_logprob(row: Row) -> float:
    return row.logprob / max(len(row.ids), 1)


def loop_period(ids: list[int]) -> int | None:
    """Period of a token loop at the end of ids: a 2+-token pattern thrice, or one token 4 times."""
    for p in range(1, 13):
        reps = 4 if p == 1 else 3
        if len(ids) >= p * reps and all(ids[-p * (k + 1) : len(ids) - p * k] == ids[-p:] for k in range(1, reps)):
            return p
    return None


class Decoder:
    def __init__(self, model: GPT, tokenizer: Tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.healer = TokenHealer(tokenizer, model.config.vocab_size)
        self.stop_ids = tokenizer.control_ids
        self.token_bytes = [tokenizer.token_bytes(i) for i in range(tokenizer.vocab_size)]

    # -- per-row bookkeeping -----------------------------------------------------------------
    def text_of(self, row: Row, heal: bytes) -> str:
        return bytes(row.raw[len(heal) :]).decode("utf-8", errors="ignore") if len(row.raw) >= len(heal) else ""

    def push(self, row: Row, token: int, logprob: float, heal: bytes, stop: Callable[[str], int | None]) -> None:
        """Append a token to a live row and decide whether the row is finished."""
        if token in self.stop_ids or token >= len(self.token_bytes):
            row.done = "eos"
            return
        piece = self.token_bytes[token]
        row.ids.append(token)
        row.logprob += logprob
        row.raw += piece
        row.pending = remaining(row.pending, piece)
        if row.pending:
            return
        period = loop_period(row.ids)
        if period is not None:  # keep the text of the first round; the repeats still count in the score
            repeats = period * (3 if period == 1 else 2)
            first = b"".join(self.token_bytes[i] for i in row.ids[: len(row.ids) - repeats])
            row.done, row.keep = "loop", len(first[len(heal) :].decode("utf-8", errors="ignore"))
            return
        cut = stop(self.text_of(row, heal))
        if cut is not None:
            row.done, row.keep = "stop", cut

    def finish(self, row: Row, heal: bytes) -> Decoded:
        text = self.text_of(row, heal)
        if row.keep is not None:
            text = text[: row.keep]
        return Decoded(text, row.logprob, len(row.ids), row.done or "length")

    def masked(self, logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
        """Restrict rows that still owe healed bytes to tokens that retype them."""
        if not any(r.pending for r in rows):
            return logits
        mask = torch.stack([self.healer.mask(r.pending, logits.device) if r.pending else torch.zeros(logits.size(-1), device=logits.device) for r in rows])
        return logits + mask[:, : logits.size(-1)]

    # -- decoding ------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(
        self,
        cache: KVCache,
        logits: torch.Tensor,
        params: DecodeParams,
        heal: bytes,
        stop: Callable[[str], int | None],
        cancel: threading.Event | None = None,
        deadline: float | None = None,
        caches: Sequence[NextTokenCache] = (),
        lead: bytes = b"",
    ) -> list[Decoded]:
        """cache: the prompt prefilled as one row; logits: (1, V) for its last position.

        caches (the prompt's own n-grams, the project's) are mixed into every step's distribution.
        Every row first retypes heal (left out of its text), then writes lead (kept in it).
        """
        if params.num_beams > 1:
            return self._beam(cache, logits, params, heal, stop, cancel, deadline, caches, lead)
        n = params.n
        cache = cache.expand(n)
        logits = logits.float().expand(n, -1)
        rows = [Row(pending=heal + lead) for _ in range(n)]
        gen = torch.Generator(device=logits.device)
        if params.seed is not None:
            gen.manual_seed(params.seed)
        for step in range(params.max_new_tokens):
            self._check(cancel)
            if deadline is not None and time.monotonic() > deadline:
                for r in rows:
                    r.done = r.done or "deadline"
                break
            logits = mix(logits, [r.ids for r in rows], caches)
            scores = self.masked(logits, rows)
            logp = torch.log_softmax(logits, dim=-1)
            if params.temperature <= 0:
                if step == 0:  # n distinct first tokens, each continued greedily
                    top = torch.topk(scores[0], n)
                    nxt = torch.where(torch.isfinite(top.values), top.indices, top.indices[0])
                else:
                    nxt = scores.argmax(-1)
            else:
                probs = filter_logits(scores, params.temperature, params.top_k, params.top_p).softmax(-1)
                nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
            chosen = logp.gather(1, nxt.unsqueeze(1)).squeeze(1).tolist()
            for row, tok, lp in zip(rows, nxt.tolist(), chosen):
                if not row.done:
                    self.push(row, tok, lp, heal, stop)
            if all(r.done for r in rows) or cache.pos >= cache.k.size(3):
                break
            logits, _ = self.model(nxt.unsqueeze(1), cache=cache)
            logits = logits[:, -1].float()
        return [self.finish(r, heal) for r in rows]

    def _beam(self, cache: KVCache, logits: torch.Tensor, params: DecodeParams, heal: bytes, stop: Callable[[str], int | None],
              cancel: threading.Event | None, deadline: float | None, caches: Sequence[NextTokenCache], lead: bytes) -> list[Decoded]:
        """Beam search over length-normalised log-probability; finished beams leave the beam."""
        width, wanted = params.num_beams, max(params.num_beams, params.n)
        beams, finished = [Row(pending=heal + lead)], []
        logits = logits.float()
        for _ in range(params.max_new_tokens):
            self._check(cancel)
            if deadline is not None and time.monotonic() > deadline:
                for b in beams:
                    b.done = "deadline"
                break
            logits = mix(logits, [b.ids for b in beams], caches)
            logp = torch.log_softmax(self.masked(logits, beams), dim=-1)  # (beams, V)
            total = logp + torch.tensor([b.logprob for b in beams], device=logp.device).unsqueeze(1)
            top = torch.topk(total.flatten(), min(2 * width, total.numel()))
            survivors, parents, tokens = [], [], []
            for flat, value in zip(top.indices.tolist(), top.values.tolist()):
                if value == float("-inf"):
                    break
                parent, tok = divmod(flat, logp.size(1))
                row = beams[parent].fork()
                self.push(row, tok, value - beams[parent].logprob, heal, stop)
                if row.done:
                    finished.append(row)
                elif len(survivors) < width:
                    survivors.append(row)
                    parents.append(parent)
                    tokens.append(tok)
            beams = survivors  # the beams of the last step are their parents, one token short
            finished = sorted(finished, key=mean_logprob, reverse=True)[:wanted]
            # A live beam's mean can still rise, so the search goes on while one beats a kept answer.
            settled = len(finished) == wanted and max(map(mean_logprob, beams), default=-inf) <= mean_logprob(finished[-1])
            if not survivors or settled or cache.pos >= cache.k.size(3):
                break
            index = torch.tensor(parents, device=logits.device)
            cache = cache.select(index)
            logits, _ = self.model(torch.tensor(tokens, device=logits.device).unsqueeze(1), cache=cache)
            logits = logits[:, -1].float()
        # Unfinished beams are answers only when the search ran out of tokens or time.
        live = [] if len(finished) == wanted else beams
        return [self.finish(r, heal) for r in finished + live]

    @staticmethod
    def _check(cancel: threading.Event | None) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled
