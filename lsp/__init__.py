"""codecomplete-lsp: the Language Server that serves the completion engine to editors."""

__version__ = "0.1.0"
