"""The LSP server's pure parts, table by table: text and positions, settings, items, the log."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lsprotocol import types

from codecomplete.lsp.acceptance import AcceptanceLog, acceptance_rate, default_log_path
from codecomplete.lsp.convert import lsp_completion_items, lsp_inline_items, word_range
from codecomplete.lsp.settings import Settings, checkpoint_path, overlay, section_of
from codecomplete.lsp.text import (
    GRID,
    column_to_index,
    cursor_at,
    index_to_column,
    label_of,
    position_index,
    replace,
    split_lines,
    text_around,
)


# -- lines and positions ------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "lines"), [
    ("", [""]),
    ("a", ["a"]),
    ("a\n", ["a\n", ""]),
    ("a\r\nb\rc\n", ["a\r\n", "b\r", "c\n", ""]),
    ("\n\n", ["\n", "\n", ""]),
    ("a\x0cb\x1cc\u2028d\n", ["a\x0cb\x1cc\u2028d\n", ""]),  # not line breaks to an editor
])
def test_split_lines(text: str, lines: list[str]) -> None:
    assert split_lines(text) == lines and "".join(lines) == text


LINE = 'x = "😀漢é" + ab'  # 😀: 1 code point, 2 UTF-16 units, 4 UTF-8 bytes; 漢: 1/1/3; é: 1/1/2


@pytest.mark.parametrize(("encoding", "column", "index"), [
    ("utf-16", 0, 0), ("utf-16", 5, 5), ("utf-16", 6, 5), ("utf-16", 7, 6), ("utf-16", 8, 7),
    ("utf-16", 99, len(LINE)), ("utf-16", -3, 0),
    ("utf-8", 5, 5), ("utf-8", 7, 5), ("utf-8", 9, 6), ("utf-8", 12, 7), ("utf-8", 14, 8),
    ("utf-32", 6, 6), ("utf-32", 99, len(LINE)),
])
def test_column_to_index_rounds_down_inside_a_character(encoding: str, column: int, index: int) -> None:
    assert column_to_index(LINE, column, encoding) == index


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8", "utf-32"])
def test_index_and_column_round_trip(encoding: str) -> None:
    codec = {"utf-16": "utf-16-le", "utf-8": "utf-8", "utf-32": "utf-32-le"}[encoding]
    unit = {"utf-16": 2, "utf-8": 1, "utf-32": 4}[encoding]
    for i in range(len(LINE) + 1):
        column = index_to_column(LINE, i, encoding)
        assert column == len(LINE[:i].encode(codec)) // unit
        assert column_to_index(LINE, column, encoding) == i


@pytest.mark.parametrize(("line", "character", "expected"), [
    (0, 3, (0, 3)), (1, 99, (1, 2)), (2, 0, (2, 0)), (99, 0, (2, 0)), (1, 1, (1, 1)),
])
def test_positions_are_clamped_into_the_document(line: int, character: int, expected: tuple[int, int]) -> None:
    assert position_index(split_lines("abcd\r\nef\n"), line, character) == expected


@pytest.mark.parametrize(("line", "index", "word"), [
    ("foo.ba", 6, "ba"), ("    return", 10, "return"), ("    ", 4, ""), ("x = 漢字", 6, "漢字"),
    ("f(a_1", 5, "a_1"), ("abc def", 5, "d"), ("x😀y", 3, "y"),
])
def test_cursor_word_before_the_cursor(line: str, index: int, word: str) -> None:
    c = cursor_at([line], 0, index_to_column(line, index))
    assert (c.word, c.index - c.word_start) == (word, len(word))
    assert c.word_column == index_to_column(line, c.word_start) and c.column == index_to_column(line, index)


@pytest.mark.parametrize(("text", "start", "end", "new", "expected"), [
    ("abc\ndef", (0, 1), (0, 2), "XY", "aXYc\ndef"),
    ("abc\ndef", (0, 1), (1, 1), "", "aef"),  # across a line break
    ("abc\ndef", (1, 3), (1, 3), "\n", "abc\ndef\n"),  # at the very end
    ("abc\r\ndef", (0, 3), (0, 3), "!", "abc!\r\ndef"),  # before a CRLF
    ("a\rb", (1, 0), (1, 0), "\nx", "a\r\nxb"),  # a lone CR meets the LF typed after it
    ("a\r\nb", (0, 1), (1, 0), "", "ab"),
    ("abc", (0, 2), (0, 0), "", "c"),  # start and end reversed
])
def test_replace(text: str, start: tuple, end: tuple, new: str, expected: str) -> None:
    lines = replace(split_lines(text), start, end, new)
    assert "".join(lines) == expected and lines == split_lines(expected)


def offset(lines: list[str], row: int, index: int) -> int:
    return sum(map(len, lines[:row])) + index


@given(st.text("ab\r\n😀", max_size=20), st.data())
def test_replace_is_a_splice_of_the_text(text: str, data: st.DataObject) -> None:
    lines = split_lines(text)
    points = []
    for _ in range(2):
        row = data.draw(st.integers(0, len(lines) - 1))
        index = data.draw(st.integers(0, len(lines[row].rstrip("\r\n"))))
        points.append((row, index))
    new = data.draw(st.text("x\r\n", max_size=4))
    a, b = sorted(offset(lines, *p) for p in points)
    result = replace(lines, points[0], points[1], new)
    assert "".join(result) == text[:a] + new + text[b:]
    assert result == split_lines(text[:a] + new + text[b:])  # the line structure an editor sees


def test_text_around_small_document_is_everything() -> None:
    lines = split_lines("def f(x):\n    return x\n")
    assert text_around(lines, 1, 4) == ("def f(x):\n    ", "return x\n")


def test_text_around_a_big_document_is_a_window_that_typing_keeps() -> None:
    text = "".join(f"value_{i} = {i} * 2\n" for i in range(20_000))  # ~370K characters
    lines = split_lines(text)
    row = 15_000
    prefix, suffix = text_around(lines, row, 4, prefix_chars=64_000, suffix_chars=8_000)
    assert 64_000 <= len(prefix) <= 64_000 + 256 * 20 and prefix.startswith("value_") and prefix.endswith("valu")
    assert suffix.startswith("e_15000") and len(suffix) == 8_000
    typed = replace(lines, (row, 4), (row, 4), "xyz")
    prefix2, suffix2 = text_around(typed, row, 7, prefix_chars=64_000, suffix_chars=8_000)
    assert prefix2 == prefix[:-4] + "valuxyz" and suffix2 == suffix  # same start: the prompt cache holds


def test_text_around_one_enormous_line_is_cut_inside_it() -> None:
    lines = ["x" * 300_000]
    prefix, suffix = text_around(lines, 0, 200_000, prefix_chars=64_000, suffix_chars=8_000)
    assert 64_000 <= len(prefix) <= 64_000 + GRID and len(suffix) == 8_000
    assert text_around(["x" * 300_000], 0, 200_001, 64_000, 8_000)[0] == prefix + "x"  # typing keeps the cut


@pytest.mark.parametrize(("text", "label"), [
    ("return x", "return x"),
    ("if x:\n    return 1", "if x:…"),
    ("\n    return 1", "⏎ return 1"),
    ("\n\n    a = 1\n    b = 2", "⏎ a = 1…"),
    ("y" * 80, "y" * 59 + "…"),
])
def test_label_of(text: str, label: str) -> None:
    assert label_of(text) == label


# -- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "changed", "warned"), [
    ({"maxNewTokens": 16, "temperature": 0.2, "multiline": True}, {"max_new_tokens": 16, "temperature": 0.2, "multiline": True}, []),
    ({"max_new_tokens": 16, "topP": 0.9, "numSuggestions": 5.0}, {"max_new_tokens": 16, "top_p": 0.9, "num_suggestions": 5}, []),
    ({"device": "CPU", "logLevel": "warn", "checkpoint": None}, {"device": "cpu", "log_level": "warning"}, []),
    ({"maxNewTokens": "48"}, {}, ["maxNewTokens"]),
    ({"multiline": 1, "numSuggestions": True, "temperature": -1}, {}, ["multiline", "numSuggestions", "temperature"]),
    ({"device": "tpu", "numSuggestions": 0, "topP": 0}, {}, ["device", "numSuggestions", "topP"]),
    ({"noSuchKey": 1, "trace": {"server": "verbose"}, "server": {"command": ["x"]}}, {}, ["noSuchKey"]),
    ({"maxNewTokens": None, "acceptanceLogPath": None}, {}, []),  # an editor's "unset"
])
def test_overlay_keeps_good_values_and_warns_about_bad_ones(raw: dict, changed: dict, warned: list[str]) -> None:
    base = Settings()
    settings, warnings = overlay(base, raw, "test")
    assert {k: v for k, v in vars(settings).items() if getattr(base, k) != v} == changed
    assert len(warnings) == len(warned) and all(f"codecomplete.{k}" in w for k, w in zip(warned, warnings))


@pytest.mark.parametrize(("raw", "wrapped", "section"), [
    ({"checkpoint": "a"}, False, {"checkpoint": "a"}),
    ({"codecomplete": {"checkpoint": "a"}}, False, {"checkpoint": "a"}),
    ({"codecomplete": {"checkpoint": "a"}, "other": {}}, True, {"checkpoint": "a"}),
    ({"checkpoint": "a"}, True, None),  # a push must name the section
    ({"python": {"x": 1}}, True, None),
    (None, False, None), ({}, False, None), ([1], False, None), ({"codecomplete": None}, False, None),
])
def test_section_of(raw: object, wrapped: bool, section: dict | None) -> None:
    assert section_of(raw, wrapped) == section


def test_settings_on_the_wire_are_camel_case() -> None:
    wire = Settings().to_wire()
    assert {"maxNewTokens", "numSuggestions", "topP", "acceptanceLogPath"} <= set(wire)
    assert overlay(Settings(), wire, "round trip") == (Settings(), [])


def test_checkpoint_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODECOMPLETE_CHECKPOINT", raising=False)
    assert checkpoint_path(Settings(), None).parts[-2:] == ("models", "default")
    monkeypatch.setenv("CODECOMPLETE_CHECKPOINT", str(tmp_path / "env"))
    assert checkpoint_path(Settings(), None) == tmp_path / "env"
    assert checkpoint_path(Settings(checkpoint="runs/best"), tmp_path) == tmp_path / "runs" / "best"
    assert checkpoint_path(Settings(checkpoint="/abs/ckpt"), tmp_path) == Path("/abs/ckpt")


# -- items --------------------------------------------------------------------------------------
@dataclass
class Cand:
    text: str
    score: float


CANDIDATES = [Cand("nge(10):", -0.4), Cand("nge(n):\n    pass", -0.9), Cand("\n    i += 1", -1.5)]


def test_completion_items() -> None:
    cursor = cursor_at(["    for i in ra"], 0, 15)
    span = word_range(cursor)
    items = lsp_completion_items(CANDIDATES, span, cursor.word, "id1")
    assert [i.label for i in items] == ["range(10):", "range(n):…", "ra…"]
    assert [i.sort_text for i in items] == ["0000", "0001", "0002"]
    assert [i.text_edit.new_text for i in items] == ["range(10):", "range(n):\n    pass", "ra\n    i += 1"]
    assert all(i.text_edit.range == types.Range(types.Position(0, 13), types.Position(0, 15)) for i in items)
    assert [i.filter_text for i in items] == ["range(10):", "range(n):", "ra"]
    assert items[0].documentation is None and items[1].documentation == "range(n):\n    pass"
    assert items[1].detail.endswith("score -0.90")
    assert items[2].command.arguments == [{"id": "id1", "kind": "completion", "rank": 2, "chars": 11}]


def test_inline_items() -> None:
    span = types.Range(types.Position(3, 4), types.Position(3, 6))
    items = lsp_inline_items(CANDIDATES[:2], span, "ra", "id2")
    assert [i.insert_text for i in items] == ["range(10):", "range(n):\n    pass"]
    assert all(i.range == span for i in items)
    assert items[1].command.command == "codecomplete.accepted" and items[1].command.arguments[0]["rank"] == 1


# -- the acceptance log -------------------------------------------------------------------------
def test_acceptance_log_and_rate(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "acceptance.jsonl"
    log = AcceptanceLog(path)
    for i in range(4):
        log.shown(f"c{i}", "completion", 3, 12.5, "ckpt", "python")
    log.shown("i0", "inline", 1, 8.0, "ckpt", "python")
    log.shown("i1", "inline", 0, 8.0, "ckpt", "python")  # nothing to show: not counted
    log.accepted("c1", "completion", 0, 10)
    log.accepted("c1", "completion", 0, 10)  # a double-run command counts once
    log.accepted("i0", "inline", 0, 30)
    with open(path, "a") as f:
        f.write('{"event": "accepted", "id"\n')  # a torn line
    rate = acceptance_rate(path)
    assert (rate["shown"], rate["accepted"], rate["accepted_chars"]) == (5, 2, 40)
    assert rate["rate"] == pytest.approx(2 / 5)
    assert rate["by_kind"]["completion"] == {"shown": 4, "accepted": 1, "rate": 0.25}
    assert rate["by_kind"]["inline"]["rate"] == 1.0
    assert all("text" not in json.loads(line) for line in path.read_text().splitlines()[:7])


def test_acceptance_log_off_and_unwritable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    AcceptanceLog(None).shown("x", "inline", 1, 1.0, "m", "python")  # off: writes nothing, anywhere
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = AcceptanceLog(blocker / "acceptance.jsonl")  # a path under a file cannot be created
    log.shown("x", "inline", 1, 1.0, "m", "python")
    log.shown("y", "inline", 1, 1.0, "m", "python")
    assert len([r for r in caplog.records if "acceptance log" in r.getMessage()]) == 1


def test_default_log_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_log_path() == tmp_path / "codecomplete" / "acceptance.jsonl"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_log_path() == Path.home() / ".local" / "state" / "codecomplete" / "acceptance.jsonl"
