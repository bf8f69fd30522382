"""The one error type users see: a single line that names the thing and the fix."""


class CodecompleteError(Exception):
    """Bad input from the user (a path, a setting, a file). The CLI prints it as one line."""
