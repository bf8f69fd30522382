"""Tokenizer: byte-exact round trips, cheap indentation, short numbers, special tokens, errors."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.tokenizer import SPECIAL_TOKENS, Tokenizer
from codecomplete.train.tokenizer_train import train_tokenizer

VOCAB = 600
WORDS = [
    *["path", "items", "count", "value", "result", "config", "index", "data", "key", "line"],
    *["total", "name", "buffer", "header", "payload", "request", "session", "token", "window"],
]


def synthetic_file(rng: random.Random, indent: str) -> str:
    """A small Python file indented with `indent` (4 spaces or a tab): nesting, numbers, strings."""
    i1, i2, i3 = indent, indent * 2, indent * 3
    out = [
        "import os",
        "",
        "SEED = 123456789012  # frequent enough to merge, were digits not split",
        "",
        "",
    ]
    for _ in range(rng.randint(2, 4)):
        a, b = rng.sample(WORDS, 2)
        out += [
            f"class {a.title()}Store:",
            f'{i1}"""Keep {a} by {b}."""',
            "",
            f"{i1}def load_{a}(self, {b}, limit={rng.randint(0, 99999)}):",
            f"{i2}{b} = {b} or {{}}",
            f"{i2}for i in range({rng.randint(1, 500)}):",
            f"{i3}if {a} != {rng.randint(0, 10**9)} and i % {rng.randint(2, 9)} == 0:",
            f"{i3}{indent}{b}[i] = '{rng.choice(WORDS)}'  # {rng.choice(WORDS)}",
            f"{i3}else:",
            f'{i3}{indent}{b}[i] = "{a}_" + str(i * {rng.random():.4f})',
            f"{i2}return {b}",
            "",
        ]
    return "\n".join(out) + "\n"


def synthetic_corpus(n_files: int = 24, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [synthetic_file(rng, "    " if i % 3 else "\t") for i in range(n_files)]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    corpus = synthetic_corpus()
    assert sum(f.count("\n") for f in corpus) > 300
    return train_tokenizer(corpus, VOCAB)


# --- byte-exact round trips ---------------------------------------------------------------

PIECES = [
    "\t",
    "    ",
    "        ",
    "\r\n",
    "\n",
    "\n\n",
    "\r",
    "  \n",
    " ",
    "x",
    "def ",
    "return",
    "0",
    "123456",
    "'s'",
    '"""',
    "#",
    "!=",
    "\U0001f600",
    "\U0001f468\u200d\U0001f4bb",
    "中文",
    "変数",
    "\x00",
    "\u0301",
    "\u0308",
    "é",
    "e\u0301",
    "\ufeff",
    "\u00a0",
    "\x0b",
    "\x0c",
    "<|endoftext|>",
    "<|fim_prefix|>",
    "<|",
    "\uffff",
    "\U0010ffff",
]
code_like = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


def assert_round_trip(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode()


@settings(max_examples=200, deadline=None)
@given(text=st.text() | code_like)
def test_decode_encode_is_identity(tok: Tokenizer, text: str) -> None:
    assert_round_trip(tok, text)


@pytest.mark.parametrize(
    "text", ["", "\x00", "\u0301x", "\r\n\tif x:\r\n\t\tpass  \r\n", "a\U0001f600\ufeff中"]
)
def test_round_trip_edge_cases(tok: Tokenizer, text: str) -> None:
    assert_round_trip(tok, text)


def test_token_bytes_can_end_inside_a_character(tok: Tokenizer) -> None:
    ids = tok.encode("\U0001f600")  # no emoji in the corpus: one token per byte
    assert len(ids) == 4
    with pytest.raises(UnicodeDecodeError):
        tok.token_bytes(ids[0]).decode()


def test_no_unknown_token_and_ids_in_range(tok: Tokenizer) -> None:
    assert tok.hf.get_vocab_size(with_added_tokens=True) == tok.vocab_size
    assert tok.hf.model.unk_token is None
    text = "".join(chr(c) for c in range(0x20, 0x3000, 7)) + "\x00\U0001f600"
    ids = tok.encode(text)
    assert ids and max(ids) < tok.vocab_size and min(ids) >= 0
    assert tok.decode(ids) == text


# --- what the split pattern buys ----------------------------------------------------------


@pytest.mark.parametrize("indent", ["\n    ", "\n        ", "\n            ", "\n\t", "\n\t\t"])
def test_newline_and_indentation_is_one_token(tok: Tokenizer, indent: str) -> None:
    # The split pattern keeps a newline run and its indentation together; frequent ones merge.
    assert len(tok.encode(indent)) == 1


def test_indentation_stays_whole_inside_code(tok: Tokenizer) -> None:
    pieces = [tok.decode([i]) for i in tok.encode("x = 1\n        return result\n    else:")]
    assert "\n        " in pieces and "\n    " in pieces


def test_digits_are_split_into_groups_of_at_most_three(tok: Tokenizer) -> None:
    ids = tok.encode("x = 123456789012")
    pieces = [tok.decode([i]) for i in ids]
    assert "".join(pieces) == "x = 123456789012"
    assert all(len(re.sub(r"\D", "", p)) <= 3 for p in pieces)
    assert sum(p.isdigit() for p in pieces) >= 4


# --- special tokens, persistence ----------------------------------------------------------


def test_special_tokens_by_name(tok: Tokenizer) -> None:
    assert set(tok.special_ids) == set(SPECIAL_TOKENS)
    assert len(set(tok.special_ids.values())) == len(SPECIAL_TOKENS)
    assert tok.eot_id == tok.special_ids["eot"]
    for name, text in SPECIAL_TOKENS.items():
        # A file that mentions the marker gets text tokens: only our code inserts control tokens.
        assert tok.special_ids[name] not in tok.encode(f"x = '{text}'")
        assert tok.decode(tok.encode(text)) == text == tok.decode([tok.special_ids[name]])
        assert tok.special_ids[name] < tok.vocab_size
    assert tok.vocab_size == VOCAB


def test_save_and_load_round_trip(tok: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    loaded = Tokenizer.from_file(path)
    texts = synthetic_corpus(n_files=3, seed=1) + [
        "x != y\t# é \U0001f600",
        "<|fim_prefix|>a<|fim_suffix|>",
    ]
    assert loaded.encode_batch(texts) == tok.encode_batch(texts)
    assert [loaded.encode(t) for t in texts] == tok.encode_batch(texts)
    assert loaded.sha256 == tok.sha256
    assert loaded.vocab_size == tok.vocab_size
    assert loaded.special_ids == tok.special_ids


def test_training_is_deterministic(tok: Tokenizer) -> None:
    assert train_tokenizer(synthetic_corpus(), VOCAB).sha256 == tok.sha256


def test_tokenizer_without_special_tokens_is_refused() -> None:
    from codecomplete.train.tokenizer_train import build_untrained

    with pytest.raises(CodecompleteError, match="special tokens"):
        Tokenizer(build_untrained())


@pytest.mark.parametrize(
    "content", [None, b"not json {", b'{"version": "1.0"}', b"\xff\xfe\x00garbage"]
)
def test_from_file_bad_path_is_a_one_line_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "tokenizer.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CodecompleteError) as excinfo:
        Tokenizer.from_file(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(path) in message


# --- decoding keeps text as written -------------------------------------------------------


@pytest.mark.parametrize("text", ["x != y", "a , b", "f( x ) ;", "don 't", "a .b", "x ?", "  \t  "])
def test_decode_does_not_clean_up_spaces(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text
