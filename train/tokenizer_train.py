"""Train the byte-level BPE tokenizer on whole files of code."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from codecomplete.engine.tokenizer import SPECIAL_TOKENS, Tokenizer

# How text is cut before BPE merges, alternatives tried left to right:
#   a newline run with the indentation after it  -> one cheap token per indentation level
#   an optional space or symbol glued to a word   (" return", ".append", "_json")
#   at most three digits                          -> numbers are never one long token
#   an optional space and a run of symbols, newlines excluded
#   spaces or tabs not followed by a newline run  (alignment, trailing spaces)
SPLIT_PATTERN = (
    r"[\r\n]+[ \t]*"
    r"|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+"
    r"|[ \t]+"
)


def build_untrained() -> HFTokenizer:
    hf = HFTokenizer(models.BPE())  # no unk_token: every byte has a token, so nothing is unknown
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    return hf


def train_tokenizer(texts: Iterable[str], vocab_size: int, show_progress: bool = False) -> Tokenizer:
    """Whole files in, so merges across newlines and indentation are learned."""
    hf = build_untrained()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=show_progress,
    )
    hf.train_from_iterator(_nonempty(texts), trainer=trainer)
    return Tokenizer(hf)


def _nonempty(texts: Iterable[str]) -> Iterator[str]:
    for t in texts:
        if t:
            yield t
