"""Turn the text around the cursor into prompt tokens.

Layout, suffix first (fill-in-the-middle, SPM order as trained):
    <eot> <fim_prefix> <fim_suffix> suffix <fim_middle> prefix
With nothing after the cursor, the plain left-to-right prompt `[<eot>] prefix`. Either way the
prefix comes last, so a keystroke only extends the prompt and cached keys/values stay valid.

Hugging Face code models (engine/hf.py) were trained in PSM order, and get it, with their own
markers (tokenizer.fim_order, tokenizer.special_ids):
    <eot> <fim_prefix> prefix <fim_suffix> suffix <fim_middle>
That costs the cache: a keystroke changes the prompt in the middle, so cached keys/values are
reused only up to the cursor and the suffix is computed again. A tokenizer that puts a start
token before every text (Llama, DeepSeek-Coder) has it in place of <eot>, always.

Snippets of the project's other files (engine/repo_context.py) go in front of the file, as files
of their own where the tokenizer has a file separator (the layout `prepare --repo-context` trains):
    <eot> (<file_sep> path \n snippet)... <file_sep> <fim_prefix> <fim_suffix> suffix <fim_middle> prefix
and else as comments at the top of the file (RepoCoder's format): `# path`, each line behind `# `.
"""
from __future__ import annotations

from dataclasses import dataclass

from codecomplete.engine.healing import worth_healing
from codecomplete.engine.retrieval import Snippet
from codecomplete.engine.tokenizer import Tokenizer

SUFFIX_SHARE = 0.25  # of the prompt budget; the prefix gets the rest, and what the suffix leaves
# Characters tokenized per budget token (code averages 3-4 per token), widened when too few:
# a keystroke in a 5 MB file must not tokenize the whole file.
WINDOW_CHARS = 8


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    heal: bytes  # bytes of the backed-off last token: the completion must begin by retyping them
    prefix_start: int  # character offset where the kept prefix begins (0: the start of the file)


def keep_tail_lines(tokenizer: Tokenizer, text: str, budget: int, start_hint: int = 0) -> tuple[int, list[int]]:
    """Start offset and ids of the longest run of whole last lines of text within budget tokens.

    start_hint (the previous request's start) is kept while it still fits, so that typing does
    not move the window and the prompt keeps extending the cached one; not when it leaves much
    less than a fresh cut keeps (text deleted above the cursor, or another file's start).
    """
    chars = budget * WINDOW_CHARS
    if 0 < start_hint <= len(text) and text[start_hint - 1] == "\n" and len(text) - start_hint <= chars:
        ids = tokenizer.encode(text[start_hint:])
        if budget * 3 // 4 <= len(ids) <= budget:  # a fresh cut keeps about 7/8 (below), less a line
            return start_hint, ids
    while True:  # tokenize whole last lines (at least `chars` characters) until they overflow budget
        lo = 0 if chars >= len(text) else (text.rfind("\n", 0, len(text) - chars) + 1 or len(text) - chars)
        ids, offsets = tokenizer.encode_with_offsets(text[lo:])
        if lo == 0 or len(ids) > budget:
            break
        chars *= 4
    if len(ids) <= budget:
        return 0, ids
    # Cut with slack (7/8 of the budget), so the next keystrokes fit without moving the cut.
    target = max(1, budget * 7 // 8)
    start = lo + offsets[len(ids) - target][0]
    line_start = text.find("\n", max(start - 1, 0)) + 1
    if line_start <= 0 or line_start >= len(text):  # one enormous line: cut mid-line
        line_start = start
    return line_start, tokenizer.encode(text[line_start:])[-budget:]


def keep_head_lines(tokenizer: Tokenizer, text: str, budget: int) -> list[int]:
    """Ids of the longest run of whole first lines of text within budget tokens."""
    chars = budget * WINDOW_CHARS
    while True:  # tokenize whole first lines (at least `chars` characters) until they overflow budget
        hi = len(text) if chars >= len(text) else (text.find("\n", chars) + 1 or chars)
        ids, offsets = tokenizer.encode_with_offsets(text[:hi])
        if hi == len(text) or len(ids) > budget:
            break
        chars *= 4
    if len(ids) <= budget:
        return ids
    end = offsets[budget - 1][1]  # the first budget tokens cover text[:end]
    line_end = text.rfind("\n", 0, end)
    return tokenizer.encode(text[: line_end + 1])[:budget] if line_end > 0 else ids[:budget]


def snippet_ids(tokenizer: Tokenizer, snippets: list[Snippet], budget: int, file_sep: bool) -> list[int]:
    """The snippets as prompt tokens, whole lines within budget; the better ones first in the
    list and last in the prompt, nearest the cursor."""
    sep = [tokenizer.special_ids["file_sep"]] if file_sep else []
    out: list[int] = []
    for s in snippets:
        lines = [f"{s.path}\n", *s.text.splitlines(True)]
        text = "".join(lines) if file_sep else "".join(f"# {line}" if line.strip() else "#\n" for line in lines)
        room = budget - len(sep) - len(out)
        ids = keep_head_lines(tokenizer, text if text.endswith("\n") else text + "\n", room) if room > 1 else []
        shown = tokenizer.decode(ids)
        if shown.count("\n") < 2 or not shown.endswith("\n"):  # not even the path and a whole line
            break
        out = sep + ids + out
    return out


def build_prompt(tokenizer: Tokenizer, prefix: str, suffix: str, budget: int, fim: bool, start_hint: int = 0,
                 context: list[int] | None = None, file_sep: bool = False) -> Prompt:
    """context: snippet_ids() of the project's other files, to put in front of the file."""
    special, context = tokenizer.special_ids, context or []
    use_fim = fim and tokenizer.has_fim and bool(suffix.strip())
    suffix_ids = keep_head_lines(tokenizer, suffix, int(budget * SUFFIX_SHARE)) if use_fim else []
    separated = file_sep and bool(context)
    overhead = 1 + len(context) + separated + (3 if use_fim else 0)
    start, prefix_ids = keep_tail_lines(tokenizer, prefix, budget - overhead - len(suffix_ids), start_hint)
    heal = b""
    if prefix_ids and worth_healing(tokenizer.token_bytes(prefix_ids[-1])):
        heal = tokenizer.token_bytes(prefix_ids[-1])
        prefix_ids = prefix_ids[:-1]
    first = special.get("bos", special["eot"])  # what every text the model saw begins with
    if separated:  # the snippets are files of their own before this one
        lead, body = [first, *context, special["file_sep"]], prefix_ids
    else:  # comments at the top of the file, or nothing
        lead, body = [first], [*context, *prefix_ids]
    if use_fim and tokenizer.fim_order == "psm":
        ids = [*lead, special["fim_prefix"], *body, special["fim_suffix"], *suffix_ids, special["fim_middle"]]
    elif use_fim:
        ids = [*lead, special["fim_prefix"], special["fim_suffix"], *suffix_ids, special["fim_middle"], *body]
    else:
        ids = [*(lead if start == 0 or context or "bos" in special else []), *body]
    if not ids:  # a file cut mid-way that is one healed token long: give the model a start
        ids = [special["eot"]]
    return Prompt(ids=ids, heal=heal, prefix_start=start)
