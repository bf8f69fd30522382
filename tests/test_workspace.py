"""The workspace index behind repository context: what it reads, what it skips, what it keeps current."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from codecomplete.lsp import workspace
from codecomplete.lsp.workspace import Limits, Workspace, scan


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def names(root: Path, texts: dict[str, str]) -> set[str]:
    return {Path(p).relative_to(root).as_posix() for p in texts}


def test_a_walk_keeps_the_project_and_skips_what_users_expect_skipped(tmp_path: Path) -> None:
    write(tmp_path, {
        "pkg/core.py": "def core():\n    pass\n",
        "pkg/sub/util.py": "X = 1\n",
        "notes.txt": "not python",
        ".git/hooks/pre.py": "x", "node_modules/m/a.py": "x", "build/lib/a.py": "x", "pkg/__pycache__/c.py": "x",
        "lib/site-packages/dep.py": "x", "my-env/pyvenv.cfg": "home = /usr", "my-env/lib/tool.py": "x",
        "pkg.egg-info/x.py": "x", ".venv/lib/v.py": "x",
        ".gitignore": "generated/\n*_pb2.py\n!keep_pb2.py\n", "generated/g.py": "x", "pkg/api_pb2.py": "x",
        "pkg/keep_pb2.py": "KEEP = 1\n", "pkg/sub/.gitignore": "local.py\n", "pkg/sub/local.py": "x",
        "big.py": "x = 1\n" * 200_000, "latin1.py": "s = 'caf\xe9'\n".encode("latin-1"), "nul.py": b"x = 1\0\n",
    })
    result = scan(tmp_path, Limits())
    assert names(tmp_path, result.texts) == {"pkg/core.py", "pkg/sub/util.py", "pkg/keep_pb2.py"}
    assert result.skipped == {"over 1 MB": 1, "not UTF-8": 1, "binary": 1}


def test_hostile_trees_are_skipped_never_raised(tmp_path: Path, monkeypatch) -> None:
    write(tmp_path, {"ok.py": "A = 1\n", "loop/inner.py": "B = 2\n", "secret.py": "S = 1\n"})
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(PermissionError(13, "denied"))
                        if self.name == "secret.py" else real(self))  # root reads anything: refuse it here
    (tmp_path / "loop" / "again").symlink_to(tmp_path, target_is_directory=True)  # a symlink loop
    (tmp_path / "outside.py").symlink_to("/etc/hostname")  # a file of somewhere else
    os.mkfifo(tmp_path / "pipe.py")  # reading it would block forever
    with open(tmp_path / "huge.py", "wb") as f:
        f.truncate(50 * 2**20)  # 50 MB, sparse: never read
    result = scan(tmp_path, Limits())
    assert names(tmp_path, result.texts) == {"ok.py", "loop/inner.py"}
    assert result.skipped == {"symlink": 1, "not a regular file": 1, "over 1 MB": 1, "unreadable": 1}


def test_a_folder_removed_while_it_is_walked_is_counted_and_skipped(tmp_path: Path, monkeypatch) -> None:
    write(tmp_path, {"a/first.py": "A = 1\n", "b/doomed.py": "B = 2\n", "c/last.py": "C = 3\n"})
    real = workspace.read_python

    def read_and_remove_b(path: Path):  # the walk reads a/ before it lists b/
        if (tmp_path / "b").exists():
            (tmp_path / "b" / "doomed.py").unlink()
            (tmp_path / "b").rmdir()
        return real(path)

    monkeypatch.setattr(workspace, "read_python", read_and_remove_b)
    result = scan(tmp_path, Limits())
    assert names(tmp_path, result.texts) == {"a/first.py", "c/last.py"} and result.skipped == {"vanished": 1}


def test_limits_bound_files_and_megabytes(tmp_path: Path) -> None:
    write(tmp_path, {f"m{i:02d}.py": f"X{i} = {i}\n" * 1000 for i in range(10)})  # ~9 KB each
    assert len(scan(tmp_path, Limits(max_files=4)).texts) == 4
    capped = scan(tmp_path, Limits(max_mb=20_000 / 2**20))
    assert len(capped.texts) == 3 and capped.skipped["over the limits"] == 7


def test_open_documents_win_over_disk_until_closed(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": "ON_DISK = 1\n", "b.py": "B = 1\n"})
    ws = Workspace()
    folder = ws.add(tmp_path)
    a = str(tmp_path / "a.py")
    ws.opened(a, ["IN_EDITOR = 1\n"])
    ws.opened(str(tmp_path / "new.py"), ["NEW = 1\n"])  # not saved yet
    ws.scanned(folder, scan(tmp_path, ws.limits))
    assert folder.texts[a] == "IN_EDITOR = 1\n" and folder.texts[str(tmp_path / "new.py")] == "NEW = 1\n"
    ws.opened(a, ["TYPED = 1\n"])
    assert folder.texts[a] == "IN_EDITOR = 1\n"  # not pushed yet: only when another file asks for context
    ws.push_open(except_path=str(tmp_path / "b.py"))
    assert folder.texts[a] == "TYPED = 1\n"
    ws.opened(a, ["TYPED = 2\n"])
    ws.push_open(except_path=a)  # the asking file's own text is not its context: nothing moves
    assert folder.texts[a] == "TYPED = 1\n"
    ws.closed(a)
    assert folder.texts[a] == "ON_DISK = 1\n"


def test_documents_belong_to_the_innermost_folder_and_files_elsewhere_to_none(tmp_path: Path) -> None:
    write(tmp_path, {"outer/x.py": "X = 1\n", "outer/inner/y.py": "Y = 1\n", "elsewhere/z.py": "Z = 1\n"})
    ws = Workspace()
    outer, inner = ws.add(tmp_path / "outer"), ws.add(tmp_path / "outer" / "inner")
    assert ws.folder_of(str(tmp_path / "outer" / "inner" / "y.py")) is inner
    assert ws.folder_of(str(tmp_path / "outer" / "x.py")) is outer
    assert ws.folder_of(str(tmp_path / "elsewhere" / "z.py")) is None


def test_watched_file_events_keep_the_index_current(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": "A = 1\n", "pkg/b.py": "B = 1\n", ".gitignore": "ignored.py\n"})
    ws = Workspace()
    folder = ws.add(tmp_path)
    ws.scanned(folder, scan(tmp_path, ws.limits))
    write(tmp_path, {"new.py": "NEW = 1\n", "ignored.py": "I = 1\n", "node_modules/n.py": "N = 1\n"})
    for rel in ("new.py", "ignored.py", "node_modules/n.py"):
        ws.on_disk(str(tmp_path / rel), deleted=False)
    assert names(tmp_path, folder.texts) == {"a.py", "pkg/b.py", "new.py"}
    write(tmp_path, {"a.py": "A = 2\n"})
    ws.on_disk(str(tmp_path / "a.py"), deleted=False)
    assert folder.texts[str(tmp_path / "a.py")] == "A = 2\n"
    ws.on_disk(str(tmp_path / "pkg"), deleted=True)  # a folder's deletion takes its files
    ws.on_disk(str(tmp_path / "new.py"), deleted=True)
    assert names(tmp_path, folder.texts) == {"a.py"}


@pytest.mark.parametrize("event", ["created", "opened"])
def test_the_limits_hold_for_files_that_arrive_later(tmp_path: Path, event: str) -> None:
    write(tmp_path, {"a.py": "A = 1\n", "b.py": "B = 1\n"})
    ws = Workspace()
    ws.limits = Limits(max_files=2)
    folder = ws.add(tmp_path)
    ws.scanned(folder, scan(tmp_path, ws.limits))
    write(tmp_path, {"c.py": "C = 1\n"})
    if event == "created":
        ws.on_disk(str(tmp_path / "c.py"), deleted=False)
    else:
        ws.opened(str(tmp_path / "c.py"), ["C = 1\n"])
        ws.push_open(except_path=str(tmp_path / "a.py"))
    assert len(folder.texts) == 2 and folder.skipped["over the limits"] == 1
