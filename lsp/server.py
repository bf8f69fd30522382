"""codecomplete-lsp: completions and inline (ghost-text) completions from the engine, over LSP.

Each handler is an adapter: LSP params -> lsp.text (positions, text at the cursor) -> the worker
(the engine, off the event loop) -> lsp.convert (LSP items). State lives on the server object:
open documents, settings, the worker and the acceptance log.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from codecomplete.lsp import __version__
from codecomplete.lsp.acceptance import AcceptanceLog, default_log_path
from codecomplete.lsp.adapt import ADAPT, Adapter
from codecomplete.lsp.convert import ACCEPTED, lsp_completion_items, lsp_inline_items, word_range
from codecomplete.lsp.indexer import Indexer, fs_path
from codecomplete.lsp.logs import log, progress, set_level, setup_logging
from codecomplete.lsp.settings import LOG_LEVELS, SECTION, Settings, checkpoint_path, overlay, section_of
from codecomplete.lsp.text import Document, cursor_at, position_index, replace, split_lines, text_around
from codecomplete.lsp.transport import Protocol, serve_stdio, serve_tcp
from codecomplete.lsp.worker import Request, Superseded, Worker

STATUS, RELOAD = "codecomplete.status", "codecomplete.reload"
TRIGGERS = [".", "(", "[", "{", ",", "="]  # besides identifier characters, which clients send anyway
ENGINE_STATS = ("latency_ms", "prompt_tokens", "reused_tokens", "from_earlier_answer")  # per request, in status


class CodecompleteServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("codecomplete-lsp", __version__, protocol_cls=Protocol)
        self.docs: dict[str, Document] = {}
        self.worker = Worker()
        self.indexer = Indexer(self)  # the workspace folders' files: repository context
        self.adapter = Adapter(self)  # codecomplete.adapt: fine-tuning on a workspace folder
        self.defaults = Settings()  # the command line's flags over the built-in defaults
        self.settings = Settings()
        self.sections: dict[str, dict | None] = {"initializationOptions": None,
                                                 "workspace settings": None}  # in the order they apply
        self.root: Path | None = None
        self.acceptance = AcceptanceLog(None)
        self.latencies: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self.wanted: tuple | None = None  # (checkpoint, device, threads) last asked for
        self.copy_index_setting: str | None = None  # the copyIndex value last applied
        self.load_error: str | None = None
        self.client_log = setup_logging(self, "info")
        self._shown: set[str] = set()  # warnings already shown, so a repeated push stays quiet
        self._tasks: set[asyncio.Task] = set()

    @property
    def encoding(self) -> str:
        """The position encoding agreed at initialize: pygls takes the client's first choice."""
        caps = getattr(self.protocol, "server_capabilities", None)
        enc = caps.position_encoding if caps else None
        return str(getattr(enc, "value", enc) or "utf-16")

    def at(self, doc: Document, position: types.Position) -> tuple[int, int]:
        """(row, code-point index) of a client position in doc, clamped into it."""
        return position_index(doc.lines, position.line, position.character, self.encoding)

    def show(self, kind: types.MessageType, message: str, once: bool = False) -> None:
        if once and message in self._shown:
            return
        self._shown.add(message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    def report_server_error(self, error: Exception, source: Any) -> None:
        # pygls calls this for errors outside a request (a bad frame, a failed send): pygls would
        # pop them up in the editor; stderr is the place, and cannot loop back into a send.
        logging.getLogger("codecomplete.wire").error("%s: %s", source.__name__, error)

    # -- settings and the model ----------------------------------------------------------------
    def apply_settings(self) -> None:
        s, warnings = self.defaults, []
        for origin, section in self.sections.items():
            s, more = overlay(s, section, origin)
            warnings += more
        self.settings = s
        set_level(s.log_level)
        self.worker.set_min_score(s.min_score)
        path = Path(s.acceptance_log_path).expanduser() if s.acceptance_log_path else default_log_path()
        self.acceptance = AcceptanceLog(path if s.acceptance_log else None)
        warnings += self.apply_copy_index(s.copy_index)
        if self.indexer.started:
            self.indexer.apply(s)
        if warnings:
            self.show(types.MessageType.Warning, "codecomplete: " + "; ".join(warnings), once=True)

    def apply_copy_index(self, setting: str | None) -> list[str]:
        """Load the copy index the setting names (once per value); a warning when it cannot."""
        if setting == self.copy_index_setting:
            return []
        self.copy_index_setting, index, warnings = setting, None, []
        if setting:
            from codecomplete.engine.copy_index import CopyIndex
            from codecomplete.engine.errors import CodecompleteError

            path = Path(setting).expanduser()
            path = path if path.is_absolute() or self.root is None else self.root / path
            try:
                index = CopyIndex.load(path)
                log.info("dropping suggestions copied from the training data (%s, %d hashes)", path, len(index))
            except CodecompleteError as e:
                warnings.append(f"{SECTION}.copyIndex: {e}; suggestions are not filtered")
        self.worker.set_copy_index(index)
        return warnings

    async def pull_settings(self) -> None:
        if not get_capability(self.client_capabilities, "workspace.configuration", False):
            return
        params = types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)])
        try:
            result = await asyncio.wait_for(self.workspace_configuration_async(params), 10)
        except Exception as e:  # noqa: BLE001 - a client that cannot answer keeps what we have
            log.warning("workspace/configuration failed: %s", e)
            return
        self.sections["workspace settings"] = result[0] if result and isinstance(result[0], dict) else None

    def settings_changed(self, force: bool = False) -> asyncio.Task | None:
        """Apply settings; load the model in the background when what it depends on changed."""
        self.apply_settings()
        s = self.settings
        key = (checkpoint_path(s, self.root), s.device, s.threads)
        if key == self.wanted and not force:
            return None
        self.wanted = key
        task = asyncio.ensure_future(self.load_model(*key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def load_model(self, path: Path, device: str, threads: int) -> None:
        explicit = self.settings.checkpoint or os.environ.get("CODECOMPLETE_CHECKPOINT")
        if not explicit and not path.exists():  # nothing shipped or trained yet: say how to get one
            self.load_error = (f"codecomplete: no model at {path}; set `{SECTION}.checkpoint` to a checkpoint "
                               "folder, or train one with `codecomplete-train quickstart`")
            self.show(types.MessageType.Warning, self.load_error, once=True)
            return
        async with progress(self, f"codecomplete: loading {path.name}") as end:
            try:
                info = await self.worker.load(path, device, threads)
            except Exception as e:  # noqa: BLE001 - any failure keeps the old model
                old, first = self.worker.model, (str(e).strip().splitlines() or [type(e).__name__])[0]
                keep = f"still serving {old.checkpoint}" if old else "completions are off until one loads"
                self.load_error = f"codecomplete: cannot load checkpoint {path}: {first}; {keep}"
                self.show(types.MessageType.Error, self.load_error)
                end["message"] = "failed"
                return
            self.load_error, end["message"] = None, "ready"
            self.indexer.warm()
            log.info("serving %s on %s (%.1fM parameters), loaded in %.0f ms", info.checkpoint, info.device,
                     info.params / 1e6, info.load_ms)

    # -- completions ---------------------------------------------------------------------------
    async def suggest(self, uri: str, kind: str, doc: Document, prefix: str, suffix: str,
                      n: int) -> tuple[str, list]:
        """(response id, ranked candidates); [] when superseded, without a model, or on an error."""
        s, t0, rid = self.settings, time.perf_counter(), uuid.uuid4().hex[:12]
        engine = self.worker.engine
        repo, path = self.indexer.context_for(uri, engine.tokenizer) if engine else (None, None)
        request = Request(prefix, suffix, n, s.max_new_tokens, s.multiline, s.temperature,
                          s.top_p if s.top_p < 1 else None, s.timeout_ms / 1000, repo, path)
        try:
            answer = await self.worker.complete((uri, kind), request)
        except Superseded:
            return rid, []
        except Exception as e:  # noqa: BLE001 - one bad request must not end the session
            log.error("%s failed: %s: %s", kind, type(e).__name__, e, exc_info=log.isEnabledFor(logging.DEBUG))
            return rid, []
        model, found = self.worker.model, len(answer.candidates)
        if answer.engine and model:
            ms = (time.perf_counter() - t0) * 1000
            stats = {k: answer.engine[k] for k in ENGINE_STATS}
            self.latencies.append({"kind": kind, "serverMs": round(ms, 2), "items": found, **stats})
            if found:
                self.acceptance.shown(rid, kind, found, ms, model.checkpoint, doc.language_id)
        return rid, answer.candidates

    def status(self) -> dict[str, Any]:
        m = self.worker.model
        return {
            "version": __version__,
            "ready": self.worker.engine is not None,
            "model": m and {"checkpoint": m.checkpoint, "device": m.device, "params": m.params,
                            "config": m.config, "loadMs": round(m.load_ms, 1)},
            "loading": self.worker.loading,
            "error": self.load_error,
            "settings": self.settings.to_wire(),
            "positionEncoding": self.encoding,
            "documents": {u: {"version": d.version, "lines": len(d.lines), "chars": d.chars}
                          for u, d in self.docs.items()},
            "latencies": list(self.latencies),
            "acceptanceLog": str(self.acceptance.path) if self.acceptance.path else None,
            "workspace": self.indexer.workspace.describe(),
        }


server = CodecompleteServer()


@server.feature(types.INITIALIZE)
def initialize(ls: CodecompleteServer, params: types.InitializeParams) -> None:
    ls.client_log.loop = asyncio.get_running_loop()
    ls.sections["initializationOptions"] = section_of(params.initialization_options)
    folders = params.workspace_folders or []
    root = params.root_uri or (folders[0].uri if folders else None)
    path = to_fs_path(root) if root else params.root_path
    ls.root = Path(path) if path else None
    ls.indexer.roots = [Path(to_fs_path(f.uri)) for f in folders] or ([ls.root] if ls.root else [])
    ls.apply_settings()


@server.feature(types.INITIALIZED)
async def initialized(ls: CodecompleteServer, params: types.InitializedParams) -> None:
    await ls.pull_settings()
    ls.settings_changed()  # loads and warms up the model in the background, with $/progress
    await ls.indexer.start()  # walks the workspace folders in the background, watches *.py


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def did_change_configuration(ls: CodecompleteServer,
                                   params: types.DidChangeConfigurationParams) -> None:
    section = section_of(params.settings, wrapped=True)
    if section is None:  # an empty push means "ask me"
        await ls.pull_settings()
    else:
        ls.sections["workspace settings"] = section
    ls.settings_changed()


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: CodecompleteServer, params: types.DidOpenTextDocumentParams) -> None:
    d = params.text_document
    ls.docs[d.uri] = Document(split_lines(d.text), d.version, d.language_id)
    if path := fs_path(d.uri):
        ls.indexer.workspace.opened(path, ls.docs[d.uri].lines)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: CodecompleteServer, params: types.DidChangeTextDocumentParams) -> None:
    doc = ls.docs.get(params.text_document.uri)
    if doc is None:
        log.debug("didChange for %s, which is not open", params.text_document.uri)
        return
    for change in params.content_changes:
        if isinstance(change, types.TextDocumentContentChangePartial):
            start, end = ls.at(doc, change.range.start), ls.at(doc, change.range.end)
            doc.lines = replace(doc.lines, start, end, change.text)
        else:
            doc.lines = split_lines(change.text)
    doc.version = params.text_document.version
    if path := fs_path(params.text_document.uri):
        ls.indexer.workspace.opened(path, doc.lines)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: CodecompleteServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.docs.pop(params.text_document.uri, None)
    if path := fs_path(params.text_document.uri):
        ls.indexer.workspace.closed(path)


@server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
def did_change_watched_files(ls: CodecompleteServer, params: types.DidChangeWatchedFilesParams) -> None:
    for change in params.changes:
        if path := fs_path(change.uri):
            ls.indexer.workspace.on_disk(path, deleted=change.type == types.FileChangeType.Deleted)


@server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
def did_change_workspace_folders(ls: CodecompleteServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
    ls.indexer.folders_changed([Path(to_fs_path(f.uri)) for f in params.event.added],
                               [Path(to_fs_path(f.uri)) for f in params.event.removed])


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=TRIGGERS))
async def completion(ls: CodecompleteServer, params: types.CompletionParams) -> types.CompletionList:
    items: list[types.CompletionItem] = []
    if (doc := ls.docs.get(params.text_document.uri)) is not None:
        cursor = cursor_at(doc.lines, params.position.line, params.position.character, ls.encoding)
        prefix, suffix = text_around(doc.lines, cursor.row, cursor.index)
        n = ls.settings.num_suggestions
        rid, candidates = await ls.suggest(params.text_document.uri, "completion", doc, prefix, suffix, n)
        items = lsp_completion_items(candidates, word_range(cursor), cursor.word, rid)
    return types.CompletionList(is_incomplete=True, items=items)  # ask again as the user types


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: CodecompleteServer,
                            params: types.InlineCompletionParams) -> types.InlineCompletionList:
    if (doc := ls.docs.get(params.text_document.uri)) is None:
        return types.InlineCompletionList(items=[])
    automatic = params.context.trigger_kind == types.InlineCompletionTriggerKind.Automatic
    selected = params.context.selected_completion_info
    if selected is not None and selected.range.start.line == selected.range.end.line:
        # The menu's selected item counts as typed: extend its text, over its range.
        prefix = text_around(doc.lines, *ls.at(doc, selected.range.start))[0] + selected.text
        suffix = text_around(doc.lines, *ls.at(doc, selected.range.end))[1]
        span, typed = selected.range, selected.text
    else:
        cursor = cursor_at(doc.lines, params.position.line, params.position.character, ls.encoding)
        prefix, suffix = text_around(doc.lines, cursor.row, cursor.index)
        span, typed = word_range(cursor), cursor.word
    n = 1 if automatic else ls.settings.num_suggestions  # invoked: several, for cycling
    rid, candidates = await ls.suggest(params.text_document.uri, "inline", doc, prefix, suffix, n)
    return types.InlineCompletionList(items=lsp_inline_items(candidates, span, typed, rid))


@server.command(STATUS)
def status(ls: CodecompleteServer, *args: Any) -> dict[str, Any]:
    return ls.status()


@server.command(RELOAD)
async def reload(ls: CodecompleteServer, *args: Any) -> dict[str, Any]:
    """Read the settings again and reload the checkpoint (say, after training wrote a new one)."""
    await ls.pull_settings()
    if (task := ls.settings_changed(force=True)) is not None:
        await task
    return ls.status()


@server.command(ADAPT)
async def adapt(ls: CodecompleteServer, *args: Any) -> dict[str, Any]:
    """Fine-tune the served model on a workspace folder (lsp/adapt.py). The client then sets the
    checkpoint setting to the result's; when it is the one served already, reload it here."""
    served = ls.worker.model.checkpoint if ls.worker.model else None
    result = await ls.adapter.run(args[0] if args else None, Path(served) if served else None)
    if "checkpoint" in result and ls.wanted and ls.wanted[0].resolve() == Path(result["checkpoint"]):
        ls.settings_changed(force=True)
    return result


@server.command(ACCEPTED)
def accepted(ls: CodecompleteServer, *args: Any) -> None:
    for a in args:
        if isinstance(a, dict) and "id" in a:  # the arguments lsp.convert put in the item's command
            ls.acceptance.accepted(str(a["id"]), str(a.get("kind", "")), int(a.get("rank", 0)),
                                   int(a.get("chars", 0)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="codecomplete-lsp", description="Language Server for "
                                     "codecomplete: code completions from a checkpoint you trained.")
    parser.add_argument("--stdio", action="store_true", help="speak LSP on stdin/stdout (the default)")
    parser.add_argument("--tcp", metavar="HOST:PORT", help="listen on HOST:PORT for one client instead")
    parser.add_argument("--checkpoint", help="checkpoint folder; the editor's codecomplete.checkpoint wins")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="stderr and window/logMessage")
    parser.add_argument("--clientProcessId", help=argparse.SUPPRESS)  # some clients append it
    parser.add_argument("--version", action="version", version=f"codecomplete-lsp {__version__}")
    args = parser.parse_args(argv)
    host, _, port = (args.tcp or "").rpartition(":")
    if args.tcp and not (host and port.isdigit()):
        parser.error(f"--tcp wants HOST:PORT, e.g. 127.0.0.1:2087, not {args.tcp!r}")
    server.defaults = Settings(checkpoint=args.checkpoint, log_level=args.log_level)
    set_level(args.log_level)
    code = serve_tcp(server, host, int(port)) if args.tcp else serve_stdio(server)
    server.worker.shutdown()
    server.indexer.shutdown()
    server.adapter.shutdown()
    sys.stderr.flush()
    os._exit(code)  # a model still loading in its thread must not hold the editor's exit


if __name__ == "__main__":
    main()
