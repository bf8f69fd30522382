"""LSP request-to-response latency through a real stdio client, beside the engine's own latency.

A codecomplete-lsp subprocess gets a real Python file (from this Python's standard library) with
a stretch of it cut out; the client then types that stretch back character by character, as an
editor would: didChange, then a completion (or inline completion) request at the new cursor.
Each request is timed in the client from the write to the parsed response. After each response
the server's status command reports the engine's own latency for it (engine.stats.latency_ms)
and the time spent in the handler; the differences are the protocol overhead:

    client round trip - engine   everything the LSP adds
    client round trip - handler  framing, JSON, pipes, pygls' dispatch, our text helpers
    handler - engine             the hop to the inference thread and back

    python benchmarks/lsp_latency.py                                   # small preset, random weights
    python benchmarks/lsp_latency.py --checkpoint runs/small/best --method inline --chars 400
    python benchmarks/lsp_latency.py --checkpoint models/default --workspace "$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"

With --workspace, the folder is the editor's workspace (the file typed should be in it): the
server indexes it first, and every request carries its repository context.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

STDLIB = Path(sysconfig.get_paths()["stdlib"])


class Client:
    """The smallest LSP client: blocking writes and reads on the server's pipes, no threads."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.next_id = 0

    def send(self, msg: dict[str, Any]) -> None:
        body = json.dumps(msg).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method: str, params: Any) -> Any:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        while True:
            length = 0
            while (line := self.proc.stdout.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not line:
                raise SystemExit("the server exited")
            msg = json.loads(self.proc.stdout.read(length))
            if msg.get("id") == self.next_id and "method" not in msg:
                if "error" in msg:
                    raise SystemExit(f"{method}: {msg['error']}")
                return msg["result"]

    def status(self) -> dict[str, Any]:
        return self.request("workspace/executeCommand", {"command": "codecomplete.status"})

    def close(self) -> None:
        self.request("shutdown", None)
        self.notify("exit", None)
        self.proc.wait(30)


def random_checkpoint(preset: str, out: Path) -> Path:
    """Random weights of the preset's shape, with a tokenizer trained here on stdlib code."""
    import torch

    from codecomplete.engine.checkpoint import save_checkpoint
    from codecomplete.engine.model import GPT, config_from_preset
    from codecomplete.train.tokenizer_train import train_tokenizer

    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(STDLIB.glob("*.py"))[:120]]
    tok = train_tokenizer(texts, 4096)
    torch.manual_seed(0)
    return save_checkpoint(out, GPT(config_from_preset(preset, tok.vocab_size)).eval(), tok, {"fim_rate": 0.5})


def pct(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20) if len(values) > 1 else values * 19
    return f"p50 {statistics.median(values):8.2f}   p95 {q[18]:8.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="a checkpoint folder (default: random weights of --preset)")
    ap.add_argument("--preset", default="small", help="model shape when no --checkpoint is given")
    ap.add_argument("--method", choices=("completion", "inline"), default="completion")
    ap.add_argument("--chars", type=int, default=300, help="characters typed, one request each")
    ap.add_argument("--warmup", type=int, default=5, help="first requests left out of the figures")
    ap.add_argument("--file", type=Path, default=STDLIB / "argparse.py", help="the file being typed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the server (0: its choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workspace", type=Path, help="a workspace folder: repository context on (default: none, off)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or random_checkpoint(args.preset, Path(tmp) / "ckpt")
        text = args.file.read_text(encoding="utf-8")
        start = random.Random(args.seed).randrange(len(text) // 3, len(text) * 2 // 3)
        start = text.index("\n", start) + 1  # type from the start of a line
        typed = text[start : start + args.chars]
        doc = text[:start] + text[start + args.chars :]  # the suffix stays as it is while typing

        bin_dir = Path(sys.executable).parent
        cmd = [str(bin_dir / "codecomplete-lsp")] if (bin_dir / "codecomplete-lsp").exists() else [sys.executable, "-m", "codecomplete.lsp"]
        env = {k: v for k, v in os.environ.items() if k != "CODECOMPLETE_CHECKPOINT"}
        client = Client([*cmd, "--log-level", "warning"], env)
        options = {"checkpoint": str(checkpoint), "device": args.device, "threads": args.threads,
                   "minScore": -1e9, "acceptanceLog": False, "timeoutMs": 60_000, "repoContextMaxMb": 64}
        root = args.workspace.resolve().as_uri() if args.workspace else None
        client.request("initialize", {"processId": os.getpid(), "rootUri": root, "capabilities": {},
                                      "initializationOptions": options})
        client.notify("initialized", {})
        t0 = time.perf_counter()
        indexed = (lambda s: s["workspace"] and s["workspace"][0]["index"] and not s["workspace"][0]["index"]["stale"]) \
            if args.workspace else (lambda s: True)
        while not ((status := client.status())["ready"] and indexed(status)):
            if status["error"]:
                raise SystemExit(status["error"])
            time.sleep(0.05)
        model = status["model"]
        print(f"model {model['checkpoint']}  {model['params'] / 1e6:.1f}M params on {model['device']}, "
              f"loaded and warmed up in {time.perf_counter() - t0:.1f} s")
        for folder in status["workspace"]:
            print(f"workspace {folder['folder']}: {folder['files']} files, {folder['mb']} MB; "
                  f"index of {folder['index']['tokens']:,} tokens built in {folder['index']['build_s']:.1f} s")

        uri = args.file.resolve().as_uri()
        client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": doc}})
        row, col = text[:start].count("\n"), 0
        method = "textDocument/completion" if args.method == "completion" else "textDocument/inlineCompletion"
        rows: list[tuple[float, float, float, int, bool]] = []  # client, handler, engine (ms), items, cached
        for k, ch in enumerate(typed):
            pos = {"line": row, "character": col}
            client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": k + 2},
                                                     "contentChanges": [{"range": {"start": pos, "end": pos}, "text": ch}]})
            row, col = (row + 1, 0) if ch == "\n" else (row, col + len(ch.encode("utf-16-le")) // 2)
            params: dict[str, Any] = {"textDocument": {"uri": uri}, "position": {"line": row, "character": col}}
            if args.method == "inline":
                params["context"] = {"triggerKind": 2}
            t = time.perf_counter()
            result = client.request(method, params)
            rtt = (time.perf_counter() - t) * 1000
            last = client.status()["latencies"][-1]  # the record of this request
            rows.append((rtt, last["serverMs"], last["latency_ms"], len(result["items"]), last["from_earlier_answer"]))
        client.close()

    rows = rows[args.warmup :]
    rtt, handler, engine = ([r[i] for r in rows] for i in range(3))
    print(f"{len(rows)} {args.method} requests, typing {args.file.name} one character at a time "
          f"({statistics.mean(r[3] for r in rows):.1f} items each, {sum(r[4] for r in rows)} answered from the previous suggestion)")
    print(f"  client round trip         {pct(rtt)} ms")
    print(f"  server handler            {pct(handler)} ms")
    print(f"  engine (stats.latency_ms) {pct(engine)} ms")
    print(f"  protocol overhead         {pct([a - c for a, _, c in zip(rtt, handler, engine)])} ms   (round trip - engine)")
    print(f"    of which wire + JSON    {pct([a - b for a, b in zip(rtt, handler)])} ms   (round trip - handler)")
    print(f"    of which thread hop     {pct([b - c for b, c in zip(handler, engine)])} ms   (handler - engine)")


if __name__ == "__main__":
    main()
