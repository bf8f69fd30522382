"""The n-gram baseline: a token Markov model with backoff, served like the completion engine.

Counts come from the training split of a prepared data folder. For each context length
1..order-1 the table keeps, per hashed context, the `top` most frequent next tokens; a
prediction backs off from the longest context seen (stupid backoff, Brants et al. 2007).
Every evaluation shows it beside the transformer, on the same cases through the same
`complete(prefix, suffix, ...)` interface, so "better than counting" is always measured.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from codecomplete.engine.completion import CONTEXT_WEIGHT, Candidate, EngineStats, project_caches
from codecomplete.engine.context_ngrams import ContextNgrams, NextTokenCache, merged
from codecomplete.engine.decoding import loop_period
from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.healing import TokenHealer, remaining, worth_healing
from codecomplete.engine.prompt import snippet_ids
from codecomplete.engine.repo_context import RepoContext
from codecomplete.engine.stops import StopRule, tidy
from codecomplete.engine.tokenizer import Tokenizer

TABLES_FILE = "ngram.npz"
CONFIG_FILE = "config.json"
BACKOFF = 0.4  # score factor per context token dropped
PROMPT_CHARS = 2000  # of the prefix: the n-grams need the last order-1 tokens, the prompt cache more
SUFFIX_CHARS = 500  # of the suffix, for the prompt cache: about the share the model's prompt gives it
PROMPT_TOKENS = 464  # the default model's prompt budget (512 - 48): the snippets get repo's share of it


@dataclass
class NgramConfig:
    order: int = 4  # tokens per n-gram: the context is order-1 tokens
    top: int = 8  # next tokens kept per context
    min_count: int = 2  # contexts of 2+ tokens seen fewer times are dropped (size)


def context_keys(ids: np.ndarray, length: int) -> np.ndarray:
    """uint64 key of the `length` tokens before each position length..len(ids)-1 (position i: ids[i-length:i])."""
    ids = np.asarray(ids, dtype=np.uint64)
    key = np.full(len(ids) - length, np.uint64(length), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(length):
            key = key * np.uint64(0x100000001B3) ^ ids[j : len(ids) - length + j]
    return key


@dataclass
class _Table:
    keys: np.ndarray  # (K,) sorted uint64
    next_ids: np.ndarray  # (K, top) int32, -1 where fewer were seen
    next_counts: np.ndarray  # (K, top) int32
    totals: np.ndarray  # (K,) int64


def _count(keys: np.ndarray, nxt: np.ndarray, top: int, min_count: int) -> _Table:
    order = np.lexsort((nxt, keys))
    keys, nxt = keys[order], nxt[order]
    new_pair = np.r_[True, (keys[1:] != keys[:-1]) | (nxt[1:] != nxt[:-1])]
    starts = np.flatnonzero(new_pair)
    pair_keys, pair_next = keys[starts], nxt[starts]
    pair_counts = np.diff(np.r_[starts, len(keys)])
    # most frequent first within each context, then the first `top` of each
    order = np.lexsort((-pair_counts, pair_keys))
    pair_keys, pair_next, pair_counts = pair_keys[order], pair_next[order], pair_counts[order]
    group_start = np.flatnonzero(np.r_[True, pair_keys[1:] != pair_keys[:-1]])
    group_of = np.cumsum(np.r_[True, pair_keys[1:] != pair_keys[:-1]]) - 1
    totals = np.add.reduceat(pair_counts, group_start)
    keep_group = totals >= min_count
    rank = np.arange(len(pair_keys)) - group_start[group_of]
    sel = (rank < top) & keep_group[group_of]
    new_index = np.cumsum(keep_group) - 1
    k = int(keep_group.sum())
    next_ids = np.full((k, top), -1, dtype=np.int32)
    next_counts = np.zeros((k, top), dtype=np.int32)
    rows, cols = new_index[group_of[sel]], rank[sel]
    next_ids[rows, cols] = pair_next[sel]
    next_counts[rows, cols] = pair_counts[sel]
    return _Table(pair_keys[group_start][keep_group], next_ids, next_counts, totals[keep_group].astype(np.int64))


class NgramModel:
    def __init__(self, config: NgramConfig, tables: list[_Table], tokenizer: Tokenizer, tokens: int) -> None:
        self.config, self.tables, self.tokenizer, self.tokens = config, tables, tokenizer, tokens

    @classmethod
    def train(cls, ids: np.ndarray, tokenizer: Tokenizer, config: NgramConfig | None = None) -> NgramModel:
        """Count ids (the training split as one stream, documents separated by end-of-text)."""
        config = config or NgramConfig()
        if config.order < 2:
            raise CodecompleteError(f"--order must be at least 2, not {config.order}")
        ids = np.asarray(ids, dtype=np.int64)
        unigram = _count(np.zeros(len(ids), dtype=np.uint64), ids, config.top * 4, 1)
        tables = [unigram]
        for length in range(1, config.order):
            keys = context_keys(ids, length)
            tables.append(_count(keys, ids[length:], config.top, 1 if length == 1 else config.min_count))
        return cls(config, tables, tokenizer, len(ids))

    def save(self, out: Path, data: str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        arrays = {f"{name}_{i}": getattr(t, name) for i, t in enumerate(self.tables) for name in ("keys", "next_ids", "next_counts", "totals")}
        np.savez(out / TABLES_FILE, **arrays)
        self.tokenizer.save(out / "tokenizer.json")
        meta = {"kind": "ngram", **asdict(self.config), "tokens": self.tokens, "data": data, "contexts": [len(t.keys) for t in self.tables]}
        (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> NgramModel:
        try:
            meta = json.loads((path / CONFIG_FILE).read_text())
            with np.load(path / TABLES_FILE) as f:
                tables = [_Table(*(f[f"{name}_{i}"] for name in ("keys", "next_ids", "next_counts", "totals"))) for i in range(meta["order"])]
        except (OSError, KeyError, ValueError) as e:
            raise CodecompleteError(f"{path} is not an n-gram baseline ({type(e).__name__}: {e}); write one with `codecomplete-train baseline DATA --out {path}`") from e
        config = NgramConfig(**{k: meta[k] for k in ("order", "top", "min_count")})
        return cls(config, tables, Tokenizer.from_file(path / "tokenizer.json"), int(meta["tokens"]))

    def next_tokens(self, context: list[int]) -> list[tuple[int, float]]:
        """Candidate next tokens with log-scores, best first, backing off from the longest context."""
        best: dict[int, float] = {}
        for length in range(min(len(context), self.config.order - 1), -1, -1):
            table = self.tables[length]
            key = context_keys(np.asarray(context[-length:] + [0], dtype=np.int64), length)[0] if length else np.uint64(0)
            at = int(np.searchsorted(table.keys, key))
            if at == len(table.keys) or table.keys[at] != key:
                continue
            factor = math.log(BACKOFF) * (self.config.order - 1 - length)
            total = int(table.totals[at])
            for tok, count in zip(table.next_ids[at].tolist(), table.next_counts[at].tolist()):
                if tok >= 0:
                    score = math.log(count / total) + factor
                    if score > best.get(tok, -math.inf):
                        best[tok] = score
        return sorted(best.items(), key=lambda kv: -kv[1])


class NgramCompleter:
    """The n-gram model behind the engine's `complete` interface (greedy, n distinct first tokens)."""

    def __init__(self, model: NgramModel, context_weight: float = CONTEXT_WEIGHT) -> None:
        self.model, self.tokenizer = model, model.tokenizer
        self.context_weight = context_weight  # the engine's prompt n-grams, so the peer gets them too
        self.healer = TokenHealer(self.tokenizer, self.tokenizer.vocab_size)
        self.special = set(self.tokenizer.special_ids.values())
        self.stats = EngineStats()

    @classmethod
    def from_path(cls, path: str | Path) -> NgramCompleter:
        return cls(NgramModel.load(Path(path)))

    def clear_cache(self) -> None:
        pass  # nothing is cached between requests

    def complete(self, prefix: str, suffix: str = "", *, n: int = 3, max_new_tokens: int = 48, multiline: bool = False,
                 max_lines: int = 8, repo: RepoContext | None = None, path: str | None = None, **_: object) -> list[Candidate]:
        """As CompletionEngine.complete, with the same help: the prompt's n-grams, and with repo, the
        same snippets (copied from, as the model's prompt holds them) and the project's n-grams."""
        t0 = time.perf_counter()
        ids = self.tokenizer.encode(prefix[-PROMPT_CHARS:]) if prefix else []
        heal = self.tokenizer.token_bytes(ids.pop()) if ids and worth_healing(self.tokenizer.token_bytes(ids[-1])) else b""
        stop = StopRule.at_cursor(prefix, multiline, max_lines)
        context = [self.tokenizer.eot_id] * (len(prefix) <= PROMPT_CHARS) + ids
        snippets = repo.snippets(path, prefix) if repo is not None else []
        budget = int(PROMPT_TOKENS * repo.config.snippet_share) if repo is not None else 0
        shown = snippet_ids(self.tokenizer, snippets, budget, "file_sep" in self.tokenizer.special_ids) if snippets else []
        around = ContextNgrams([*self.tokenizer.encode(suffix[:SUFFIX_CHARS]), self.tokenizer.eot_id, *shown, *context],
                               frozenset(self.special), self.context_weight)
        caches: list[NextTokenCache] = [around, *project_caches(repo, snippets, context, path, multiline)]
        firsts = self._allowed(self._next_tokens(context, [], caches), heal)[:n]
        best: dict[str, Candidate] = {}
        for first, score in firsts:
            text, logprob, steps, reason = self._continue(context, first, score, heal, stop, max_new_tokens, caches)
            text = tidy(text, suffix)
            if text and (text not in best or logprob / steps > best[text].score):
                best[text] = Candidate(text, logprob / steps, reason)
        self.stats = EngineStats(prompt_tokens=len(context), latency_ms=(time.perf_counter() - t0) * 1000)
        return sorted(best.values(), key=lambda c: -c.score)[:n]

    def _allowed(self, scored: list[tuple[int, float]], pending: bytes) -> list[tuple[int, float]]:
        """Ordinary tokens that retype the healed bytes still pending (all of them when none are)."""
        scored = [(t, s) for t, s in scored if t not in self.special]
        if not pending:
            return scored
        ok = set(self.healer.allowed(pending))
        kept = [(t, s) for t, s in scored if t in ok]
        if not kept and pending in self.healer.id_of:  # nothing seen fits: retype the token itself
            kept = [(self.healer.id_of[pending], 0.0)]
        return kept

    def _next_tokens(self, context: list[int], out: list[int], caches: list[NextTokenCache]) -> list[tuple[int, float]]:
        """The n-gram's next tokens, mixed with the prompt's own n-grams as the engine mixes them."""
        scored = self.model.next_tokens(context + out)
        if (found := merged(caches, out)) is None:
            return scored
        lam, cached = found
        norm = sum(math.exp(s) for _, s in scored) or 1.0
        probs = {t: (1 - lam) * math.exp(s) / norm for t, s in scored}
        for t, q in cached.items():
            probs[t] = probs.get(t, 0.0) + q
        return sorted(((t, math.log(p)) for t, p in probs.items()), key=lambda kv: -kv[1])

    def _continue(self, context: list[int], token: int, score: float, heal: bytes, stop: StopRule, budget: int,
                  caches: list[NextTokenCache]) -> tuple[str, float, int, str]:
        out, raw, pending, logprob = [], bytearray(), heal, 0.0
        for _ in range(budget):
            out.append(token)
            logprob += score
            raw += self.tokenizer.token_bytes(token)
            pending = remaining(pending, self.tokenizer.token_bytes(token))
            text = raw[len(heal) :].decode("utf-8", errors="ignore") if not pending else ""
            cut = stop.cut(text) if not pending else None
            if cut is not None:
                return text[:cut], logprob, len(out), "stop"
            if loop_period(out):
                return text, logprob, len(out), "loop"
            scored = self._next_tokens(context, out, caches)
            if not pending and (not scored or scored[0][0] in self.special):
                return text, logprob, len(out), "eos"
            nxt = self._allowed(scored, pending)
            if not nxt:
                return text, logprob, len(out), "eos"
            token, score = nxt[0]
        return raw[len(heal) :].decode("utf-8", errors="ignore"), logprob, len(out), "length"
