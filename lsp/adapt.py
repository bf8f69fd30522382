"""`codecomplete.adapt` (workspace/executeCommand): fine-tune the served model on a workspace folder.

The server runs `codecomplete-train adapt` for the editors rather than each editor spawning it:
one implementation serves VS Code, Neovim and any LSP client alike; it runs with the server's own
Python (`python -m codecomplete.train.cli`), so no editor has to find the training CLI; its progress
reaches every client as `$/progress`, and cancelling that progress stops it. It runs as a child
process at low priority, never inside the server:
training holds the CPU for minutes and must not stall completions, a child stops cleanly on SIGTERM
(the training loop writes its checkpoint, so the same command resumes), and its failure cannot take
the server down.

Cancelling is by the progress token (`window/workDoneProgress/cancel`, also for a client's own
workDoneToken), not `$/cancelRequest`: pygls 2.1 runs a command's coroutine under an inner request
id, so it answers a `$/cancelRequest` of workspace/executeCommand at once and the coroutine, and the
training, would go on.

Argument: {"folder", "out"?, "minutes"?, "evalCases"?, "workDoneToken"?}. Result: {"checkpoint",
"summary", "out"} once done, {"cancelled": true, "out"} when its progress was cancelled. A failure
is an error response whose message is the command's own `error:` line.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.exceptions import JsonRpcException

from codecomplete.lsp.logs import log

ADAPT = "codecomplete.adapt"
REQUEST_FAILED = -32803  # LSP's RequestFailed
STOP_WAIT_S = 60  # for the training loop's last checkpoint after SIGTERM, then SIGKILL


def default_out(folder: Path) -> Path:
    """Where a workspace's adaptation lives: the user's data folder, not the project."""
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:8]
    return data / "codecomplete" / "adapted" / f"{folder.name}-{digest}"


def finished(out: Path) -> bool:
    """A run whose comparison is written (train/adapt.py's adapt.json): asked again, it starts over
    on the project as it is now; an unfinished one resumes."""
    try:
        return "comparison" in json.loads((out / "adapt.json").read_text())
    except (OSError, ValueError):
        return False


def command(args: Any, served: Path | None) -> tuple[list[str], Path]:
    """The child's command line and its run folder, from the request's argument."""
    if not isinstance(args, dict) or not isinstance(args.get("folder"), str):
        raise JsonRpcException(f'{ADAPT} takes one argument {{"folder": PATH, "minutes"?: N}}, not {json.dumps(args)}',
                               REQUEST_FAILED)
    folder = Path(args["folder"]).expanduser().resolve()
    out = Path(args["out"]).expanduser().resolve() if isinstance(args.get("out"), str) else default_out(folder)
    cmd = [sys.executable, "-m", "codecomplete.train.cli", "adapt", str(folder), "--out", str(out), "--events"]
    if served is not None and not served.resolve().is_relative_to(out):  # else: the run's own base again
        cmd += ["--from", str(served)]
    if finished(out):
        cmd.append("--overwrite")
    for key, flag in (("minutes", "--minutes"), ("evalCases", "--eval-cases")):
        if isinstance(args.get(key), (int, float)) and not isinstance(args.get(key), bool):
            cmd += [flag, str(args[key])]
    nice = shutil.which("nice")
    return ([nice, "-n", "10"] if nice else []) + cmd, out


def parse_event(line: bytes) -> dict[str, Any]:
    """One JSON line of `adapt --events`; {} for anything else on stdout."""
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


class Adapter:
    """One adaptation at a time, in a child process, reported as work-done progress."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.proc: asyncio.subprocess.Process | None = None
        self.folder = ""
        self.stopping = False  # SIGTERM sent: the child's end is a stop, not a failure

    async def run(self, args: Any, served: Path | None) -> dict[str, Any]:
        if self.proc is not None:
            raise JsonRpcException(f"an adaptation to {self.folder} is already running; cancel it first", REQUEST_FAILED)
        cmd, out = command(args, served)
        self.folder = cmd[cmd.index("adapt") + 1]
        log.info("adapting: %s", " ".join(cmd))
        self.proc = proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                                stdin=asyncio.subprocess.DEVNULL)
        tail: collections.deque[str] = collections.deque(maxlen=20)
        stderr = asyncio.ensure_future(self._log(proc.stderr, tail))
        self.stopping, done = False, None
        token = await self._begin(args.get("workDoneToken"), Path(self.folder).name)
        try:
            async for line in proc.stdout:
                event = parse_event(line)
                if event.get("event") == "progress" and token is not None:
                    self.server.work_done_progress.report(token, types.WorkDoneProgressReport(
                        message=event["message"], percentage=event["percent"]))
                elif event.get("event") == "done":
                    done = event
            await stderr
            code = await proc.wait()
        finally:
            self.proc = None
        if done is not None:
            self._end(token, "done")
            return {"checkpoint": done["checkpoint"], "summary": done["summary"], "out": str(out)}
        if self.stopping or code == 0:  # the progress was cancelled (or another hand sent SIGTERM)
            self._end(token, "stopped")
            return {"cancelled": True, "out": str(out)}
        self._end(token, "failed")
        why = next((line for line in reversed(tail) if line.startswith("error:")), tail[-1] if tail else f"exit code {code}")
        raise JsonRpcException(f"adapting to {Path(self.folder).name} failed: {why}", REQUEST_FAILED)

    def _end(self, token: str | None, message: str) -> None:
        if token is not None:
            self.server.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
            self.server.work_done_progress.tokens.pop(token, None)

    async def _begin(self, token: str | None, name: str) -> str | None:
        """The client's token, else one of ours when the client takes server-made progress; cancelling
        it stops the child."""
        caps = self.server.client_capabilities
        if token is None and get_capability(caps, "window.work_done_progress", False):
            token = f"codecomplete-adapt-{uuid.uuid4().hex[:8]}"
            try:
                await asyncio.wait_for(self.server.work_done_progress.create_async(token), 10)
            except Exception:  # noqa: BLE001 - progress is a courtesy; the work goes on without it
                token = None
        if token is None:
            return None
        self.server.work_done_progress.begin(token, types.WorkDoneProgressBegin(
            title=f"codecomplete: adapting to {name}", cancellable=True, percentage=0))
        proc = self.proc  # not a later run's, should the client cancel this token after the end
        self.server.work_done_progress.tokens[token].add_done_callback(lambda _: self._terminate(proc))
        return token

    async def _log(self, stream: asyncio.StreamReader, tail: collections.deque[str]) -> None:
        async for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                tail.append(line)
                log.info("adapt: %s", line)

    def _terminate(self, proc: asyncio.subprocess.Process | None) -> None:
        """SIGTERM (the run saves and exits); SIGKILL if it is still there STOP_WAIT_S later."""
        if proc is None or proc.returncode is not None:
            return
        self.stopping = True

        def kill() -> None:
            if proc.returncode is None:
                proc.kill()

        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(RuntimeError):  # no loop: the server is exiting; the child ends on its own
            asyncio.get_running_loop().call_later(STOP_WAIT_S, kill)

    def shutdown(self) -> None:
        """The server is exiting: ask the child to save and stop; it finishes on its own."""
        self._terminate(self.proc)
