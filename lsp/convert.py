"""Engine candidates -> LSP items. Pure: ranked candidates, the range they replace, and the text
already typed in that range go in; CompletionItems and InlineCompletionItems come out.

Both kinds replace the word before the cursor with word + continuation, so clients that filter
by the typed word keep the items, and ghost text lines up with what is on the screen.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from lsprotocol import types

from codecomplete.lsp.text import Cursor, label_of

ACCEPTED = "codecomplete.accepted"


class Scored(Protocol):  # engine.completion.Candidate, without importing torch here
    text: str
    score: float


def word_range(cursor: Cursor) -> types.Range:
    return types.Range(types.Position(cursor.row, cursor.word_column),
                       types.Position(cursor.row, cursor.column))


def accepted_command(id: str, kind: str, rank: int, chars: int) -> types.Command:
    """What the client runs once the user takes an item: it lands in the acceptance log."""
    return types.Command(title="codecomplete: suggestion accepted", command=ACCEPTED,
                         arguments=[{"id": id, "kind": kind, "rank": rank, "chars": chars}])


def lsp_completion_items(candidates: Sequence[Scored], replace: types.Range, typed: str,
                         id: str) -> list[types.CompletionItem]:
    items = []
    for rank, c in enumerate(candidates):
        text = typed + c.text
        label = label_of(text)
        items.append(types.CompletionItem(
            label=label,
            kind=types.CompletionItemKind.Text,
            detail=f"codecomplete  score {c.score:.2f}",
            documentation=text if label != text else None,  # the whole suggestion when the label cuts it
            sort_text=f"{rank:04d}",  # the client sorts by this: keep the engine's ranking
            filter_text=text.split("\n", 1)[0].rstrip("\r"),
            text_edit=types.TextEdit(range=replace, new_text=text),
            insert_text_format=types.InsertTextFormat.PlainText,  # "$" in code is not a snippet
            insert_text_mode=types.InsertTextMode.AsIs,  # our lines carry their own indentation
            command=accepted_command(id, "completion", rank, len(c.text)),
        ))
    return items


def lsp_inline_items(candidates: Sequence[Scored], replace: types.Range, typed: str,
                     id: str) -> list[types.InlineCompletionItem]:
    """replace must start and end on one line (the spec's rule); the text may span many."""
    return [
        types.InlineCompletionItem(insert_text=typed + c.text, range=replace,
                                   command=accepted_command(id, "inline", rank, len(c.text)))
        for rank, c in enumerate(candidates)
    ]
