"""The completion engine: text around the cursor in, ranked candidates out.

prefix/suffix -> prompt (FIM, token healing) -> prefill, reusing cached keys/values of an
earlier prompt it extends -> batched decoding with stop rules -> tidy, merge, floor, rank.
Not thread-safe: serve it from one worker thread.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from codecomplete.engine.checkpoint import load_checkpoint
from codecomplete.engine.context_ngrams import ContextNgrams, NextTokenCache
from codecomplete.engine.copy_index import CopyIndex
from codecomplete.engine.decoding import DRAFT_TOKENS, Cancelled, Decoded, DecodeParams, Decoder
from codecomplete.engine.device import pick_device
from codecomplete.engine.hf import SERVED_CONTEXT
from codecomplete.engine.model import GPT, KVCache
from codecomplete.engine.project_ngrams import ProjectCache
from codecomplete.engine.prompt import build_prompt, snippet_ids
from codecomplete.engine.repo_context import RepoContext
from codecomplete.engine.retrieval import Snippet
from codecomplete.engine.stops import StopRule, complete_lines, tidy
from codecomplete.engine.tokenizer import Tokenizer

__all__ = ["Cancelled", "Candidate", "CompletionEngine"]

CONTEXT_WEIGHT = 0.5  # the most the prompt's own n-grams may weigh against the model
DTYPES = {"cuda": torch.bfloat16, "mps": torch.float16, "cpu": torch.float32}


@dataclass(frozen=True)
class Candidate:
    text: str  # to insert at the cursor
    score: float  # mean log-probability per token: 0 is certain, lower is less sure
    reason: str = ""  # why decoding stopped (stop, eos, length, loop, deadline)


@dataclass
class _Prefill:
    ids: list[int]
    cache: KVCache
    logits: torch.Tensor  # (1, V) after the last prompt token


@dataclass
class _Answer:
    prefix: str
    suffix: str
    key: tuple
    candidates: list[Candidate]


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class EngineStats:
    prompt_tokens: int = 0
    reused_tokens: int = 0
    generated_tokens: int = 0
    latency_ms: float = 0.0
    from_earlier_answer: bool = False
    reasons: dict[str, int] = field(default_factory=dict)


def project_caches(repo: RepoContext | None, snippets: list[Snippet], prompt_ids: list[int], path: str | None,
                   multiline: bool) -> list[NextTokenCache]:
    """The project's n-grams and the retrieved snippets' own, to mix into each step of a single
    line (the n-gram baseline gets the same)."""
    snap = repo.snapshot if repo is not None else None
    if snap is None or multiline:
        # Phrases copied into a block break its syntax. On the tuning corpus, function bodies
        # parsed 68% with the project's n-grams, 77% without, 79% with no repository context; of
        # 160 bodies, 126 parsed with the snippets' n-grams at half weight, 131 without them, 130
        # with no repository context (edit similarity 0.409, 0.401, 0.390).
        return []
    caches: list[NextTokenCache] = []
    if snap.ngrams is not None and repo.config.project_ngrams:
        caches.append(ProjectCache(snap.ngrams, prompt_ids, repo.config.ngram_weight, path))
    if snippets:
        ids = repo.tokenizer.encode("".join(s.text for s in snippets))
        caches.append(ContextNgrams(ids, frozenset(repo.tokenizer.special_ids.values()), repo.config.snippet_weight, prompt_ids))
    return caches


class CompletionEngine:
    def __init__(self, model: GPT, tokenizer: Tokenizer, *, fim: bool = True, min_score: float = -3.0, cache_entries: int = 4,
                 copy_index: CopyIndex | None = None, context_weight: float = CONTEXT_WEIGHT, draft_tokens: int = DRAFT_TOKENS) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.context_weight = context_weight  # 0: the model alone; see engine/context_ngrams.py
        self.draft_tokens = draft_tokens  # verified per forward pass (engine/decoding.py); 0: a token per pass
        # Snippets as files of their own, where the tokenizer has a separator: what a model trained
        # with repository-level examples reads, and what the default model, never trained so,
        # used best too (tune set exact match 28.5% against 27.5% for the same snippets as comments).
        self.file_sep = "file_sep" in tokenizer.special_ids
        self.copy_index = copy_index  # when set, suggestions that copy training code are dropped
        self.decoder = Decoder(model, tokenizer)
        self.fim, self.min_score, self.cache_entries = fim, min_score, cache_entries
        self.device = model.transformer.wte.weight.device
        self._prefills: OrderedDict[int, _Prefill] = OrderedDict()  # least recently used first
        self._answer: _Answer | None = None
        self._start_hint = 0
        self.stats = EngineStats()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", threads: int | None = None, max_context: int | None = None,
                        **kw) -> CompletionEngine:
        dev = pick_device(device)
        if threads and dev.type == "cpu":
            torch.set_num_threads(threads)
        ckpt = load_checkpoint(path, dev, DTYPES[dev.type], max_context or SERVED_CONTEXT[dev.type])
        fim = float(ckpt.provenance.get("fim_rate", 0.5)) > 0  # older runs always trained with FIM
        return cls(ckpt.model, ckpt.tokenizer, fim=fim, **{**ckpt.completion, **kw})

    # -- public ------------------------------------------------------------------------------
    def complete(
        self,
        prefix: str,
        suffix: str = "",
        *,
        n: int = 3,
        max_new_tokens: int = 48,
        multiline: bool = False,
        temperature: float = 0.0,
        top_p: float | None = None,
        top_k: int | None = None,
        num_beams: int = 1,
        max_lines: int | None = 8,
        seed: int | None = 0,
        cancel: threading.Event | None = None,
        deadline: float | None = None,
        repo: RepoContext | None = None,
        path: str | None = None,
    ) -> list[Candidate]:
        """Up to n ranked candidates to insert at the cursor; [] when none is confident enough.

        repo: the project's other files (snippets in the prompt, n-grams in the mix); path names
        this document in it, so that its copy there is left out. Raises Cancelled when cancel is
        set; at the deadline (time.monotonic()) it returns what it has. CRLF documents get CRLF
        completions.
        """
        t0 = time.perf_counter()
        crlf = "\r\n" in prefix or "\r\n" in suffix
        prefix, suffix = prefix.replace("\r\n", "\n"), suffix.replace("\r\n", "\n")
        context = id(repo.snapshot) if repo is not None else None  # a new index may change the answer
        key = (n, max_new_tokens, multiline, temperature, top_p, top_k, num_beams, max_lines, seed, context, path)
        self.stats = EngineStats()
        reused = self._from_earlier_answer(prefix, suffix, key)
        if reused is not None:
            self.stats.from_earlier_answer = True
            candidates = reused
        else:
            params = DecodeParams(n=n, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, num_beams=num_beams, seed=seed,
                                  draft_tokens=self.draft_tokens)
            stop = StopRule.at_cursor(prefix, multiline, max_lines)
            decoded = self._decode(prefix, suffix, params, stop, cancel, deadline, repo, path)
            candidates = self._rank(decoded, suffix, n)
            if "deadline" not in self.stats.reasons:  # an answer cut short is not one to keep serving
                self._answer = _Answer(prefix, suffix, key, candidates)
        if self.copy_index is not None:
            candidates = [c for c in candidates if not self._copies_training_code(prefix, suffix, c.text)]
        self.stats.latency_ms = (time.perf_counter() - t0) * 1000
        if crlf:
            return [Candidate(c.text.replace("\n", "\r\n"), c.score, c.reason) for c in candidates]
        return candidates

    def clear_cache(self) -> None:
        """Forget every earlier request: the next one is answered as by a new engine."""
        self._prefills.clear()
        self._answer = None
        self._start_hint = 0

    # -- steps -------------------------------------------------------------------------------
    def _copies_training_code(self, prefix: str, suffix: str, text: str) -> bool:
        assert self.copy_index is not None
        before, after = prefix.rsplit("\n", 1)[-1], suffix.split("\n", 1)[0]
        return self.copy_index.copied(self.tokenizer.encode(text), before, text, after)

    def _from_earlier_answer(self, prefix: str, suffix: str, key: tuple) -> list[Candidate] | None:
        """When the user typed the start of a suggestion, the rest of it is still the answer."""
        a = self._answer
        if a is None or a.key != key or a.suffix != suffix or not prefix.startswith(a.prefix):
            return None
        typed = prefix[len(a.prefix) :]
        rest = [Candidate(c.text[len(typed) :], c.score, c.reason) for c in a.candidates if c.text.startswith(typed) and len(c.text) > len(typed)]
        return rest or None

    def _decode(self, prefix: str, suffix: str, params: DecodeParams, stop: StopRule, cancel: threading.Event | None,
                deadline: float | None, repo: RepoContext | None, path: str | None) -> list[Decoded]:
        # A small model's context is shared: at least half of it stays for the prompt.
        block = self.model.config.block_size
        if params.max_new_tokens > block // 2:
            params = dataclasses.replace(params, max_new_tokens=block // 2)
        budget = block - params.max_new_tokens
        snippets = repo.snippets(path, prefix) if repo is not None else []
        context = snippet_ids(self.tokenizer, snippets, int(budget * repo.config.snippet_share), self.file_sep) if snippets else []
        prompt = build_prompt(self.tokenizer, prefix, suffix, budget, self.fim, self._start_hint, context, self.file_sep)
        self._start_hint = prompt.prefix_start
        entry = self._prefill(prompt.ids)
        caches = [ContextNgrams(prompt.ids, self.decoder.stop_ids, self.context_weight), *project_caches(repo, snippets, prompt.ids, path, stop.multiline)]
        if self._answer is not None:  # the previous suggestion: drafts only (weight 0 is never mixed in)
            earlier = [t for c in self._answer.candidates for t in (*self.tokenizer.encode(c.text), self.tokenizer.eot_id)]
            caches.append(ContextNgrams(earlier, self.decoder.stop_ids, 0.0, prompt.ids))
        try:
            decoded = self.decoder.decode(entry.cache, entry.logits, params, prompt.heal, stop.cut, cancel, deadline, caches, stop.lead.encode())
        except Cancelled:
            self._prefills.pop(id(entry), None)  # a cancelled request leaves nothing behind
            raise
        if stop.multiline:  # a block cut short (a loop, the token budget, the line limit) keeps what stands on its own
            decoded = [dataclasses.replace(d, text=complete_lines(d.text, whole=d.reason == "stop"))
                       if d.reason in ("loop", "length", "stop") else d for d in decoded]
        self.stats.generated_tokens = sum(d.n_tokens for d in decoded)
        for d in decoded:
            self.stats.reasons[d.reason] = self.stats.reasons.get(d.reason, 0) + 1
        return decoded

    @torch.inference_mode()
    def _prefill(self, ids: list[int]) -> _Prefill:
        """Keys/values for ids, extending the cached prompt that shares the longest start."""
        best, shared = None, 0
        for entry in self._prefills.values():
            k = common_prefix_len(entry.ids, ids)
            if k > shared:
                best, shared = entry, k
        if best is not None and shared == len(ids) == len(best.ids):
            entry = best
        else:
            # Extend an entry only when most of it is shared; a mere common start (another file
            # with the same first token) would throw that file's cache away.
            if best is not None and shared >= max(16, len(best.ids) // 2):
                entry = best
                shared = min(shared, len(ids) - 1)  # recompute at least the last token for its logits
                entry.cache.truncate(shared)
            else:
                if len(self._prefills) >= self.cache_entries:
                    self._prefills.popitem(last=False)
                entry = _Prefill([], self.model.new_cache(1), torch.empty(0))
                shared = 0
            logits, _ = self.model(torch.tensor([ids[shared:]], device=self.device), cache=entry.cache, last_only=True)
            entry.ids, entry.logits = list(ids), logits[:, -1]
        self._prefills[id(entry)] = entry
        self._prefills.move_to_end(id(entry))
        self.stats.prompt_tokens, self.stats.reused_tokens = len(ids), shared
        return entry

    def _rank(self, decoded: list[Decoded], suffix: str, n: int) -> list[Candidate]:
        best: dict[str, Candidate] = {}
        for d in decoded:
            text = tidy(d.text, suffix)
            if not text or d.score < self.min_score:
                continue
            if text not in best or d.score > best[text].score:  # identical candidates merge
                best[text] = Candidate(text, d.score, d.reason)
        return sorted(best.values(), key=lambda c: -c.score)[:n]
