"""One module per CLI verb: add_parser(subparsers, name) registers it, the parser's `run` executes it."""
