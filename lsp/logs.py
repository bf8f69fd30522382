"""What the user is told: logs to stderr and to the client (window/logMessage), and $/progress.
stdout is the protocol's.

Everything under the "codecomplete" logger goes both ways, from any thread. "codecomplete.wire"
(framing trouble, send errors) goes to stderr only, so a failing send cannot log about itself
in a loop. pygls is kept at ERROR unless logLevel is debug: it logs every message body at INFO.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import uuid
from collections.abc import AsyncIterator

from lsprotocol import types
from pygls.capabilities import get_capability

LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}
MESSAGE_TYPES = {logging.ERROR: types.MessageType.Error, logging.WARNING: types.MessageType.Warning,
                 logging.INFO: types.MessageType.Info, logging.DEBUG: types.MessageType.Log}
log = logging.getLogger("codecomplete")


class ClientHandler(logging.Handler):
    """window/logMessage for each record, sent from the event loop's thread."""

    def __init__(self, server) -> None:
        super().__init__()
        self.server = server
        self.loop: asyncio.AbstractEventLoop | None = None  # set once the server runs

    def emit(self, record: logging.LogRecord) -> None:
        if self.loop is None or record.name.startswith("codecomplete.wire"):
            return
        kind = MESSAGE_TYPES.get(min(record.levelno, logging.ERROR), types.MessageType.Log)
        params = types.LogMessageParams(type=kind, message=self.format(record))
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self.loop.call_soon_threadsafe(self.server.window_log_message, params)


def setup_logging(server, level: str) -> ClientHandler:
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("codecomplete %(levelname)s %(message)s"))
    client = ClientHandler(server)
    log.addHandler(stderr)
    log.addHandler(client)
    log.propagate = False
    logging.getLogger("pygls").addHandler(stderr)
    logging.getLogger("pygls").propagate = False
    set_level(level)
    return client


def set_level(level: str) -> None:
    log.setLevel(LEVELS.get(level, logging.INFO))
    logging.getLogger("pygls").setLevel(logging.DEBUG if level == "debug" else logging.ERROR)


@contextlib.asynccontextmanager
async def progress(server, title: str) -> AsyncIterator[dict[str, str]]:
    """$/progress begin ... end around a block, when the client takes it; set ["message"] to say
    how it ended."""
    token: str | None = f"codecomplete-{uuid.uuid4().hex[:8]}"
    end = {"message": "done"}
    try:
        if not get_capability(server.client_capabilities, "window.work_done_progress", False):
            raise RuntimeError("no progress")
        await asyncio.wait_for(server.work_done_progress.create_async(token), 10)
        server.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title))
    except Exception:  # noqa: BLE001 - progress is a courtesy; the work goes on without it
        token = None
    try:
        yield end
    finally:
        if token is not None:
            server.work_done_progress.end(token, types.WorkDoneProgressEnd(message=end["message"]))
