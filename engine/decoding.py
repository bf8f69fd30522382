"""Decode several continuations of one prefilled prompt as a batch, with stop rules.

Each row keeps its token ids, the model's log-probability of them and the bytes it has
produced. A row ends on a special token, on its stop rule, on a token loop, or at the token
budget. Greedy, temperature/top-k/top-p sampling and beam search share that bookkeeping.

Greedy and sampled rows verify drafts (prompt lookup decoding, as Hugging Face's
`prompt_lookup_num_tokens` and vLLM's n-gram speculator): where the latest tokens occurred
before, in the prompt, the project or the previous suggestion, the tokens that followed them
there are fed with the row's next token, and one forward pass checks them all.
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


def sample_with_draft(probs: torch.Tensor, drafts: list[int | None], gen: torch.Generator) -> torch.Tensor:
    """One token per row of probs (rows, V), distributed as probs whatever the draft.

    A row's draft token d (None: no draft) is kept with probability p(d); otherwise the token is
    drawn from p without d. That is speculative sampling (Leviathan et al., 2023) for a draft
    that proposes d for certain: P(d) = p(d), and P(t) = (1 - p(d)) p(t) / (1 - p(d)) = p(t).
    """
    drafted = [i for i, d in enumerate(drafts) if d is not None]
    rows = torch.tensor(drafted, dtype=torch.long, device=probs.device)
    d = torch.tensor([drafts[i] for i in drafted], dtype=torch.long, device=probs.device)
    p_d = probs[rows, d]
    keep = torch.rand(len(drafted), generator=gen, device=probs.device) < p_d
    rest = probs.clone()
    rest[rows, d] = torch.where(keep, p_d, 0.0)  # a kept draft may hold all the mass; its draw is unused
    nxt = torch.multinomial(rest, 1, generator=gen).squeeze(-1)
    nxt[rows] = torch.where(keep, d, nxt[rows])
    return nxt


class Cancelled(Exception):
    """The request was cancelled between two decoding steps."""


DRAFT_TOKENS = 8


@dataclass(frozen=True)
class DecodeParams:
    n: int = 3
    max_new_tokens: int = 48
    temperature: float = 0.0  # 0: greedy (row i starts from the i-th best first token)
    top_k: int | None = None
    top_p: float | None = None
    num_beams: int = 1  # > 1: beam search
    seed: int | None = 0
    draft_tokens: int = DRAFT_TOKENS  # tokens of a draft verified per forward pass (0: one token per pass)


DRAFT_ORDER = 2  # tokens a cache must match before its guess is worth a place in the pass


@dataclass
class DraftStats:
    """What the last decode drafted: the share of its tokens that came from drafts."""

    passes: int = 0  # forward passes after the prompt's
    drafted: int = 0  # draft tokens fed
    accepted: int = 0  # draft tokens kept


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
        self.stats = DraftStats()

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
    def choose(self, logits: torch.Tensor, rows: list[Row], drafts: list[int | None], params: DecodeParams,
               caches: Sequence[NextTokenCache], gen: torch.Generator, first: bool) -> tuple[list[int], list[float]]:
        """Each row's next token and its log-probability, from (rows, V) logits for that position.

        A row's draft token (None: no draft) is what a greedy choice is compared with; sampling
        keeps it with its probability and otherwise draws from the rest (sample_with_draft).
        """
        logits = mix(logits, [r.ids for r in rows], caches)
        scores = self.masked(logits, rows)
        logp = torch.log_softmax(logits, dim=-1)
        if params.temperature <= 0:
            if first:  # n distinct first tokens, each continued greedily
                top = torch.topk(scores[0], len(rows))
                nxt = torch.where(torch.isfinite(top.values), top.indices, top.indices[0])
            else:
                nxt = scores.argmax(-1)
        else:
            probs = filter_logits(scores, params.temperature, params.top_k, params.top_p).softmax(-1)
            nxt = sample_with_draft(probs, drafts, gen)
        return nxt.tolist(), logp.gather(1, nxt.unsqueeze(1)).squeeze(1).tolist()

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

        caches (the prompt's own n-grams, the project's) are mixed into every step's distribution,
        and propose drafts: the tokens that followed the latest ones where they occurred before.
        A forward pass feeds each row's decided tokens and its draft; the row keeps its choices
        while they agree with the draft, so greedy rows come out as one token per pass would give
        them, and sampled rows with the same distribution. Every row first retypes heal (left out
        of its text), then writes lead (kept in it).
        """
        if params.num_beams > 1:
            return self._beam(cache, logits, params, heal, stop, cancel, deadline, caches, lead)
        n, start = params.n, cache.pos
        cache = cache.expand(n)
        limit = min(params.max_new_tokens, cache.k.size(3) - start + 1)  # tokens a row may have
        rows = [Row(pending=heal + lead) for _ in range(n)]
        gen = torch.Generator(device=logits.device)
        if params.seed is not None:
            gen.manual_seed(params.seed)
        self.stats = DraftStats()
        logits = logits.float()  # (positions, V) that rows may read; before any pass, each row the prompt's
        first, drafts = [0] * n, [[] for _ in range(n)]  # where each row's positions start in logits; its draft
        step0 = True
        while True:
            self._check(cancel)
            live = [i for i, r in enumerate(rows) if not r.done and len(r.ids) < limit]
            if deadline is not None and time.monotonic() > deadline:
                for i in live:
                    rows[i].done = "deadline"
                break
            # Round j decides each row's token after j of its draft tokens, while the choices agree.
            going, j = live, 0
            while going:
                guess = [drafts[i][j] if j < len(drafts[i]) else None for i in going]
                here = logits[[first[i] + j for i in going]]
                tokens, logps = self.choose(here, [rows[i] for i in going], guess, params, caches, gen, step0)
                step0 = False
                agree = []
                for i, g, tok, lp in zip(going, guess, tokens, logps):
                    self.push(rows[i], tok, lp, heal, stop)
                    if tok == g:
                        self.stats.accepted += 1
                        if not rows[i].done and len(rows[i].ids) < limit:
                            agree.append(i)
                going, j = agree, j + 1
            live = [i for i, r in enumerate(rows) if not r.done and len(r.ids) < limit]
            if not live:
                break
            # Every live row's tokens but its last are right in the cache up to `valid`; beyond it
            # a row feeds its decided tokens again, then its draft.
            valid = min(len(rows[i].ids) for i in live) - 1
            cache.truncate(start + valid)
            drafts = [self.draft(rows[i].ids, min(params.draft_tokens, limit - len(rows[i].ids) - 1), caches) if i in live else []
                      for i in range(n)]
            feed = [rows[i].ids[valid:] + drafts[i] if i in live else [] for i in range(n)]
            width = max(map(len, feed))
            self.stats.passes += 1
            self.stats.drafted += sum(map(len, drafts))
            x = torch.tensor([f + [0] * (width - len(f)) for f in feed], device=logits.device)  # finished rows feed padding
            states = self.model.hidden(x, cache=cache)  # (n, width, C)
            # Only what a row may read goes through the vocabulary projection: the positions of its
            # last decided token and of its draft, one run per row from logits[first[i]] on.
            batch, pos = [], []
            for i in live:
                first[i], last = len(batch), len(rows[i].ids) - 1 - valid
                batch += [i] * (len(drafts[i]) + 1)
                pos += range(last, last + len(drafts[i]) + 1)
            logits = self.model.head(states[batch, pos]).float()
        return [self.finish(r, heal) for r in rows]

    @staticmethod
    def draft(ids: list[int], k: int, caches: Sequence[NextTokenCache]) -> list[int]:
        """Up to k tokens from the first cache that matched at least DRAFT_ORDER of the latest tokens."""
        for c in caches if k > 0 else ():
            order, run = c.draft(ids, k)
            if order >= DRAFT_ORDER and run:
                return run
        return []

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
