"""A third-party backend family, as a vendor would ship it in its own package: one module, an
entry point in the `anychip.backends` group, its own chip profile and typed options. Nothing
in compiler/ knows it; tests/compiler/test_thirdparty_family.py installs it the way pip
would (a dist-info with entry_points.txt on sys.path) and drives every command through it."""

from .backend import ToyBackend

__all__ = ["ToyBackend"]
