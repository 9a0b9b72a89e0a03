"""A sweep's points: the cross product of `-S KEY=V1,V2,...` lists, as `dvc exp run --queue -S`
expands them, and one deterministic experiment name per point (the same grid names its points the
same way on every machine and every restart, which is what lets a sweep resume).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence

from advdenoise.core.errors import PipelineError

Point = dict[str, str]  # params key -> value as written on the command line (DVC parses it)

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")  # what a git ref and a shell word both take as is
_MAX_NAME = 80


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets and quotes, so that `[0.01,0.03],[0.1]` is two values."""
    values, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current)
            current = ""
            continue
        current += char
    return [*values, current]


def expand(sets: Sequence[str]) -> list[Point]:
    """The points of `-S` arguments: each `KEY=V1,V2,...` is one axis; the grid is their product."""
    axes: dict[str, list[str]] = {}
    for text in sets:
        key, sep, rest = text.partition("=")
        key = key.strip()
        values = [v.strip() for v in split_values(rest)]
        if not sep or not key or not all(values):
            raise PipelineError(f"-S {text!r}: expected KEY=VALUE[,VALUE...], e.g. seed=0,1,2")
        if key in axes:
            raise PipelineError(f"-S {text!r}: {key} is set twice; give it one list of values")
        if len(set(values)) != len(values):
            raise PipelineError(f"-S {text!r}: a value of {key} is repeated")
        axes[key] = values
    if not axes:
        raise PipelineError("no -S KEY=V1,V2,... given: a sweep needs at least one axis")
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def point_name(prefix: str, point: Point) -> str:
    """`PREFIX_key=value_key=value`, readable; a hash of the point when that is not a safe git ref
    name (too long, or `..` after escaping)."""
    body = "_".join(f"{k}={v}" for k, v in point.items())
    name = _UNSAFE.sub("+", f"{prefix}_{body}")
    if len(name) > _MAX_NAME or ".." in name or name.endswith((".", ".lock")):
        digest = hashlib.sha256(repr(sorted(point.items())).encode()).hexdigest()[:12]
        name = f"{prefix}_{digest}"
    return name


def point_names(prefix: str, points: Sequence[Point]) -> list[str]:
    """One name per point; refused when two points escape to the same name."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", prefix):
        raise PipelineError(f"--name {prefix!r}: use letters, digits, '_' and '-'")
    names = [point_name(prefix, p) for p in points]
    if len(set(names)) != len(names):
        raise PipelineError(f"two points of the grid get the same experiment name: {names}")
    return names
