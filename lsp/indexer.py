"""Repository context in the server: walks and builds off the event loop, one at a time.

The workspace (lsp/workspace.py) holds the folders' files; this schedules their walks (with
$/progress and one summary line each) and the builds of the engine's contexts. A build is asked
for when a completion finds its context stale, so typing in one file never rebuilds anything,
and the request goes on with the context as last built: no completion waits for an index.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.uris import to_fs_path

from codecomplete.lsp.logs import log, progress
from codecomplete.lsp.workspace import Folder, Limits, Workspace, scan

if TYPE_CHECKING:
    from codecomplete.engine.repo_context import RepoContext, RepoContextConfig
    from codecomplete.engine.tokenizer import Tokenizer
    from codecomplete.lsp.settings import Settings


def fs_path(uri: str) -> str | None:
    return to_fs_path(uri) if uri.startswith("file:") else None


class Indexer:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.workspace = Workspace()
        self.roots: list[Path] = []  # the folders the editor named, indexed or not
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="codecomplete-index")
        self._building: dict[int, bool] = {}  # id(context) -> asked again while building
        self._tasks: set[asyncio.Future] = set()
        self.started = False  # after `initialized`: no request to the client before it

    async def start(self) -> None:
        """Walk the folders, and ask the client to report *.py changes on disk."""
        self.started = True
        self.apply(self.server.settings)
        caps = self.server.client_capabilities
        if get_capability(caps, "workspace.did_change_watched_files.dynamic_registration", False):
            watch = types.DidChangeWatchedFilesRegistrationOptions([types.FileSystemWatcher(glob_pattern="**/*.py")])
            registration = types.Registration("codecomplete-watch-py", types.WORKSPACE_DID_CHANGE_WATCHED_FILES, watch)
            try:
                await asyncio.wait_for(self.server.client_register_capability_async(
                    types.RegistrationParams([registration])), 10)
            except Exception as e:  # noqa: BLE001 - the editor's own events still keep open files current
                log.warning("could not watch *.py files for changes on disk: %s", e)

    def apply(self, settings: Settings) -> None:
        """repoContext off: no index; on, or new limits: walk every folder (again)."""
        limits = Limits(settings.repo_context_max_files, settings.repo_context_max_mb)
        if not settings.repo_context:
            self.workspace.folders.clear()
            return
        if limits != self.workspace.limits:
            self.workspace.limits = limits
            self.workspace.folders.clear()
        for root in self.roots:
            if root not in self.workspace.folders:
                self._later(self.index(root))

    def folders_changed(self, added: list[Path], removed: list[Path]) -> None:
        self.roots = [r for r in self.roots if r not in removed] + [a for a in added if a not in self.roots]
        for root in removed:
            self.workspace.remove(root)
        self.apply(self.server.settings)

    async def index(self, root: Path) -> None:
        folder = self.workspace.add(root)
        async with progress(self.server, f"codecomplete: indexing {root.name}") as end:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, scan, root, folder.limits)
            if self.workspace.folders.get(root) is not folder:
                return  # removed, or limits changed, while it walked
            self.workspace.scanned(folder, result)
            self.warm()
            mb = sum(map(len, folder.texts.values())) / 2**20
            end["message"] = f"{len(folder.texts)} files, {mb:.1f} MB"
        skipped = ", ".join(f"{why} {n}" for why, n in sorted(result.skipped.items()))
        log.info("indexed %s: %d Python files (%.1f MB) in %.1f s%s", root, len(folder.texts), mb, result.seconds,
                 f"; skipped {skipped}" if skipped else "")

    def warm(self) -> None:
        """Build the contexts of every indexed folder for the model being served, ahead of the
        first completion (after a walk, after a model loads)."""
        engine = self.server.worker.engine
        if engine is None or not self.server.settings.repo_context:
            return
        for folder in self.workspace.folders.values():
            if folder.scan_s is not None:
                context = self.workspace.context(folder, engine.tokenizer, self.config())
                if context.stale:
                    self._build(folder, context)

    def config(self) -> RepoContextConfig:
        from codecomplete.engine.repo_context import RepoContextConfig

        s = self.server.settings
        return RepoContextConfig(snippets=s.repo_snippets, project_ngrams=s.repo_ngrams)

    def context_for(self, uri: str, tokenizer: Tokenizer) -> tuple[RepoContext | None, str | None]:
        """The document's folder's context (as last built) and the document's path in it."""
        path = fs_path(uri)
        folder = self.workspace.folder_of(path) if path and self.server.settings.repo_context else None
        if folder is None or folder.scan_s is None:
            return None, path
        self.workspace.push_open(path)
        context = self.workspace.context(folder, tokenizer, self.config())
        if context.stale:
            self._build(folder, context)
        return (context if context.snapshot is not None else None), path

    def _build(self, folder: Folder, context: RepoContext) -> None:
        if id(context) in self._building:
            self._building[id(context)] = True
            return
        self._building[id(context)] = False

        async def build() -> None:
            try:
                snap = await asyncio.get_running_loop().run_in_executor(self._executor, context.build)
                log.debug("repository context of %s: %d files, %d tokens, %.2f s", folder.root, snap.stats["files"],
                          snap.stats["tokens"], snap.stats["build_s"])
            except Exception as e:  # noqa: BLE001 - completions go on with the last context
                log.error("repository context of %s failed to build: %s: %s", folder.root, type(e).__name__, e)
            if self._building.pop(id(context), False) and context.stale:
                self._build(folder, context)

        self._later(build())

    def _later(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
