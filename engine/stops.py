"""Where a completion ends, and what of it is worth inserting: pure text functions.

The decoder asks `StopRule.cut(text)` after every token; once it answers, the row is done and
`tidy` trims what the text after the cursor already holds.
"""
from __future__ import annotations

import io
import re
import tokenize
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass

OPENERS, CLOSERS = "([{", ")]}"
MATCH = dict(zip(CLOSERS, OPENERS))
# Text at the start of the suffix that a completion may repeat by accident and must not insert.
TRIMMABLE = set(CLOSERS) | set(":,;'\"")
NEW_DEFINITION = ("def ", "async def ", "class ", "@")
BLOCK_KEYWORDS = {"def", "async", "class", "if", "elif", "else", "for", "while", "try", "except", "finally", "with", "match", "case"}
# What changes whether a line break ends a logical line: quotes, comments, escapes, brackets.
SCAN = re.compile(r"'''|\"\"\"|[\"'#\\\n()\[\]{}]")
NOT_CODE = {tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def starts_logical_line(text: str) -> list[bool]:
    """For each line of text: does it start a logical line, outside any bracket, string or
    backslash continuation? Only such a line's indentation says where a block ends.
    """
    starts, depth, quote, pos = [True], 0, "", 0
    while (match := SCAN.search(text, pos)) is not None:
        token, pos = match.group(), match.end()
        if token == "\\":
            if text.startswith("\n", pos):
                starts.append(False)
            pos += 1  # the escaped character
        elif token == "\n":
            if len(quote) == 1:
                quote = ""  # an unclosed one-line string ends with its line
            starts.append(not quote and depth == 0)
        elif quote:
            quote = "" if token == quote else quote
        elif token == "#":
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
        elif token in OPENERS:
            depth += 1
        elif token in CLOSERS:
            depth = max(depth - 1, 0)
        else:
            quote = token
    return starts


def is_block_header(line: str) -> bool:
    """`if x:`, `def f(a):`, `else:`; not a dict entry, slice or lambda that happens to end in ':'."""
    words = line.split(None, 1)
    keyword = words[0].rstrip(":") if words else ""
    return line.rstrip().endswith(":") and keyword in BLOCK_KEYWORDS and open_brackets(line) == 0


def body_indentation(header: str, prefix: str) -> str:
    """A body's indentation under this header: the header's plus one step of the file's own."""
    return header[: indent_of(header)] + indent_step(prefix)


def indent_step(prefix: str, lines: int = 200) -> str:
    """The most common step by which a line is indented deeper than the line before; 4 spaces by default."""
    steps: Counter[str] = Counter()
    previous = ""
    tail = prefix.rsplit("\n", lines)
    for line in tail[1:] if len(tail) > lines else tail:  # not the unsplit head of a long prefix
        if not line.strip():
            continue
        indent = line[: indent_of(line)]
        if len(indent) > len(previous) and indent.startswith(previous):
            steps[indent[len(previous) :]] += 1
        previous = indent
    return steps.most_common(1)[0][0] if steps else "    "


@dataclass(frozen=True)
class StopRule:
    """Stop conditions for one cursor position."""

    multiline: bool
    block_indent: int  # lines indented less than this leave the cursor's block
    opens_block: bool  # the cursor line ends with ':' (the body comes next, deeper)
    max_lines: int | None = 8  # None: the whole block, blank lines and all
    fresh_line: bool = False  # the cursor starts the body's first line (a blank line after the header)
    lead: str = ""  # what the completion must start with: a body is indented deeper than its header

    @classmethod
    def at_cursor(cls, prefix: str, multiline: bool, max_lines: int | None = 8) -> StopRule:
        before, _, line = prefix.rpartition("\n")
        if line.strip():
            lead = "\n" + body_indentation(line, before) if is_block_header(line) else ""
            return cls(multiline, indent_of(line), line.rstrip().endswith(":"), max_lines, lead=lead)
        header = next((ln for ln in reversed(before.split("\n")) if ln.strip()), "")
        if header.rstrip().endswith(":") and len(line) <= indent_of(header):
            # Left of a block's body (a fresh line after `def f():`): the body comes first, deeper.
            lead = body_indentation(header, before)[len(line) :] if is_block_header(header) else ""
            return cls(multiline, indent_of(header), True, max_lines, fresh_line=True, lead=lead)
        # On a blank or indentation-only line the cursor column is the block's indentation.
        return cls(multiline, len(line), False, max_lines)

    def cut(self, text: str) -> int | None:
        """Length of text to keep once the completion is finished, or None to go on."""
        if not self.multiline:
            first = text.find("\n")
            if first == -1:
                return None
            if text[:first].strip():
                return first
            # The line at the cursor is done; the completion is the next line.
            second = text.find("\n", first + 1)
            return None if second == -1 else second
        lines = text.split("\n")
        complete = lines[:-1]  # the last line may still grow
        seen_content = bool(complete and complete[0].strip())
        # A body's first line sets its indentation; a line left of it has left the body.
        body_indent = indent_of(complete[0]) if self.opens_block and self.fresh_line and seen_content else None
        offset = len(complete[0]) + 1 if complete else 0
        starts = starts_logical_line(text)
        for i, line in enumerate(complete[1:], start=1):
            if i >= 2 and is_line_loop(complete[i - 2 : i + 1]):
                return offset - len(complete[i - 1]) - 2  # the first of the three stays
            if not starts[i]:
                pass  # inside a docstring or a call: its indentation is free
            elif not line.strip():
                if seen_content and self.max_lines is not None:  # a blank line after content ends the thought
                    return offset - 1
            else:
                floor = self.block_indent + 1 if self.opens_block else self.block_indent
                if body_indent is not None:
                    floor = max(floor, body_indent)
                if seen_content and (indent_of(line) < floor or (indent_of(line) <= self.block_indent and line.lstrip().startswith(NEW_DEFINITION))):
                    return offset - 1  # left the block, or started the next def/class beside it
                if self.opens_block and body_indent is None:
                    body_indent = indent_of(line)
                seen_content = True
            if self.max_lines is not None and i >= self.max_lines:
                return offset - 1
            offset += len(line) + 1
        return None


def is_line_loop(lines: list[str]) -> bool:
    """The same statement three lines running, at any indentation (a loop of lines longer than the
    decoder's token loops, or nested ever deeper); closing brackets and rules alone do not count."""
    first = lines[0].strip()
    return any(c.isalnum() for c in first) and all(line.strip() == first for line in lines[1:])


def whole_lines(text: str) -> str:
    """text without its unfinished last line, when an earlier line has content."""
    head = text[: text.rfind("\n")]
    return head if "\n" in text and not text.endswith("\n") and head.strip() else text


def complete_lines(text: str, whole: bool = False) -> str:
    """text up to the end of its last logical line that stands on its own (every bracket and
    string it opened closed, not a block header or decorator waiting for what follows); else
    whole_lines(text). whole: text's last line is finished (a stop rule cut at its end).

    For a completion cut short by a loop, the token budget or the line limit: a docstring, call
    or `if x:` left open would break the file below the cursor.
    """
    if whole:
        return complete_lines(text + "\n").removesuffix("\n")
    line_starts = [0, *(i + 1 for i, c in enumerate(text) if c == "\n")]
    clean, first, last = -1, None, None
    with suppress(tokenize.TokenError, SyntaxError):  # an unclosed string or bracket, a bad dedent: cut before it
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.NEWLINE and tok.string == "\n" and first is not None and last is not None:
                if last.string != ":" and first.string != "@":
                    clean = line_starts[tok.start[0] - 1] + tok.start[1]
                first = last = None
            elif tok.type not in NOT_CODE:
                first, last = first or tok, tok
    if clean < 0:
        return whole_lines(text)
    return text if clean == len(text) - 1 else text[:clean]


def open_brackets(text: str) -> int:
    """How many of text's own opening brackets are still open at its end."""
    stack: list[str] = []
    for ch in text:
        if ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS and stack and stack[-1] == MATCH[ch]:
            stack.pop()
    return len(stack)


def trim_suffix_overlap(completion: str, suffix: str) -> str:
    """Drop a tail of the completion that the text after the cursor already starts with.

    A short tail of closers is a repeat only when it closes nothing the completion opened:
    at `print(foo(|))` the completion `bar(1)` keeps its `)`.
    """
    line = suffix.split("\n", 1)[0]
    for k in range(min(len(line), len(completion)), 0, -1):
        tail = line[:k]
        if not completion.endswith(tail):
            continue
        if k >= 4 or (set(tail) <= TRIMMABLE and open_brackets(completion[:-k]) == open_brackets(completion)):
            return completion[:-k]
    return completion


def trim_unbalanced_closers(completion: str, suffix: str) -> str:
    """Cut at a closing bracket the completion never opened when the suffix already closes it."""
    after = suffix.split("\n", 1)[0].lstrip()
    stack: list[str] = []
    for i, ch in enumerate(completion):
        if ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS:
            if stack and stack[-1] == MATCH[ch]:
                stack.pop()
            elif after.startswith(ch):
                return completion[:i].rstrip()
    return completion


def drop_repeat_of_suffix(completion: str, suffix: str) -> str:
    """Cut the completion where it starts re-typing the next line that already follows."""
    rest = suffix.split("\n", 1)
    following = next((ln.strip() for ln in rest[1].split("\n") if ln.strip()), "") if len(rest) > 1 else ""
    if not following:
        return completion
    lines = completion.split("\n")
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == following:
            return "\n".join(lines[:i])
    return completion


def tidy(completion: str, suffix: str) -> str:
    """The text worth inserting: '' when the completion adds nothing the document lacks."""
    # Trailing spaces go first: `total = |count` keeps the space of `len(items) + count`.
    text = drop_repeat_of_suffix(completion, suffix).rstrip()
    text = trim_unbalanced_closers(trim_suffix_overlap(text, suffix), suffix)
    if not text.strip() or suffix.startswith(text):
        return ""
    return text
