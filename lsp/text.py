"""Document text as the LSP sees it: lines, positions in the client's units, text at the cursor.

Pure functions over a list of lines. A line keeps its terminator ("\\n", "\\r\\n" or "\\r", the
only three the LSP counts) and the last line has none, so "a\\n" is the two lines "a\\n" and "".
`str.splitlines` is not used: it also breaks at form feeds, \\x1c-\\x1e and \\u2028, which editors
do not, so one form feed in a Python file would shift every position after it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

EOL = re.compile(r"(\r\n|\r|\n)")
# The engine keeps at most block_size tokens before the cursor, but it tokenizes all it is given,
# and a 5 MB prefix takes seconds. 64K characters is far more than any prompt holds (so the engine
# still cuts it, and never takes the window's start for the file's). The window's start stays put
# while the user types, so the engine's prompt, and its cached keys and values, keep extending.
PREFIX_CHARS = 64 * 1024
SUFFIX_CHARS = 16 * 1024
BLOCK = 256  # lines: the window starts on a multiple of this
GRID = 16 * 1024  # characters: where a window inside one enormous line may start
ELLIPSIS = "…"


@dataclass
class Document:
    lines: list[str]
    version: int = 0
    language_id: str = ""

    @property
    def chars(self) -> int:
        return sum(map(len, self.lines))


@dataclass(frozen=True)
class Cursor:
    """Where completions go: code-point indices for slicing, client units for ranges sent back."""

    row: int
    index: int  # code points into the line
    word_start: int  # code points: start of the identifier that ends at the cursor
    column: int  # index in the client's position encoding
    word_column: int
    word: str


def split_lines(text: str) -> list[str]:
    parts = EOL.split(text)  # [line, eol, line, eol, ..., last line]
    return [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)] + [parts[-1]]


def content(line: str) -> str:
    """The line without its terminator."""
    return line.rstrip("\r\n")


def _width(ch: str, encoding: str) -> int:
    """Code units of one character: UTF-16 counts astral ones (most emoji) twice, UTF-8 bytes."""
    cp = ord(ch)
    if encoding == "utf-8":
        return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4
    if encoding == "utf-32":
        return 1
    return 2 if cp > 0xFFFF else 1


def column_to_index(text: str, column: int, encoding: str = "utf-16") -> int:
    """Code-point index of a column in code units, clamped to the text; inside a character rounds down."""
    if column <= 0:
        return 0
    if encoding == "utf-32" or text.isascii():
        return min(column, len(text))
    units = 0
    for i, ch in enumerate(text):
        units += _width(ch, encoding)
        if units > column:
            return i
    return len(text)


def index_to_column(text: str, index: int, encoding: str = "utf-16") -> int:
    head = text[:index]
    if encoding == "utf-32" or head.isascii():
        return len(head)
    return sum(_width(ch, encoding) for ch in head)


def position_index(lines: list[str], line: int, character: int, encoding: str = "utf-16") -> tuple[int, int]:
    """(row, code-point index) of a client position, clamped: past the last line is the end."""
    if line >= len(lines):
        return len(lines) - 1, len(content(lines[-1]))
    row = max(line, 0)
    return row, column_to_index(content(lines[row]), character, encoding)


def cursor_at(lines: list[str], line: int, character: int, encoding: str = "utf-16") -> Cursor:
    row, index = position_index(lines, line, character, encoding)
    text = content(lines[row])
    start = index
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    column, word_column = index_to_column(text, index, encoding), index_to_column(text, start, encoding)
    return Cursor(row, index, start, column, word_column, text[start:index])


def replace(lines: list[str], start: tuple[int, int], end: tuple[int, int], text: str) -> list[str]:
    """The lines after replacing the span start..end ((row, index) pairs) with text."""
    if end < start:
        start, end = end, start
    (r1, i1), (r2, i2) = start, end
    # A lone "\r" ending the line before may pair with a "\n" that the new text starts with.
    lo = r1 - 1 if r1 > 0 and lines[r1 - 1].endswith("\r") else r1
    chunk = "".join(lines[lo:r1]) + lines[r1][:i1] + text + lines[r2][i2:]
    new = split_lines(chunk)
    if r2 < len(lines) - 1:
        new.pop()  # chunk ends with line r2's terminator: the empty "last line" is not one
    return lines[:lo] + new + lines[r2 + 1 :]


def text_around(lines: list[str], row: int, index: int, prefix_chars: int = PREFIX_CHARS,
                suffix_chars: int = SUFFIX_CHARS) -> tuple[str, str]:
    """(prefix, suffix) at the cursor. The prefix holds at least prefix_chars (or all there is) and
    starts at a line that is a multiple of BLOCK, so typing moves its start about once per BLOCK
    lines' worth of characters, not at every keystroke."""
    s = row - row % BLOCK
    size = index + sum(map(len, lines[s:row]))
    while s > 0 and size < prefix_chars:
        size += sum(map(len, lines[s - BLOCK : s]))
        s -= BLOCK
    prefix = "".join(lines[s:row]) + lines[row][:index]
    if len(prefix) > 2 * prefix_chars:  # enormous lines: cut inside them, on a grid too
        cut = (len(prefix) - prefix_chars) // GRID * GRID
        nl = prefix.find("\n", cut, cut + GRID)
        prefix = prefix[nl + 1 if nl >= 0 else cut :]

    end, size = row + 1, len(lines[row]) - index
    while end < len(lines) and size < suffix_chars:
        size += sum(map(len, lines[end : end + BLOCK]))
        end += BLOCK
    return prefix, (lines[row][index:] + "".join(lines[row + 1 : end]))[:suffix_chars]


def label_of(text: str, width: int = 60) -> str:
    """One readable line for a menu: the first line of text, or "⏎ next line" when it starts with a
    line break, with an ellipsis when there is more."""
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    filled = [i for i, ln in enumerate(lines) if ln.strip()]
    if not filled:
        return text.strip() or "⏎"
    first = lines[0] if filled[0] == 0 else "⏎ " + lines[filled[0]].strip()
    more = len(filled) > 1
    if len(first) > width:
        return first[: width - 1] + ELLIPSIS
    return first + ELLIPSIS if more else first
