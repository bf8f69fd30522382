"""The wire: bad bytes on stdin, nothing but frames on stdout, TCP, the command line.

A raw client writes exactly the bytes a test wants and reads stdout strictly, so a stray print
or a broken frame from the server fails the test. FrameReader is also tested on its own.
"""
from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from codecomplete.lsp.transport import LATE_S, FrameReader

BIN = Path(sys.executable).parent
SERVER = [str(BIN / "codecomplete-lsp")] if (BIN / "codecomplete-lsp").exists() else [sys.executable, "-m", "codecomplete.lsp"]
ENV = {k: v for k, v in os.environ.items() if k != "CODECOMPLETE_CHECKPOINT"} | {"OMP_NUM_THREADS": "1"}


def frame(msg: dict[str, Any] | bytes, header: bytes = b"Content-Length: %d\r\n\r\n") -> bytes:
    body = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
    return header % len(body) + body if b"%d" in header else header + body


def request(id: int, method: str, params: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}


INIT = request(1, "initialize", {"processId": None, "rootUri": None, "capabilities": {},
                                 "initializationOptions": {"acceptanceLog": False}})
STATUS = {"command": "codecomplete.status"}


def read_frames(stream: BinaryIO, out: queue.Queue) -> None:
    """Strict: anything on stdout but Content-Length/Content-Type headers and JSON bodies fails."""
    while line := stream.readline():
        m = re.fullmatch(rb"Content-Length: (\d+)\r\n", line)
        assert m, f"not a frame header on stdout: {line!r}"
        while (h := stream.readline()) != b"\r\n":
            assert h.startswith(b"Content-Type:"), f"bad header on stdout: {h!r}"
        out.put(json.loads(stream.read(int(m.group(1)))))
    out.put(None)


class Raw:
    """The server as a subprocess, spoken to in bytes."""

    def __init__(self, args: list[str] = SERVER, env: dict[str, str] = ENV) -> None:
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.inbox: queue.Queue = queue.Queue()
        self.notifications: list[dict[str, Any]] = []
        self.stderr = b""
        threading.Thread(target=read_frames, args=(self.proc.stdout, self.inbox), daemon=True).start()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.stderr += line

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def wait(self, id: int, timeout: float = 30) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            msg = self.inbox.get(timeout=max(0.01, end - time.monotonic()))
            assert msg is not None, f"server closed stdout; stderr: {self.stderr.decode()[-2000:]}"
            if "method" in msg:
                self.notifications.append(msg)
            elif msg.get("id") == id:
                return msg

    def finish(self) -> int:
        self.write(frame(request(999, "shutdown")))
        assert self.wait(999)["result"] is None
        self.write(frame({"jsonrpc": "2.0", "method": "exit"}))
        return self.proc.wait(30)


def test_bad_frames_do_not_desynchronise_or_kill_the_server() -> None:
    raw = Raw([*SERVER, "--stdio", "--clientProcessId=1"])  # what vscode-languageclient appends
    try:
        raw.write(b"garbage before any header\r\n" + frame(INIT))
        assert "capabilities" in raw.wait(1)["result"]
        raw.write(frame(request(2, "workspace/executeCommand", STATUS), b"content-length: %d\r\n\r\n"))  # any case
        assert raw.wait(2)["result"]["ready"] is False
        raw.write(frame(request(3, "workspace/executeCommand", STATUS),
                        b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\nContent-Length: %d\r\n\r\n"))
        assert "result" in raw.wait(3)
        raw.write(frame(b'{"jsonrpc": "2.0", "id": 4, "method": "workspace/exec') + frame(request(5, "workspace/executeCommand", STATUS)))
        assert "result" in raw.wait(5)  # the broken body is dropped, the next frame is read
        body = json.dumps(request(6, "workspace/executeCommand", STATUS)).encode()
        raw.write(b"Content-Length: %d\r\n\r\n" % (len(body) + 500) + body + frame(request(7, "workspace/executeCommand", STATUS)))
        assert "result" in raw.wait(6) and "result" in raw.wait(7)  # promised too much: both still read
        body = json.dumps(request(8, "workspace/executeCommand", STATUS)).encode()
        raw.write(b"Content-Length: %d\r\n\r\n" % (len(body) - 9) + body + frame(request(12, "workspace/executeCommand", STATUS)))
        assert "result" in raw.wait(8) and "result" in raw.wait(12)  # promised too little
        body = json.dumps(request(9, "workspace/executeCommand", STATUS)).encode()
        t0 = time.monotonic()
        raw.write(b"Content-Length: %d\r\n\r\n" % (len(body) + 50) + body)  # and then nothing more
        assert "result" in raw.wait(9) and time.monotonic() - t0 >= LATE_S * 0.9
        raw.write(b"Content-Length: 99999999999\r\n\r\n" + frame(b"[1, 2]") + frame(b"\xff\xfe{}") + frame(b"{}"))
        bad_position = {"textDocument": {"uri": "file:///x.py"}, "position": {"line": -1, "character": 0}}
        raw.write(frame(request(10, "textDocument/completion", bad_position)))
        error = raw.wait(10)["error"]
        assert error["code"] == -32602 and "line" in error["message"]  # answered, not left hanging
        raw.write(frame(request(11, "workspace/executeCommand", STATUS)))
        assert "result" in raw.wait(11)
        assert raw.finish() == 0
    finally:
        raw.proc.kill()


def test_stray_prints_go_to_stderr_not_into_the_protocol() -> None:
    code = ("import codecomplete.lsp.server as s\n"
            "s.server.command('test.print')(lambda ls, *a: print('stray output') or 'ok')\n"
            "s.main()\n")
    raw = Raw([sys.executable, "-c", code])
    try:
        raw.write(frame(INIT) + frame(request(2, "workspace/executeCommand", {"command": "test.print"})))
        assert raw.wait(2)["result"] == "ok"  # read_frames would have failed on the printed line
        assert raw.finish() == 0
    finally:
        raw.proc.kill()
    assert b"stray output" in raw.stderr


def test_without_any_model_it_answers_empty_and_says_how_to_get_one(tmp_path: Path) -> None:
    code = ("import pathlib, codecomplete.lsp.settings as settings, codecomplete.lsp.server as s\n"
            f"settings.DEFAULT_CHECKPOINT = pathlib.Path({str(tmp_path / 'none')!r})  # as if none were shipped\n"
            "s.main()\n")
    raw = Raw([sys.executable, "-c", code])
    try:
        t0 = time.monotonic()
        raw.write(frame(INIT))
        raw.wait(1)
        assert time.monotonic() - t0 < 20  # torch is not imported before a model is loaded
        raw.write(frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        doc = {"uri": "file:///x.py", "languageId": "python", "version": 1, "text": "import os\n"}
        raw.write(frame({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": doc}}))
        raw.write(frame(request(2, "textDocument/completion", {"textDocument": {"uri": "file:///x.py"}, "position": {"line": 1, "character": 0}})))
        assert raw.wait(2)["result"] == {"isIncomplete": True, "items": []}
        raw.write(frame(request(3, "workspace/executeCommand", STATUS)))
        assert "codecomplete-train quickstart" in raw.wait(3)["result"]["error"]
        shown = [n["params"] for n in raw.notifications if n["method"] == "window/showMessage"]
        assert len(shown) == 1 and shown[0]["type"] == 2  # one warning
        assert "codecomplete.checkpoint" in shown[0]["message"] and "codecomplete-train quickstart" in shown[0]["message"]
        assert raw.finish() == 0
    finally:
        raw.proc.kill()


def test_tcp() -> None:
    proc = subprocess.Popen([*SERVER, "--tcp", "127.0.0.1:0"], stderr=subprocess.PIPE, env=ENV)
    try:
        port = next(int(m.group(1)) for line in proc.stderr if (m := re.search(rb"'127\.0\.0\.1', (\d+)", line)))
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            stream = sock.makefile("rwb")
            stream.write(frame(INIT) + frame(request(2, "shutdown")) + frame({"jsonrpc": "2.0", "method": "exit"}))
            stream.flush()
            inbox: queue.Queue = queue.Queue()
            read_frames(stream, inbox)
            assert "capabilities" in inbox.get()["result"] and inbox.get()["id"] == 2
        assert proc.wait(30) == 0
    finally:
        proc.kill()


def test_command_line() -> None:
    out = subprocess.run([*SERVER, "--help"], capture_output=True, text=True, env=ENV, timeout=60, check=False)
    assert out.returncode == 0 and "--tcp HOST:PORT" in out.stdout and "--checkpoint" in out.stdout
    out = subprocess.run([*SERVER, "--tcp", "nowhere"], capture_output=True, text=True, env=ENV, timeout=60, check=False)
    assert out.returncode == 2 and "HOST:PORT" in out.stderr


# -- FrameReader on its own ---------------------------------------------------------------------
async def read_all(chunks: list[bytes], end: bool = True, timeout: float = 5) -> list[bytes]:
    """Bodies, read the way pygls' loop reads them."""
    source = asyncio.StreamReader()

    async def feed() -> None:  # one chunk at a time, each read on its own
        for c in chunks:
            source.feed_data(c)
            await asyncio.sleep(0.002)
        if end:
            source.feed_eof()

    feeding = asyncio.ensure_future(feed())
    reader, bodies = FrameReader(source), []
    while True:
        try:
            header = await asyncio.wait_for(reader.readline(), timeout)
        except TimeoutError:
            header = b""
        if not header:
            await feeding
            return bodies
        assert re.fullmatch(rb"Content-Length: \d+\r\n", header) and await reader.readline() == b"\r\n"
        bodies.append(await reader.readexactly(int(header.split(b":")[1])))


A, B = b'{"a": 1}', b'{"b": [2, {"c": 3}]}'


@pytest.mark.parametrize(("chunks", "bodies"), [
    ([frame(A) + frame(B)], [A, B]),
    ([frame(A)[:5], frame(A)[5:12], frame(A)[12:] + frame(B)[:3], frame(B)[3:]], [A, B]),  # split anywhere
    ([b"\r\n\r\njunk" + frame(A)], [A]),
    ([b"CONTENT-LENGTH:%d\n\n" % len(A) + A], [A]),  # case, spaces and bare \n
    ([b"Content-Length: 0\r\n\r\n" + frame(A)], [A]),
    ([b"Content-Length: 5\r\nnot a header\r\n\r\n" + frame(A)], [A]),
    ([b"Content-Length: %d\r\n\r\n" % (len(A) + 9) + A + frame(B)], [A, B]),  # too long, resynced
    ([b"Content-Length: %d\r\n\r\n" % (len(B) - 4) + B + frame(A)], [B, A]),  # too short, completed
    ([b"Content-Length: %d\r\n\r\n" % (len(A) + 3) + A], [A]),  # too long at the end of the stream
    ([b"no header at all"], []),
])
async def test_frame_reader(chunks: list[bytes], bodies: list[bytes]) -> None:
    assert await read_all(chunks) == bodies


async def test_frame_reader_waits_briefly_for_a_body_shorter_than_promised() -> None:
    source = asyncio.StreamReader()
    source.feed_data(b"Content-Length: %d\r\n\r\n" % (len(A) + 3) + A)  # and then silence, not the end
    reader, t0 = FrameReader(source), time.monotonic()
    assert await asyncio.wait_for(reader.readline(), 2) == b"Content-Length: %d\r\n" % len(A)
    assert LATE_S * 0.9 <= time.monotonic() - t0 < 2
    incomplete = [b"Content-Length: %d\r\n\r\n" % (len(B) + 3) + B[:-2]]  # not JSON yet: keep waiting
    assert await read_all(incomplete, end=False, timeout=1) == []
