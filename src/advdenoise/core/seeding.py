"""Named random streams: every seed is derived from (run seed, stream name, keys), never by position."""

from __future__ import annotations


def eps_key(eps: float) -> int:
    """An integer key for an attack budget eps, exact for the grid's decimal values."""
    return int(round(eps * 1e9))
