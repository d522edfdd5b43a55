"""Placeholder: the owning issue fills this in."""


def register(parser) -> None:
    """Add this module's verbs to ``parser``."""
