"""The wire: clean LSP frames out of an untrusted byte stream, stdio and TCP serving, and pygls'
protocol minus its document store.

pygls 2.1 reads `Content-Length: N` (exact case) and then exactly N bytes. One frame that lies
about N, or one header spelled `content-length`, desynchronises it for good (checked against
pygls 2.1.1): from then on every body is glued to the next header and dropped, and the process
lives on, deaf. FrameReader sits in front of it: it finds headers anywhere and in any case, resynchronises
when a new header shows up before the promised end of a body, waits a moment and then takes a
complete-looking body that is shorter than promised, and takes the rest of a body that is longer.
pygls' own loop then reads one well-formed frame at a time.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Coroutine
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.io_ import StdoutWriter, run_async
from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCNotification, LanguageServerProtocol, lsp_method

log = logging.getLogger("codecomplete.wire")  # stderr only: never about itself over the wire

CONTENT_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*(\d{1,10})[ \t]*\r?\n", re.IGNORECASE)
HEADER_LINE = re.compile(rb"[A-Za-z][A-Za-z0-9-]*[ \t]*:")
MAX_BODY = 256 << 20
MAX_JUNK = 1 << 20  # bytes kept while looking for a header
LATE_S = 0.3  # how long a complete-looking body waits for the rest its header promised
IGNORED = JsonRPCNotification(method="", jsonrpc="ignored", params=None)  # pygls skips it


def _leaves(error: BaseException | None) -> list[str]:
    """The messages at the bottom of cattrs' exception groups: what was actually wrong."""
    if isinstance(error, BaseExceptionGroup):
        return [m for e in error.exceptions for m in _leaves(e)]
    return [str(error)] if error is not None else []


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


class FrameReader:
    """What pygls' loop reads from (readline, readexactly): one well-formed frame at a time."""

    def __init__(self, source: asyncio.StreamReader) -> None:
        self._source = source  # raw bytes as they arrive
        self._buf = bytearray()
        self._eof = False
        self._frame = b""  # the frame being handed out

    async def readline(self) -> bytes:
        while not self._frame:
            try:
                body = await self._next_body()
            except Exception:  # a bug here must cost the buffer, not the session
                log.exception("could not read a message; skipped what was buffered")
                self._buf.clear()
                continue
            if body is None:
                return b""
            self._frame = b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        end = self._frame.index(b"\n") + 1
        line, self._frame = self._frame[:end], self._frame[end:]
        return line

    async def readexactly(self, n: int) -> bytes:
        out, self._frame = self._frame[:n], self._frame[n:]
        return out

    async def _more(self, timeout: float | None = None) -> bool:
        """Append the next chunk; False at the end of the stream or when timeout passes first."""
        if self._eof:
            return False
        try:
            chunk = await asyncio.wait_for(self._source.read(1 << 16), timeout)
        except TimeoutError:  # nothing was taken from the source: no bytes are lost
            return False
        except ConnectionError:
            chunk = b""
        self._eof = not chunk
        self._buf += chunk
        return bool(chunk)

    def _drop(self, n: int) -> None:
        junk = bytes(self._buf[:n])
        del self._buf[:n]
        if any(line.strip() and not HEADER_LINE.match(line.strip()) for line in junk.splitlines()):
            log.warning("skipped %d bytes that are not an LSP message: %r", n, junk[:60])

    async def _next_body(self) -> bytes | None:
        while True:
            m = CONTENT_LENGTH.search(self._buf)
            if m is None:
                if len(self._buf) > MAX_JUNK:
                    self._drop(len(self._buf) - 64)  # the tail may be the start of a header
                if not await self._more():
                    self._drop(len(self._buf))
                    return None
                continue
            length, pos, start = int(m.group(1)), m.end() - m.start(), None
            self._drop(m.start())  # (m's offsets are stale from here on)
            while start is None:  # more header lines (Content-Type), then an empty line
                nl = self._buf.find(b"\n", pos)
                if nl < 0 and len(self._buf) - pos > 4096:
                    break  # no header line is that long
                if nl < 0:
                    if not await self._more():
                        self._drop(len(self._buf))
                        return None
                    continue
                line = bytes(self._buf[pos : nl + 1])
                if not line.strip():
                    start = nl + 1
                elif HEADER_LINE.match(line):
                    pos = nl + 1
                else:
                    break
            if start is None or not 0 < length <= MAX_BODY:
                log.warning("dropped a malformed header %r", bytes(self._buf[:pos])[:80])
                self._drop(pos)
                continue
            return await self._body(start, length)

    async def _body(self, start: int, length: int) -> bytes:
        scanned = start
        while True:
            # A header cannot occur inside a JSON body: one that starts before the promised end
            # means the frame was shorter than its Content-Length.
            lie = CONTENT_LENGTH.search(self._buf, max(start, scanned - 64))
            if lie is not None and lie.start() < start + length:
                log.warning("a message was shorter than its Content-Length %d", length)
                return self._take(start, lie.start())
            if len(self._buf) - start >= length:
                break
            scanned = len(self._buf)
            looks_done = self._buf[-8:].rstrip().endswith(b"}")
            more = await self._more(LATE_S if looks_done else None)
            if not more and (self._eof or _is_json_object(self._buf[start:])):
                log.warning("a message was shorter than its Content-Length %d", length)
                return self._take(start, len(self._buf))
        body = self._take(start, start + length)
        if not body.rstrip().endswith(b"}"):  # cut short: the header promised too little?
            nxt = CONTENT_LENGTH.search(self._buf)
            end = nxt.start() if nxt else len(self._buf)
            if _is_json_object(body + self._buf[:end]):
                log.warning("a message was longer than its Content-Length %d", length)
                return body + self._take(0, end)
        return body

    def _take(self, start: int, end: int) -> bytes:
        out = bytes(self._buf[start:end])
        del self._buf[:end]
        return out


class Protocol(LanguageServerProtocol):
    """pygls' protocol, with two changes.

    Documents belong to the server (lsp.text): pygls splits them with str.splitlines, whose line
    breaks are not the editor's, and rebuilds the whole text on every change, which a 5 MB file
    feels. And a message whose params do not parse is answered with InvalidParams instead of
    leaving the client waiting for a response that never comes.
    """

    def _user(self, method: str, params: Any):
        if (handler := self.fm.features.get(method)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        yield from self._user(types.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        yield from self._user(types.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        yield from self._user(types.TEXT_DOCUMENT_DID_CLOSE, params)

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            reason = "; ".join(_leaves(error.__cause__)) or "does not parse"
            method, msg_id = data.get("method"), data.get("id")
            log.warning("dropped a malformed %s message: %s", method or "response", reason)
            if method and isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool):
                reply = types.ResponseError(types.ErrorCodes.InvalidParams, f"{method}: {reason}")
                self._send_response(msg_id, error=reply)
            return IGNORED


async def _serve(server: LanguageServer, reader: FrameReader) -> None:
    await run_async(stop_event=threading.Event(), reader=reader, protocol=server.protocol,
                    logger=logging.getLogger("pygls.io_"), error_handler=server.report_server_error)


def _run(main: Coroutine[Any, Any, None]) -> int:
    """Run until the client leaves; the exit code per the LSP (1: `exit` without `shutdown`)."""
    try:
        asyncio.run(main)
    except SystemExit as e:  # pygls' `exit` handler
        return e.code if isinstance(e.code, int) else 0
    except (BrokenPipeError, ConnectionResetError):
        log.warning("the client went away")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _feed(fd: int, loop: asyncio.AbstractEventLoop, source: asyncio.StreamReader) -> None:
    """Blocking reads in a daemon thread, for a stdin that is not a pipe (a file, a terminal)."""
    while chunk := os.read(fd, 1 << 16):
        loop.call_soon_threadsafe(source.feed_data, chunk)
    loop.call_soon_threadsafe(source.feed_eof)


def serve_stdio(server: LanguageServer) -> int:
    out = os.fdopen(os.dup(1), "wb")  # the protocol's own copy of stdout...
    os.dup2(2, 1)  # ...and fd 1 now goes to stderr: a stray print cannot corrupt a frame
    sys.stdout = sys.stderr
    server.protocol.set_writer(StdoutWriter(out))

    async def main() -> None:
        loop, source = asyncio.get_running_loop(), asyncio.StreamReader()
        try:  # read stdin on the event loop itself: no thread hop per message
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(source), sys.stdin.buffer)
        except (ValueError, OSError):
            threading.Thread(target=_feed, args=(sys.stdin.fileno(), loop, source), daemon=True).start()
        await _serve(server, FrameReader(source))

    return _run(main())


def serve_tcp(server: LanguageServer, host: str, port: int) -> int:
    """Serve one client on host:port, then exit (like stdio, one editor per process)."""

    async def main() -> None:
        done = asyncio.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if done.is_set() or server.protocol.writer is not None:
                writer.close()  # a second editor on the same server would share its state
                return
            server.protocol.set_writer(writer)
            try:
                await _serve(server, FrameReader(reader))
            finally:
                done.set()

        listener = await asyncio.start_server(connection, host, port)
        log.info("listening on %s", ", ".join(str(s.getsockname()) for s in listener.sockets))
        async with listener:
            await done.wait()

    return _run(main())
