"""Typed configuration from YAML: frozen dataclasses built from parsed YAML, every error naming its key.

Generic over the dataclasses (the schema of params.yaml lives in `params`). Values are checked
against each field's type hint, unknown and missing keys are refused, and each dataclass's
`__post_init__` checks its ranges with the helpers below, so every message reads
`<key> <what is wrong>, got <value>`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, TypeVar

import yaml

from advdenoise.core.errors import ParamsError

T = TypeVar("T")


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader that reads floats as YAML 1.2 does (and DVC with it): `1e-4` is 0.0001.

    PyYAML follows YAML 1.1, where a float needs a dot (`1.0e-4`) and `1e-4` is a string; DVC
    reads params.yaml with a YAML 1.2 parser, so both must agree on what a stage computes with.
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    """Parse params YAML as DVC does (YAML 1.2 numbers: `1e-4` is a float)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


# --------------------------------------------------------------------------- checks


def check(ok: bool, key: str, message: str, value: Any) -> None:
    if not ok:
        raise ParamsError(f"{key} {message}, got {value!r}")


def check_range(key: str, value: float, low: float, high: float) -> None:
    """low <= value <= high."""
    check(low <= value <= high, key, f"must be in [{low:g}, {high:g}]", value)


def check_min(key: str, value: float, low: float) -> None:
    check(value >= low, key, f"must be >= {low:g}", value)


def check_distinct(key: str, values: tuple[Any, ...], what: str) -> None:
    check(
        len(values) >= 1 and len(set(values)) == len(values),
        key,
        f"must list distinct {what}",
        list(values),
    )


def check_names(key: str, values: tuple[str, ...], known: tuple[str, ...], what: str) -> None:
    """Distinct names, each one of a registry's (`known`)."""
    for name in values:
        check(name in known, key, f"must be one of {list(known)}", name)
    check_distinct(key, values, what)


def registered(registry: str) -> tuple[str, ...]:
    """The names of a registry ("attacks", "defences", "certify", "archs"), whose modules are data
    only (no torch). Imported when called: loading `core` loads no other package."""
    from advdenoise.attacks.specs import METHODS
    from advdenoise.defences.specs import DEFENCES
    from advdenoise.evaluation.smoothed import SMOOTHED
    from advdenoise.models.architectures import ARCHS

    names = {"attacks": METHODS, "defences": DEFENCES, "certify": tuple(SMOOTHED), "archs": ARCHS}
    return names[registry]


def check_grid(key: str, grid: tuple[float, ...]) -> None:
    """A non-empty, strictly ascending list of values in [0, 1] (eps grids)."""
    check(len(grid) > 0, key, "must not be empty", list(grid))
    for v in grid:
        check_range(f"{key} entry", v, 0.0, 1.0)
    check(
        list(grid) == sorted(set(grid)),
        key,
        "must be sorted ascending without duplicates",
        list(grid),
    )


def check_subset(key: str, value: int, least: int, zero: str) -> None:
    """A seeded subset's size: 0 (`zero`: all of them) or at least `least` images."""
    check(value == 0 or value >= least, key, f"must be 0 ({zero}) or >= {least}", value)


def check_headline(section: str, eps: float, grid: tuple[float, ...]) -> None:
    """`<section>.eps_grid` is an eps grid and `<section>.eps`, the section's headline, one of it."""
    check_grid(f"{section}.eps_grid", grid)
    check(
        eps in grid,
        f"{section}.eps",
        f"must be one of {section}.eps_grid {list(grid)} (add it to the grid)",
        eps,
    )


def check_widths(key: str, channels: tuple[int, ...]) -> None:
    check(
        len(channels) >= 1 and min(channels) >= 1,
        key,
        "must be a non-empty list of positive widths",
        list(channels),
    )


# --------------------------------------------------------------------------- building


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint and return it in the dataclass's representation."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is bool:
        check(isinstance(value, bool), key, "must be true or false", value)
        return value
    if hint is int:
        check(
            isinstance(value, int) and not isinstance(value, bool), key, "must be an integer", value
        )
        return value
    if hint is float:
        check(
            isinstance(value, (int, float)) and not isinstance(value, bool),
            key,
            "must be a number",
            value,
        )
        return float(value)
    if hint is str:
        check(isinstance(value, str), key, "must be a string", value)
        return value
    if origin is Literal:
        check(value in args, key, f"must be one of {list(args)}", value)
        return value
    if origin is tuple:
        check(isinstance(value, (list, tuple)), key, "must be a list", value)
        return tuple(_convert(v, args[0], key) for v in value)
    if origin is dict:
        check(isinstance(value, dict), key, "must be a mapping", value)
        return {
            _convert(k, args[0], key): _convert(v, args[1], f"{key}.{k}") for k, v in value.items()
        }
    if origin in (typing.Union, types.UnionType):  # pragma: no cover - not used by the schema today
        raise TypeError(f"unsupported params hint for {key}: {hint}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    raise TypeError(f"unsupported params hint for {key}: {hint}")  # pragma: no cover


def build(cls: type[T], raw: Any, prefix: str = "") -> T:
    """`cls` from a parsed YAML mapping: every field required, no other key allowed."""
    where = prefix or "params.yaml"
    check(isinstance(raw, dict), where, "must be a mapping", raw)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    inside = f" in {prefix}" if prefix else ""
    unknown = sorted(set(raw) - set(names))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ParamsError(f"unknown key {key!r}; allowed keys{inside}: {names}")
    missing = [n for n in names if n not in raw]
    if missing:
        key = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise ParamsError(
            f"missing key {key!r}; params.yaml sets every key{inside}: {names} (it is the one "
            "source of the pipeline's settings)"
        )
    kwargs = {k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in raw.items()}
    return cls(**kwargs)
