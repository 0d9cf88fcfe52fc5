"""Small text helpers shared by the progress reporter and the process runner (no third-party imports)."""

from __future__ import annotations


def short(value):
    """A float with four significant digits; anything else as it is."""
    return f"{value:.4g}" if isinstance(value, float) else value
