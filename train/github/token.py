"""The GitHub token: read from the environment or a file, and never shown, only its source."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from codecomplete.engine.errors import CodecompleteError


class Token:
    """A secret and where it came from. Only the source is ever shown."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source  # "$GITHUB_TOKEN", "the file tokens/gh.txt": safe to print

    def __repr__(self) -> str:
        return f"Token(from {self.source})"

    __str__ = __repr__

    def authorization(self) -> str:
        return f"Bearer {self._value}"


def load_token(
    env_name: str = "GITHUB_TOKEN",
    file: Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Token | None:
    """The token from `file` if given, else from $env_name; None means anonymous."""
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise CodecompleteError(
                f"cannot read the token file {file} ({e.strerror or type(e).__name__}); "
                "check --token-file"
            ) from None
        if not value:
            raise CodecompleteError(f"the token file {file} is empty; put a GitHub token in it")
        return Token(value, f"the file {file}")
    value = environ.get(env_name, "").strip()
    return Token(value, f"${env_name}") if value else None
