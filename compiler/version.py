"""anychip's version, in the core: modules of compiler/ read it from here, not from the
`anychip` package above them (which imports the core: a cycle)."""

__version__ = "0.1.0"
