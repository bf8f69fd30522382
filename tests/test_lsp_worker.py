"""The worker: cancellation reaches the decoder, newer requests supersede older ones, a failed
load keeps the old model. A fake engine stands in, so each test controls when decoding ends."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from codecomplete.engine.completion import Candidate, EngineStats
from codecomplete.engine.decoding import Cancelled
from codecomplete.engine.errors import CodecompleteError
from codecomplete.lsp.worker import Request, Superseded, Worker

REQUEST = Request("def f(", "", n=3, max_new_tokens=8, multiline=False, temperature=0.0, top_p=None, timeout_s=5)


class FakeEngine:
    """Decodes until released, checking the cancel flag between 'tokens' as the real one does."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.cancelled: list[str] = []
        self.stats = EngineStats(latency_ms=1.0)
        self.min_score = -3.0

    def complete(self, prefix: str, suffix: str = "", *, cancel: threading.Event, **kw) -> list[Candidate]:
        self.started.set()
        while not self.release.wait(0.005):
            if cancel.is_set():
                self.cancelled.append(prefix)
                raise Cancelled
        return [Candidate(prefix + "x):", -0.5, "stop")]


async def started(engine: FakeEngine) -> None:
    assert await asyncio.to_thread(engine.started.wait, 5)
    engine.started.clear()


async def test_cancelling_the_request_stops_the_decoder() -> None:
    worker, engine = Worker(), FakeEngine()
    worker.engine = engine
    task = asyncio.ensure_future(worker.complete(("a.py", "inline"), REQUEST))
    await started(engine)
    task.cancel()  # what pygls does on $/cancelRequest
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if engine.cancelled:
            break
        await asyncio.sleep(0.005)
    assert engine.cancelled == ["def f("]  # the decode loop saw the flag and stopped
    engine.release.set()
    assert (await worker.complete(("a.py", "inline"), REQUEST)).candidates  # the thread is free again
    worker.shutdown()


async def test_a_newer_request_for_the_same_document_supersedes_the_older() -> None:
    worker, engine = Worker(), FakeEngine()
    worker.engine = engine
    older = asyncio.ensure_future(worker.complete(("a.py", "inline"), REQUEST))
    await started(engine)
    other = asyncio.ensure_future(worker.complete(("b.py", "inline"), REQUEST))  # another document
    newer = asyncio.ensure_future(worker.complete(("a.py", "inline"), Request(**{**REQUEST.__dict__, "prefix": "def g("})))
    with pytest.raises(Superseded):
        await older
    await started(engine)
    engine.release.set()
    assert (await newer).candidates[0].text == "def g(x):"
    assert (await other).candidates  # not touched by a.py's requests
    worker.shutdown()


async def test_no_model_answers_nothing() -> None:
    assert (await Worker().complete(("a.py", "completion"), REQUEST)).candidates == []


async def test_a_failed_load_keeps_the_model_in_service(tmp_path: Path) -> None:
    worker, engine = Worker(), FakeEngine()
    worker.engine = engine
    with pytest.raises(CodecompleteError, match="not a folder"):
        await worker.load(tmp_path / "missing", "cpu", 1)
    assert worker.engine is engine and worker.loading is None
    worker.set_min_score(-7.0)
    assert engine.min_score == -7.0
    worker.shutdown()
