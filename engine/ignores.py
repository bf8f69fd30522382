"""What a walk of a project skips: tool and build folders, virtual environments, .gitignore.

Shared by the language server's workspace index (lsp/workspace.py) and `adapt`'s collection of a
project's files (train/), so both see the same project.
"""
from __future__ import annotations

from pathlib import Path

import pathspec

SKIP_DIRS = {".git", ".hg", ".svn", ".bzr", "node_modules", "__pycache__", "site-packages", "dist-packages",
             "build", "dist", ".eggs", ".tox", ".nox", ".venv", "venv", ".mypy_cache", ".pytest_cache",
             ".ruff_cache", ".ipynb_checkpoints", ".idea", ".vscode"}


class IgnoreRules:
    """The .gitignore files met on the way down: the deepest one that has a say decides."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.specs: list[tuple[Path, pathspec.GitIgnoreSpec]] = []

    def add(self, folder: Path) -> None:
        try:
            lines = (folder / ".gitignore").read_text("utf-8", errors="replace").splitlines()
        except OSError:
            return
        self.specs.append((folder, pathspec.GitIgnoreSpec.from_lines(lines)))
        self.specs.sort(key=lambda s: len(s[0].parts), reverse=True)

    def ignored(self, path: Path, is_dir: bool = False) -> bool:
        for base, spec in self.specs:
            if path.is_relative_to(base) and path != base:
                rel = path.relative_to(base).as_posix() + ("/" if is_dir else "")
                if (verdict := spec.check_file(rel).include) is not None:
                    return verdict
        return False


def skipped_dir(path: Path, name: str) -> bool:
    return name in SKIP_DIRS or name.endswith(".egg-info") or (path / "pyvenv.cfg").exists()
