"""Inference and model loading off the event loop.

One inference thread runs the engine (it is not thread-safe); a second thread loads and warms up
a new model while the first keeps serving the old one, and the swap is one assignment on the
event loop. Every request carries a threading.Event that the decoder checks between tokens: a
$/cancelRequest sets it, and so does a newer request for the same document and kind (Neovim does
not cancel the automatic requests it no longer wants).

torch is imported inside the threads, on first load, so `initialize` is answered at once.
"""
from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codecomplete.engine.completion import Candidate, CompletionEngine
    from codecomplete.engine.copy_index import CopyIndex
    from codecomplete.engine.repo_context import RepoContext

WARMUP_PROMPT = "import os\n\n\ndef main():\n    "


class Superseded(Exception):
    """A newer request for the same document took this one's place."""


@dataclass(frozen=True)
class Request:
    prefix: str
    suffix: str
    n: int
    max_new_tokens: int
    multiline: bool
    temperature: float
    top_p: float | None
    timeout_s: float
    repo: RepoContext | None = None  # the document's workspace folder, as last indexed
    path: str | None = None  # the document's file path: its own copy in repo is left out


@dataclass(frozen=True)
class Answer:
    candidates: list[Candidate]
    engine: dict[str, Any]  # engine.stats of this request (latency_ms, prompt/reused tokens, ...)


@dataclass(frozen=True)
class ModelInfo:
    checkpoint: str
    device: str
    params: int
    config: dict[str, Any]
    load_ms: float


def _load(path: Path, device: str, threads: int, min_score: float) -> tuple[CompletionEngine, ModelInfo]:
    from codecomplete.engine.completion import CompletionEngine

    t0 = time.perf_counter()
    engine = CompletionEngine.from_checkpoint(path, device, threads or None, min_score=min_score)
    engine.complete(WARMUP_PROMPT, "", n=1, max_new_tokens=4)  # first calls allocate and compile
    engine.clear_cache()
    model = engine.model
    info = ModelInfo(str(path), str(engine.device), model.num_params(), model.config.to_dict(),
                     (time.perf_counter() - t0) * 1000)
    return engine, info


def _complete(engine: CompletionEngine, r: Request, cancel: threading.Event) -> Answer:
    from codecomplete.engine.completion import Cancelled

    if cancel.is_set():  # superseded or cancelled while it waited in the queue
        raise Cancelled
    candidates = engine.complete(r.prefix, r.suffix, n=r.n, max_new_tokens=r.max_new_tokens,
                                 multiline=r.multiline, temperature=r.temperature, top_p=r.top_p,
                                 cancel=cancel, deadline=time.monotonic() + r.timeout_s, repo=r.repo, path=r.path)
    return Answer(candidates, dataclasses.asdict(engine.stats))


class Worker:
    def __init__(self) -> None:
        self.engine: CompletionEngine | None = None
        self.model: ModelInfo | None = None
        self.loading: str | None = None  # the checkpoint being loaded, if any
        self.min_score = -3.0
        self.copy_index: CopyIndex | None = None
        self._infer = ThreadPoolExecutor(1, thread_name_prefix="codecomplete-infer")
        self._load = ThreadPoolExecutor(1, thread_name_prefix="codecomplete-load")
        self._live: dict[Hashable, threading.Event] = {}

    async def complete(self, key: Hashable, request: Request) -> Answer:
        """Raises Superseded, or CancelledError when the client cancelled."""
        engine = self.engine
        if engine is None:
            return Answer([], {})
        cancel = threading.Event()
        if (older := self._live.get(key)) is not None:
            older.set()
        self._live[key] = cancel
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._infer, _complete, engine, request, cancel)
        except asyncio.CancelledError:
            cancel.set()  # $/cancelRequest: the decoder stops at its next token
            raise
        except Exception as e:
            from codecomplete.engine.decoding import Cancelled  # loaded already: an engine exists

            if isinstance(e, Cancelled):
                raise Superseded from e
            raise
        finally:
            if self._live.get(key) is cancel:
                del self._live[key]

    async def load(self, path: Path, device: str, threads: int) -> ModelInfo:
        """Load and warm up a model, then swap it in; on failure the old one stays. Raises."""
        self.loading = str(path)
        try:
            engine, info = await asyncio.get_running_loop().run_in_executor(
                self._load, _load, path, device, threads, self.min_score)
        finally:
            if self.loading == str(path):
                self.loading = None
        engine.min_score = self.min_score  # it may have changed during the load
        engine.copy_index = self.copy_index
        self.engine, self.model = engine, info  # requests in flight finish on the old engine
        return info

    def set_min_score(self, value: float) -> None:
        self.min_score = value
        if self.engine is not None:
            self.engine.min_score = value

    def set_copy_index(self, index: CopyIndex | None) -> None:
        self.copy_index = index
        if self.engine is not None:
            self.engine.copy_index = index

    def shutdown(self) -> None:
        for cancel in self._live.values():
            cancel.set()
        self._infer.shutdown(wait=False, cancel_futures=True)
        self._load.shutdown(wait=False, cancel_futures=True)
