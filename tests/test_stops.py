"""Stop rules and tidying: where a completion ends and what of it is worth inserting."""

from __future__ import annotations

import pytest
from conftest import overfit_tiny

from codecomplete.engine.completion import CompletionEngine
from codecomplete.engine.stops import (
    StopRule,
    complete_lines,
    drop_repeat_of_suffix,
    starts_logical_line,
    tidy,
    trim_suffix_overlap,
    trim_unbalanced_closers,
    whole_lines,
)
from codecomplete.train.tokenizer_train import train_tokenizer

# --- StopRule ---------------------------------------------------------------------------------

BODY = "\n    size = width * height\n    return size"

# (cursor line(s) before the cursor, multiline, max_lines, generated text, text kept or None: go on)
STOP_CASES = [
    # single line: the rest of the cursor line, cut at its end
    ("x = compute(", False, 8, "items, 2)\ny = 3\n", "items, 2)"),
    ("x = compute(", False, 8, "items, 2)", None),  # the line may still grow
    ("x = compute(", False, 8, "items, 2)\n", "items, 2)"),
    # single line, cursor at the end of a finished line: the first line is blank, take the next
    ("def area(width, height):", False, 8, "\n    return width * height\n    x", "\n    return width * height"),
    ("def area(width, height):", False, 8, "\n    return width * height", None),
    # multi-line after a line that opens a block: the indented body, up to the dedent
    ("def area(width, height):", True, 8, BODY + "\nprint(area(2, 3))\n", BODY),
    ("def area(width, height):", True, 8, BODY + "\nprint(area", None),  # dedent line unfinished
    ("def area(width, height):", True, 8, "\n    if width:\n        return 1\n    return 2\nx = 1\n",
     "\n    if width:\n        return 1\n    return 2"),  # deeper lines stay in the block
    ("def area(width, height):", True, 8, "\n\n    return 1\n\n", "\n\n    return 1"),  # blank before content goes on
    # multi-line: a blank line after content ends the thought
    ("def area(width, height):", True, 8, BODY + "\n\n\ndef other():\n", BODY),
    ("x = 1\n", True, 8, "y = 2\nz = 3\n\nw = 4\n", "y = 2\nz = 3"),
    ("x = 1\n", True, 8, "y = 2\n    \nw = 4\n", "y = 2"),  # whitespace-only counts as blank
    # multi-line on an indented blank line: the block is the cursor column
    ("for i in range(3):\n    ", True, 8, "total += i\n    print(i)\nreturn total\n", "total += i\n    print(i)"),
    # multi-line, cursor mid-line inside a block: continuation lines and same-level lines stay
    ("    x = compute(", True, 8, "a,\n        b)\n    y = 2\nz = 3\n", "a,\n        b)\n    y = 2"),
    # line cap
    ("for i in range(3):\n    ", True, 2, "a = 1\n    b = 2\n    c = 3\n    d = 4\n", "a = 1\n    b = 2"),
    ("for i in range(3):\n    ", True, 3, "a = 1\n    b = 2\n    c = 3\n    d = 4\n", "a = 1\n    b = 2\n    c = 3"),
    ("for i in range(3):\n    ", True, 3, "a = 1\n    b = 2\n    c = 3", None),
    # the whole block (max_lines None): blank lines inside it and any length, up to the dedent
    ("def area(width, height):", True, None, BODY + "\n\n    return 0\n" + "".join(f"    x{i} = {i}\n" for i in range(20)) + "y = 2\n",
     BODY + "\n\n    return 0\n" + "".join(f"    x{i} = {i}\n" for i in range(19)) + "    x19 = 19"),
    # the same statement three lines running, however indented, is a loop: the first stays
    ("def f():", True, None, "\n    a = 1\n    b = 2\n    b = 2\n    b = 2\n", "\n    a = 1\n    b = 2"),
    ("def f():", True, 8, "\n    if ok:\n        if ok:\n            if ok:\n", "\n    if ok:"),
    ("def f():", True, 8, "\n    b = 2\n    b = 2\n    c = 3\n    b = 2\n", None),  # twice is no loop
    ("def f():", True, None, "\n    x = f(g(h(\n        1\n        )\n      )\n    )\n    return x\ny\n",
     "\n    x = f(g(h(\n        1\n        )\n      )\n    )\n    return x"),  # closing brackets alone are no loop
    ("def area(width, height):", True, None, BODY + "\n\n\ndef other():\n", BODY + "\n\n"),
    # a fresh line after a block's header, left of its body: the body, then the dedent ends it
    ("def area(width, height):\n", True, None, BODY[1:] + "\n\nprint(area(2, 3))\n", BODY[1:] + "\n"),
    ("class A:\n    def f(self):\n", True, 8, "        return 1\n    def g(self):\n", "        return 1"),
    # the body's first line sets its indentation: a line left of it is not in the body
    ("def f():", True, None, "\n        return 1\n    x = 2\n", "\n        return 1"),
    ("def f():\n", True, None, "        if x:\n            y()\n        return 1\n    z = 2\n", "        if x:\n            y()\n        return 1"),
    ("    x = compute(", True, 8, "a,\n            b)\n    y = 2\nz = 3\n", "a,\n            b)\n    y = 2"),  # not a body: no effect
    # a line inside a string, brackets or after a backslash does not leave the block, blank or not
    ("def f():", True, None, '\n    """Doc\nat column 0\n    """\n    return 1\nx = 2\n', '\n    """Doc\nat column 0\n    """\n    return 1'),
    ("def f():", True, 8, '\n    """Doc.\n\n    More.\n    """\n    return 1\n\nx\n', '\n    """Doc.\n\n    More.\n    """\n    return 1'),
    ("def f():", True, None, "\n    x = g(\na)\n    return x\ny = 1\n", "\n    x = g(\na)\n    return x"),
    ("def f():", True, None, "\n    x = 1 + \\\n2\n    return x\ny = 1\n", "\n    x = 1 + \\\n2\n    return x"),
    ("def f():", True, None, '\n    # see """\n    return 1\nx = 2\n', '\n    # see """\n    return 1'),  # not in a comment
]


@pytest.mark.parametrize(("prefix", "multiline", "max_lines", "text", "kept"), STOP_CASES)
def test_stop_rule(prefix: str, multiline: bool, max_lines: int | None, text: str, kept: str | None) -> None:
    cut = StopRule.at_cursor(prefix, multiline, max_lines).cut(text)
    assert (None if cut is None else text[:cut]) == kept


def test_stop_rule_is_a_prefix_property() -> None:
    """The decoder asks after every token: once a text is cut, every longer text cuts at the same place."""
    rule = StopRule.at_cursor("def area(width, height):", True)
    full = BODY + "\nprint(area(2, 3))\nmore = 1\n"
    cuts = [rule.cut(full[:k]) for k in range(len(full) + 1)]
    first = next(i for i, c in enumerate(cuts) if c is not None)
    assert all(c == len(BODY) for c in cuts[first:])
    assert full[:first].endswith("\n")  # answered as soon as the dedented line was complete


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        ("a = 1\nb = 2", [True, True]),
        ('s = """x\ny"""\nz', [True, False, True]),
        ("s = '''x\n'''\n", [True, False, True]),
        ('s = "a\\"b"\nz', [True, True]),  # an escaped quote does not close
        ('s = "open\nz', [True, True]),  # a one-line string ends with its line
        ('s = "a\\\nb"\nz', [True, False, True]),  # ... unless the break is escaped
        ("f(a,\n  b)\nz", [True, False, True]),
        ("x = [1, (2,\n3)]\ny", [True, False, True]),
        ("x = 1 + \\\n  2\ny", [True, False, True]),
        ("# (unclosed ''' in a comment\nz", [True, True]),
        ("s = '(#'\nz", [True, True]),  # brackets and hashes in a string are text
        ("x)\ny", [True, True]),  # a closer the text never opened (the prefix did)
    ],
)
def test_starts_logical_line(text: str, starts: list[bool]) -> None:
    assert starts_logical_line(text) == starts


@pytest.mark.parametrize(
    ("prefix", "indent", "opens"),
    [
        ("def area(width, height):", 0, True),
        ("class A:\n    def f(self):  ", 4, True),
        ("if x:\n\tif y:", 1, True),
        ("if x:\n    ", 4, False),  # blank indented line: the cursor column
        ("if x:\n", 0, True),  # a fresh line after the header: the body comes, deeper
        ("    if x:\n\n  ", 4, True),
        ("if x:\n    pass\n", 0, False),
        ("if x:\n        ", 8, False),  # right of the header's indentation: the cursor column
        ("", 0, False),
        ("    x = compute(", 4, False),
    ],
)
def test_stop_rule_reads_the_cursor_line(prefix: str, indent: int, opens: bool) -> None:
    rule = StopRule.at_cursor(prefix, True, 5)
    assert (rule.block_indent, rule.opens_block, rule.max_lines) == (indent, opens, 5)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("\n    x = 1\n    y = (", "\n    x = 1"),  # the unfinished line goes
        ("\n    x = 1\n    y = 2\n", "\n    x = 1\n    y = 2\n"),  # nothing unfinished
        ("\n    return total +", "\n    return total +"),  # no finished line to fall back on
        ("x = 1\n\n   ", "x = 1\n"),
    ],
)
def test_whole_lines(text: str, kept: str) -> None:
    assert whole_lines(text) == kept


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("\n    x = foo(1,\n        2)\n    y = bar(\n        3", "\n    x = foo(1,\n        2)"),  # an open call goes
        ('\n    s = """a\n    b"""\n    t = """c\n    d', '\n    s = """a\n    b"""'),  # an open docstring goes
        ("\n    x = 1\n    if x:\n        y", "\n    x = 1"),  # a header whose body was cut goes with it
        ("\n    x = 1\n    @decorator\n    def", "\n    x = 1"),
        ("\n    x = 1  # note\n    y = 'a", "\n    x = 1  # note"),
        ("\n    x = 1\n  y = 2\n    z", "\n    x = 1"),  # a dedent to no known level
        ("\n    x = 1\n    y = 2\n", "\n    x = 1\n    y = 2\n"),  # nothing unfinished
        ("\n    return total +", "\n    return total +"),  # nothing stands on its own: as whole_lines
    ],
)
def test_complete_lines_keeps_what_stands_on_its_own(text: str, kept: str) -> None:
    assert complete_lines(text) == kept


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("\n    x = 1\n    y = 2", "\n    x = 1\n    y = 2"),  # a finished last line stays
        ("\n    x = 1\n    if x:", "\n    x = 1"),
        ("\n    x = 1\n    y = foo(\n        2,", "\n    x = 1"),
        ('\n    """doc\n    more', '\n    """doc\n    more'),  # nothing stands on its own: as it is
    ],
)
def test_complete_lines_of_a_text_cut_at_a_line_end(text: str, kept: str) -> None:
    assert complete_lines(text, whole=True) == kept


# --- tidy: what the text after the cursor already holds --------------------------------------


@pytest.mark.parametrize(
    ("completion", "suffix", "expected"),
    [
        (", y):", "):\n    pass\n", ", y"),  # ':' and ')' tails are trimmed even when short
        ("width, height):", "):\n", "width, height"),
        ("bar(1)", ")", "bar(1)"),  # a closer of the completion's own bracket is no repeat
        ("bar(1))", "))", "bar(1)"),
        ("f(a, [b])", "])", "f(a, [b])"),
        ("total + count", "count\n", "total + "),  # four or more characters of any kind
        ("x", "x = 1\n", "x"),  # one letter is a coincidence, not an overlap
        ("abc", "\nabc", "abc"),  # only the cursor line counts
        ("abc", "", "abc"),
        ("a)", ")", "a"),
    ],
)
def test_trim_suffix_overlap(completion: str, suffix: str, expected: str) -> None:
    assert trim_suffix_overlap(completion, suffix) == expected


@pytest.mark.parametrize(
    ("completion", "suffix", "expected"),
    [
        ("x), y", "))", "x"),  # a closer the completion never opened, and the suffix has
        ("bar(1), y", ")", "bar(1), y"),  # balanced: kept
        ("x] + 1", ")", "x] + 1"),  # the suffix does not close with ']': keep (it closes the prefix's)
        ("x )", "  )\n", "x"),  # the suffix's leading spaces do not matter
        ("x)", "\n)", "x)"),  # only the cursor line of the suffix counts
    ],
)
def test_trim_unbalanced_closers(completion: str, suffix: str, expected: str) -> None:
    assert trim_unbalanced_closers(completion, suffix) == expected


@pytest.mark.parametrize(
    ("completion", "suffix", "expected"),
    [
        ("z = y * 2\n    return y\n", "\n    return y\n", "z = y * 2"),
        ("z = y * 2\n    return y\n", "\n\n    return y\n", "z = y * 2"),  # blank lines skipped
        ("return y", "\n    return y\n", "return y"),  # the cursor line itself is not a repeat
        ("z = 1\n    w = 2", "\n    return y\n", "z = 1\n    w = 2"),
        ("z = 1\nreturn y", "return y\n", "z = 1\nreturn y"),  # the cursor line's rest is not 'next'
    ],
)
def test_drop_repeat_of_suffix(completion: str, suffix: str, expected: str) -> None:
    assert drop_repeat_of_suffix(completion, suffix) == expected


# (prefix, suffix, completion, inserted text)
TIDY_CASES = [
    # inside a call: the closers the suffix already has are not inserted again
    ("print(foo(", "))", "x))", "x"),
    ("print(foo(", "))\n", "x), y)", "x"),
    ("print(foo(", "))\n", "bar(1)", "bar(1)"),
    # inside a string
    ('x = "hel', '"\n', 'lo"', "lo"),
    ('x = "hel', '"\n', 'lo world"', "lo world"),
    # end of file: nothing to trim but trailing whitespace
    ("def f(x):\n    return ", "", "x + 1  ", "x + 1"),
    ("y = f(", "", "x)", "x)"),
    # the space before an overlapping word belongs to the completion
    ("total = ", "count\n", "len(items) + count", "len(items) + "),
    # a completion that merely repeats the text after the cursor adds nothing
    ("x = ", "compute(items)\n", "compute(items)", ""),
    ("x = ", "compute(items)\n", "compute", ""),
    ("x = ", ")\n", ")", ""),
    ("x = ", "", "   ", ""),
    ("x = ", "", "\n\n", ""),
    # a multi-line completion that reaches the next line of the document stops before it
    ("def f(x):\n    y = x + 1\n    ", "\n    return y\n", "z = y * 2\n    return y\n", "z = y * 2"),
    ("def f(x):\n    ", "\n    return x\n", "\n    return x", ""),  # nothing but the next line
]


@pytest.mark.parametrize(("prefix", "suffix", "completion", "expected"), TIDY_CASES)
def test_tidy(prefix: str, suffix: str, completion: str, expected: str) -> None:
    assert tidy(completion, suffix) == expected


@pytest.mark.parametrize(
    ("prefix", "lead"),
    [
        ("def area(width, height):", "\n    "),  # at the colon: a new line, one step deeper
        ("if x:\n", "    "),  # a fresh line after the header
        ("class A:\n  def f(self):\n    x = 1\n  def g(self):\n", "    "),  # the file's own step: 2 spaces
        ("if x:\n\tif y:\n\t", "\t"),  # a tab file, one tab already typed
        ("    else:", "\n        "),
        ('d = {"a":', ""),  # a dict entry, a slice, a lambda: no block
        ("x = y[1:", ""),
        ("f = lambda x:", ""),
        ("x = 1\n", ""),
        ("if x:\n    ", ""),  # the user chose the indentation
    ],
)
def test_a_body_must_start_indented_under_its_header(prefix: str, lead: str) -> None:
    assert StopRule.at_cursor(prefix, True).lead == StopRule.at_cursor(prefix, False).lead == lead


# --- CRLF documents through the engine ------------------------------------------------------

DOC = "import math\n\n\ndef area(width, height):\n    size = width * height\n    return size\n\n\nprint(area(2, 3))\n"




@pytest.fixture(scope="module")
def engine() -> CompletionEngine:
    """A tiny model that has learned DOC by heart, so completions of DOC's prefixes are DOC."""
    tok = train_tokenizer([DOC] * 8 + [DOC.replace("area", "volume")] * 4, 400)
    return CompletionEngine(overfit_tiny(tok, DOC, steps=80), tok, min_score=float("-inf"))


@pytest.mark.parametrize("multiline", [False, True])
def test_crlf_document_gets_crlf_completions(engine: CompletionEngine, multiline: bool) -> None:
    engine.clear_cache()
    cursor = DOC.index(":") + 1  # end of the def line
    lf = engine.complete(DOC[:cursor], "\n", multiline=multiline)
    assert lf[0].text == (BODY if multiline else "\n    size = width * height")  # memorised, cut by the stop rule

    crlf_doc = DOC.replace("\n", "\r\n")
    crlf_cursor = crlf_doc.index(":") + 1
    for suffix in ("\r\n", ""):  # CRLF in the prefix alone makes a CRLF document too
        engine.clear_cache()
        crlf = engine.complete(crlf_doc[:crlf_cursor], suffix, multiline=multiline)
        assert [c.text for c in crlf] == [c.text.replace("\n", "\r\n") for c in lf]
        assert "\r\n" in crlf[0].text
        assert all("\n" not in c.text.replace("\r\n", "") for c in crlf)  # never a bare \n
    # typing into a CRLF suggestion answers from the earlier result, still in CRLF
    typed = crlf[0].text[:6]
    rest = engine.complete(crlf_doc[:crlf_cursor] + typed, "", multiline=multiline)
    assert engine.stats.from_earlier_answer
    assert rest[0].text == crlf[0].text[6:]


@pytest.mark.parametrize("multiline", [False, True])
def test_the_engine_writes_the_body_indented(engine: CompletionEngine, multiline: bool) -> None:
    """The model learned `print(...)` at column 0 after the function; under a new header it must indent."""
    engine.clear_cache()
    prefix = DOC[: DOC.index("print(")] + "if True:\n"
    texts = [c.text for c in engine.complete(prefix, "", multiline=multiline)]
    assert texts and all(t.startswith("    ") and t.strip() for t in texts), texts
