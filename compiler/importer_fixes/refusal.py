"""NotSupported: the importer fixes' deliberate refusal (its own module so that the fixes can
raise it without importing the package that imports them)."""

from __future__ import annotations

from ..errors import AnychipError


class NotSupported(AnychipError):
    """A deliberate refusal: the model uses something no anychip target can compile."""
