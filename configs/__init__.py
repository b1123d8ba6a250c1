"""Package data: the commented default configuration (default.yaml), read with importlib.resources."""
