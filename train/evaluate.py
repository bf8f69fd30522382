"""Evaluate a checkpoint on held-out code: language modelling, line and body completion.

Cases are drawn from documents the model never trained on (the validation split of a prepared
folder, or any other corpus), deterministically from a seed, and every completer (the model,
the n-gram baseline) answers the same cases through the same `complete` interface.
"""
from __future__ import annotations

import ast
import math
import random
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from codecomplete.engine.completion import Candidate, EngineStats
from codecomplete.engine.copy_index import CopyIndex
from codecomplete.engine.model import GPT
from codecomplete.engine.repo_context import RepoContext, RepoContextConfig
from codecomplete.engine.tokenizer import Tokenizer
from codecomplete.train.metrics import edit_similarity, exact_match, first_lines, is_degenerate, percentile
from codecomplete.train.prepare import read_meta

Progress = Callable[[int], None]


class Completer(Protocol):
    tokenizer: Tokenizer
    stats: EngineStats

    def complete(self, prefix: str, suffix: str = "", **kw: Any) -> list[Candidate]: ...

    def clear_cache(self) -> None: ...


# -- documents ---------------------------------------------------------------------------------
def split_documents(data: Path, split: str, tokenizer: Tokenizer) -> list[str]:
    """The documents of one split of a prepared folder, decoded back to text."""
    meta = read_meta(data)
    shards = [np.fromfile(data / s["file"], dtype=meta["dtype"]) for s in meta["splits"][split]["shards"]]
    ids = np.concatenate(shards) if shards else np.empty(0, dtype=np.int64)
    cuts = np.flatnonzero(ids == tokenizer.eot_id)
    return [tokenizer.decode(ids[a + 1 : b].tolist()) for a, b in zip(np.r_[-1, cuts[:-1]], cuts)]


# -- cases -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LineCase:
    """Complete the rest of a line: kind 'mid' (cursor at a token boundary) or 'start' (after the indentation)."""

    kind: str
    prefix: str
    suffix: str
    target: str
    line_prefix: str  # the cursor line's text before the cursor
    prefix_tokens: int  # tokens of the line's content before the cursor
    doc: int = -1  # index of the document it comes from


@dataclass(frozen=True)
class BodyCase:
    """Complete a function body from its signature and docstring."""

    prefix: str
    header: str  # the def line(s) and docstring, to check that the finished function parses
    indent: str
    target: str  # the body as written
    doc: int = -1


def line_cases(docs: list[str], tokenizer: Tokenizer, count: int, seed: int) -> list[LineCase]:
    """count cases from random lines of random documents, alternating 'mid' and 'start'.

    Two lines a document while there are enough documents, so no single file dominates.
    """
    rng, cases = random.Random(seed), []
    per_doc = max(2, -(-2 * count // max(len(docs), 1)))
    for d in rng.sample(range(len(docs)), len(docs)):
        doc = docs[d]
        starts = [0, *(i + 1 for i, c in enumerate(doc) if c == "\n")]
        lines = [(s, doc[s : doc.find("\n", s) if doc.find("\n", s) >= 0 else len(doc)]) for s in starts]
        lines = [(s, line) for s, line in lines if len(line.strip()) >= 2 and not line.lstrip().startswith("#")]
        for start, line in rng.sample(lines, min(per_doc, len(lines))):
            indent = len(line) - len(line.lstrip())
            content = line[indent:].rstrip()
            kind = "mid" if len(cases) % 2 == 0 else "start"
            cut = 0
            if kind == "mid":
                _, offsets = tokenizer.encode_with_offsets(content)
                inner = [end for _, end in offsets[:-1] if 0 < end < len(content)]
                if not inner:
                    continue
                cut = rng.choice(inner)
            at = start + indent + cut
            line_end = start + len(line)
            prefix_tokens = len(tokenizer.encode(content[:cut])) if cut else 0
            cases.append(LineCase(kind, doc[:at], doc[line_end:], content[cut:], doc[start:at], prefix_tokens, d))
            if len(cases) == count:
                return cases
    return cases


def body_cases(docs: list[str], count: int, seed: int) -> list[BodyCase]:
    """count functions with 2+ statements, one per document, prompt ending where the body starts."""
    rng, cases = random.Random(seed), []
    for d in rng.sample(range(len(docs)), len(docs)):
        doc = docs[d]
        try:
            tree = ast.parse(doc)
        except (SyntaxError, ValueError):
            continue
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and len(n.body) > 1]
        if not funcs:
            continue
        f = rng.choice(funcs)
        has_doc = isinstance(f.body[0], ast.Expr) and isinstance(getattr(f.body[0], "value", None), ast.Constant)
        first = f.body[1] if has_doc else f.body[0]
        lines = doc.splitlines(keepends=True)
        indent = " " * first.col_offset
        body = "".join(lines[first.lineno - 1 : f.end_lineno])
        cases.append(BodyCase("".join(lines[: first.lineno - 1]) + indent, "".join(lines[f.lineno - 1 : first.lineno - 1]),
                              indent, body[len(indent) :].rstrip(), d))
        if len(cases) == count:
            break
    return cases


def parses(case: BodyCase, completion: str) -> bool:
    try:
        ast.parse(textwrap.dedent(case.header + case.indent + completion))
        return True
    except (SyntaxError, ValueError):
        return False


# -- running -----------------------------------------------------------------------------------
@dataclass
class Scored:
    """One completer's answer to one case."""

    candidates: list[str]
    latency_ms: float
    exact: bool = False
    edit_sim: float = 0.0
    best_exact: bool = False
    best_edit_sim: float = 0.0
    empty: bool = False
    loop: bool = False
    copied: bool = False
    parses: bool | None = None


def _score(texts: list[str], target: str, latency_ms: float) -> Scored:
    top = texts[0] if texts else ""
    return Scored(
        candidates=texts,
        latency_ms=latency_ms,
        exact=exact_match(top, target),
        edit_sim=edit_similarity(top, target),
        best_exact=any(exact_match(t, target) for t in texts),
        best_edit_sim=max((edit_similarity(t, target) for t in texts), default=edit_similarity("", target)),
        empty=not texts,
        loop=bool(texts) and is_degenerate(top),
    )


# Per case: its repository's other files, as complete(..., repo=, path=) takes them; {} for none.
RepoOf = Callable[[int], dict[str, Any]]


def no_repo(doc: int) -> dict[str, Any]:
    return {}


def run_line_cases(completer: Completer, cases: list[LineCase], n: int, index: CopyIndex | None, on_case: Progress | None = None,
                   repo_of: RepoOf = no_repo) -> list[Scored]:
    out = []
    for case in cases:
        completer.clear_cache()  # each case as a freshly opened file
        got = completer.complete(case.prefix, case.suffix, n=n, multiline=False, **repo_of(case.doc))
        texts = [c.text.split("\n")[0] for c in got]
        s = _score(texts, case.target, completer.stats.latency_ms)
        if index is not None and texts:
            s.copied = index.copied(completer.tokenizer.encode(texts[0]), case.line_prefix, texts[0], "")
        out.append(s)
        if on_case:
            on_case(1)
    return out


def run_body_cases(completer: Completer, cases: list[BodyCase], k: int, index: CopyIndex | None, on_case: Progress | None = None,
                   max_lines: int = 12, repo_of: RepoOf = no_repo) -> list[Scored]:
    out = []
    for case in cases:
        completer.clear_cache()
        got = completer.complete(case.prefix, "", n=1, multiline=True, max_new_tokens=128, max_lines=max_lines, **repo_of(case.doc))
        text = got[0].text if got else ""
        s = _score([first_lines(text, k)] if text else [], first_lines(case.target, k), completer.stats.latency_ms)
        s.parses = bool(text) and parses(case, text)
        if index is not None and text:
            s.copied = index.copied(completer.tokenizer.encode(text), case.indent, text, "")
        out.append(s)
        if on_case:
            on_case(1)
    return out


def summarize(scored: list[Scored]) -> dict[str, float]:
    if not scored:
        return {"cases": 0}
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    out = {
        "cases": len(scored),
        "exact_match": mean([s.exact for s in scored]),
        "edit_similarity": mean([s.edit_sim for s in scored]),
        "best_of_n_exact_match": mean([s.best_exact for s in scored]),
        "best_of_n_edit_similarity": mean([s.best_edit_sim for s in scored]),
        "empty": mean([s.empty for s in scored]),
        "loops": mean([s.loop for s in scored]),
        "copied": mean([s.copied for s in scored]),
        "latency_p50_ms": percentile([s.latency_ms for s in scored], 50),
        "latency_p95_ms": percentile([s.latency_ms for s in scored], 95),
    }
    if scored[0].parses is not None:
        out["parses"] = mean([bool(s.parses) for s in scored])
    return out


# -- language modelling ------------------------------------------------------------------------
@torch.no_grad()
def lm_metrics(model: GPT, ids: np.ndarray, n_bytes: int, max_tokens: int, batch_size: int = 8) -> dict[str, float]:
    """Loss, perplexity, bits per byte and next-token accuracy over evenly spaced windows of ids."""
    model.eval()
    T = model.config.block_size
    starts = list(range(0, max(len(ids) - T - 1, 0) + 1, T))
    if len(ids) < T + 1:
        T, starts = len(ids) - 1, [0]
    if T < 1:
        return {}
    keep = max(1, max_tokens // T)
    if len(starts) > keep:
        starts = [starts[round(j * (len(starts) - 1) / max(keep - 1, 1))] for j in range(keep)]
    device = model.transformer.wte.weight.device
    total_loss, correct, count = 0.0, 0, 0
    for i in range(0, len(starts), batch_size):
        rows = torch.from_numpy(np.stack([np.asarray(ids[s : s + T + 1], dtype=np.int64) for s in starts[i : i + batch_size]])).to(device)
        logits, _ = model(rows[:, :-1])
        logits, targets = logits.float(), rows[:, 1:]
        total_loss += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum").item()
        correct += (logits.argmax(-1) == targets).sum().item()
        count += targets.numel()
    loss = total_loss / count
    bytes_per_token = n_bytes / max(len(ids), 1)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "bits_per_byte": loss / math.log(2) / bytes_per_token,
        "next_token_accuracy": correct / count,
        "tokens": count,
    }


def encode_documents(tokenizer: Tokenizer, docs: Iterable[str]) -> tuple[np.ndarray, int]:
    """Documents as one stream, each followed by end-of-text, and their size in UTF-8 bytes."""
    ids: list[int] = []
    n_bytes = 0
    for doc in docs:
        ids += tokenizer.encode(doc) + [tokenizer.eot_id]
        n_bytes += len(doc.encode("utf-8", "surrogatepass"))
    return np.asarray(ids, dtype=np.int64), n_bytes


@dataclass
class EvalConfig:
    line_cases: int = 200
    body_cases: int = 40
    n: int = 3  # candidates per line case (best-of-n)
    body_lines: int = 3  # first k lines of a body are scored
    lm_tokens: int = 131_072
    seed: int = 0
    repo_context: bool = False  # also run every system with each case's repository as context


@dataclass
class EvalResult:
    config: dict[str, Any]
    source: dict[str, Any]
    lm: dict[str, float]
    line: dict[str, dict[str, Any]] = field(default_factory=dict)  # system -> summary (+ by kind)
    body: dict[str, dict[str, float]] = field(default_factory=dict)
    cases: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    systems: dict[str, Completer],
    docs: list[str],
    tokenizer: Tokenizer,
    cfg: EvalConfig,
    index: CopyIndex | None = None,
    on_case: Progress | None = None,
    repo_of: dict[str, RepoOf] | None = None,
) -> tuple[dict, dict, dict]:
    """Line and body completion for each system on the same cases: (line, body, per-case records).

    With repo_of (system name -> its contexts, built with its tokenizer), every system also answers
    every case with its repository's other files as context, reported as "NAME + repo".
    """
    lines = line_cases(docs, tokenizer, cfg.line_cases, cfg.seed)
    bodies = body_cases(docs, cfg.body_cases, cfg.seed)
    line_summary, body_summary, records = {}, {}, {"line": [], "body": []}
    line_scores, body_scores = {}, {}
    runs = [(name, completer, no_repo) for name, completer in systems.items()]
    if repo_of is not None:
        runs += [(f"{name} + repo", completer, repo_of[name]) for name, completer in systems.items()]
    for name, completer, context in runs:
        line_scores[name] = run_line_cases(completer, lines, cfg.n, index, on_case, repo_of=context)
        body_scores[name] = run_body_cases(completer, bodies, cfg.body_lines, index, on_case, repo_of=context)
        line_summary[name] = summarize(line_scores[name]) | {
            kind: summarize([s for s, c in zip(line_scores[name], lines) if c.kind == kind]) for kind in ("mid", "start")
        }
        body_summary[name] = summarize(body_scores[name])
    for i, case in enumerate(lines):
        records["line"].append({"kind": case.kind, "prefix_tokens": case.prefix_tokens, "target": case.target,
                                **{name: asdict(scores[i]) for name, scores in line_scores.items()}})
    for i, case in enumerate(bodies):
        records["body"].append({"target": first_lines(case.target, cfg.body_lines), **{name: asdict(scores[i]) for name, scores in body_scores.items()}})
    return line_summary, body_summary, records


def repo_contexts(documents: list[tuple[str, str, str]], tokenizer: Tokenizer, config: RepoContextConfig) -> RepoOf:
    """documents: (repo, path, text). Each case gets every file of its own repository as context
    (its own file is left out by path when the engine queries it)."""
    by_repo: dict[str, RepoContext] = {}
    for repo, path, text in documents:
        by_repo.setdefault(repo, RepoContext(tokenizer, config)).set_file(path, text)
    for context in by_repo.values():
        context.build()

    def repo_of(doc: int) -> dict[str, Any]:
        repo, path, _ = documents[doc]
        return {"repo": by_repo[repo], "path": path}

    return repo_of
