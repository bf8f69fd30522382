"""`python -m codecomplete.lsp`: the same server as the `codecomplete-lsp` script."""

from codecomplete.lsp.server import main

main()
