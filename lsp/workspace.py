"""The workspace folders' Python files, as repository context for the engine.

Each folder the editor names is walked once in the background and then kept current from the
editor's events. What a user expects skipped is skipped: version control and tool folders,
virtual environments (any folder with a pyvenv.cfg), site-packages, node_modules, build output,
what .gitignore files ignore, symlinks (so no loops, and nothing outside the folder), files over
1 MB, binary and non-UTF-8 files; and at most `max_files` files and `max_mb` MB per folder. A
file that vanishes or cannot be read mid-walk is counted and skipped, never raised.

Open documents' text comes from the editor, never from disk. It reaches the engine's contexts
lazily: only when another file asks for a completion, so typing in one file rebuilds nothing.
All methods run on the event loop except `scan`, which a worker thread runs.
"""
from __future__ import annotations

import os
import stat
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from codecomplete.engine.ignores import IgnoreRules, skipped_dir

if TYPE_CHECKING:
    from codecomplete.engine.repo_context import RepoContext, RepoContextConfig
    from codecomplete.engine.tokenizer import Tokenizer

MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class Limits:
    max_files: int = 5000
    max_mb: float = 20.0


def read_python(path: Path) -> tuple[str | None, str]:
    """(text, "") or (None, why it was skipped)."""
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            return None, "symlink"
        if not stat.S_ISREG(info.st_mode):  # a pipe or a device would block the read or never end
            return None, "not a regular file"
        if info.st_size > MAX_FILE_BYTES:
            return None, "over 1 MB"
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "vanished"
    except OSError:
        return None, "unreadable"
    if b"\0" in data:
        return None, "binary"
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        return None, "not UTF-8"


@dataclass
class Scan:
    texts: dict[str, str]
    skipped: Counter
    rules: IgnoreRules
    seconds: float


def scan(root: Path, limits: Limits) -> Scan:
    """Walk root for Python files within limits; never raises for what it finds on the way."""
    t0, texts, skipped, rules, total = time.perf_counter(), {}, Counter(), IgnoreRules(root), 0
    full = False

    def on_error(error: OSError) -> None:
        skipped["unreadable folder" if not isinstance(error, FileNotFoundError) else "vanished"] += 1

    for folder, dirs, files in os.walk(root, onerror=on_error):  # never follows symlinked folders
        here = Path(folder)
        rules.add(here)
        dirs[:] = sorted(d for d in dirs if not (skipped_dir(here / d, d) or rules.ignored(here / d, True)))
        for name in sorted(files):
            path = here / name
            if not name.endswith(".py") or rules.ignored(path):
                continue
            if full:
                skipped["over the limits"] += 1
                continue
            text, why = read_python(path)
            if text is None:
                skipped[why] += 1
                continue
            texts[str(path)] = text
            total += len(text)
            full = len(texts) >= limits.max_files or total >= limits.max_mb * 2**20
    return Scan(texts, skipped, rules, time.perf_counter() - t0)


@dataclass
class Folder:
    root: Path
    limits: Limits
    texts: dict[str, str] = field(default_factory=dict)  # disk copies, and editor text once pushed
    rules: IgnoreRules | None = None
    skipped: Counter = field(default_factory=Counter)
    scan_s: float | None = None  # None while the first walk runs
    updated: float = 0.0
    contexts: dict[str, RepoContext] = field(default_factory=dict)  # per tokenizer (sha256)

    def accepts(self, path: Path) -> bool:
        if path.suffix != ".py" or not path.is_relative_to(self.root) or self.rules is None:
            return False
        parts = path.relative_to(self.root).parts[:-1]
        return not any(skipped_dir(self.root.joinpath(*parts[: i + 1]), p) for i, p in enumerate(parts)) \
            and not self.rules.ignored(path)

    def put(self, path: str, text: str | None) -> None:
        """A file's new text, or None: gone. Every context of the folder follows."""
        if text is None:
            if self.texts.pop(path, None) is None:
                return
        elif path not in self.texts and len(self.texts) >= self.limits.max_files:
            self.skipped["over the limits"] += 1
            return
        else:
            self.texts[path] = text
        self.updated = time.time()
        for context in self.contexts.values():
            if text is None:
                context.remove_file(path)
            else:
                context.set_file(path, text)


class Workspace:
    def __init__(self) -> None:
        self.folders: dict[Path, Folder] = {}
        self.limits = Limits()
        self.open: dict[str, list[str]] = {}  # path -> the editor's lines, for open documents
        self.pushed: dict[str, list[str]] = {}  # path -> the lines last given to the contexts

    def folder_of(self, path: str) -> Folder | None:
        """The innermost workspace folder that holds path; None for a file in none of them."""
        p = Path(path)
        inside = [f for root, f in self.folders.items() if p.is_relative_to(root)]
        return max(inside, key=lambda f: len(f.root.parts), default=None)

    def add(self, root: Path) -> Folder:
        folder = self.folders.setdefault(root, Folder(root, self.limits))
        return folder

    def remove(self, root: Path) -> None:
        self.folders.pop(root, None)

    def scanned(self, folder: Folder, result: Scan) -> None:
        """A walk's result; open documents have the editor's text instead of the disk's."""
        folder.rules, folder.skipped, folder.scan_s = result.rules, result.skipped, result.seconds
        for path, text in result.texts.items():
            if path not in self.open:
                folder.put(path, text)
        for path, lines in self.open.items():
            if folder.accepts(Path(path)):
                self.pushed[path] = lines
                folder.put(path, "".join(lines))

    # -- editor events -------------------------------------------------------------------------
    def opened(self, path: str, lines: list[str]) -> None:
        self.open[path] = lines

    def closed(self, path: str) -> None:
        """The editor lets go: the disk has the say again."""
        self.open.pop(path, None)
        self.pushed.pop(path, None)
        if (folder := self.folder_of(path)) is not None and folder.accepts(Path(path)):
            folder.put(path, read_python(Path(path))[0])

    def on_disk(self, path: str, deleted: bool) -> None:
        """A watched file was created, changed or deleted (a deleted folder takes its files)."""
        folder = self.folder_of(path)
        if folder is None or path in self.open:
            return
        if deleted:
            for known in [p for p in folder.texts if p == path or p.startswith(path.rstrip(os.sep) + os.sep)]:
                folder.put(known, None)
        elif folder.accepts(Path(path)):
            text, why = read_python(Path(path))
            if text is None and why:
                folder.skipped[why] += 1
            folder.put(path, text)

    def push_open(self, except_path: str) -> None:
        """Open documents edited since the last push, except the one asking (its own context
        leaves it out anyway), become the contexts' text."""
        for path, lines in self.open.items():
            if path != except_path and self.pushed.get(path) is not lines:
                self.pushed[path] = lines
                if (folder := self.folder_of(path)) is not None and folder.accepts(Path(path)):
                    folder.put(path, "".join(lines))

    def context(self, folder: Folder, tokenizer: Tokenizer, config: RepoContextConfig) -> RepoContext:
        """The folder's context for this tokenizer and config; a new one holds every file, unbuilt."""
        from codecomplete.engine.repo_context import RepoContext

        key = f"{tokenizer.sha256}:{hash(config)}"
        if key not in folder.contexts:
            context = RepoContext(tokenizer, config)
            for path, text in folder.texts.items():
                context.set_file(path, text)
            folder.contexts = {key: context}  # an older model's contexts go
        return folder.contexts[key]

    def describe(self) -> list[dict[str, object]]:
        out = []
        for f in self.folders.values():
            contexts = [c.describe() for c in f.contexts.values()]
            out.append({"folder": str(f.root), "files": len(f.texts), "mb": round(sum(map(len, f.texts.values())) / 2**20, 2),
                        "skipped": dict(f.skipped), "scanSeconds": f.scan_s and round(f.scan_s, 2),
                        "lastUpdate": f.updated, "index": contexts[0] if contexts else None})
        return out
