"""Named random streams: every seed is derived from (run seed, stream name, keys), never by position.

A stream's name says what it draws ("robustness.apgd"); its keys say which cell ("ae_guided",
`eps_key(0.008)`). Adding a defence, an attack, an eps or a stage therefore leaves every other
stream's numbers unchanged, and no two modules share a stream by accident of a number.
"""

from __future__ import annotations

import zlib

import numpy as np


def eps_key(eps: float) -> int:
    """An integer key for an attack budget eps, exact for the grid's decimal values."""
    return int(round(eps * 1e9))


def _word(key: int | str) -> int:
    return zlib.crc32(key.encode("utf-8")) if isinstance(key, str) else int(key)


def named_seed(seed: int, name: str, *keys: int | str) -> int:
    """A 32-bit seed for stream `name` of run `seed`, keyed by integers or names (a class, a fold,
    `eps_key(eps)`, a defence): independent of every other stream and of the order of calls."""
    entropy = [int(seed), _word(name), *map(_word, keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def named_rng(seed: int, name: str, *keys: int | str) -> np.random.Generator:
    """A NumPy generator of stream `name` (see `named_seed`)."""
    return np.random.default_rng(named_seed(seed, name, *keys))
