"""The `anychip` command line."""
