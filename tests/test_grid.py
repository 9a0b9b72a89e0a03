"""A sweep's grid: the cross product of the `-S` lists and one stable, git-safe name per point."""

from __future__ import annotations

import re
import subprocess

import pytest

from advdenoise.core.errors import PipelineError
from advdenoise.sweeps.grid import expand, point_name, point_names, split_values


def test_expand_is_the_cross_product_in_argument_order() -> None:
    points = expand(["seed=0,1,2", "data.split=random,grouped"])
    assert len(points) == 6
    assert points[0] == {"seed": "0", "data.split": "random"}
    assert points[1] == {"seed": "0", "data.split": "grouped"}
    assert points[-1] == {"seed": "2", "data.split": "grouped"}


def test_commas_inside_brackets_and_quotes_do_not_split() -> None:
    assert split_values("[0.01,0.03],[0.1]") == ["[0.01,0.03]", "[0.1]"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]
    assert expand(["attack.eps_grid=[0.0,0.01],[0.0]"]) == [
        {"attack.eps_grid": "[0.0,0.01]"},
        {"attack.eps_grid": "[0.0]"},
    ]


@pytest.mark.parametrize(
    ("sets", "culprit"),
    [
        (["seed"], "-S 'seed'"),
        (["=0,1"], "-S '=0,1'"),
        (["seed=0,,1"], "-S 'seed=0,,1'"),
        (["seed=0", "seed=1"], "seed is set twice"),
        (["seed=1,1"], "repeated"),
        ([], "no -S"),
    ],
)
def test_bad_axes_are_refused_naming_the_argument(sets: list[str], culprit: str) -> None:
    with pytest.raises(PipelineError, match=re.escape(culprit)):
        expand(sets)


def test_names_are_deterministic_readable_and_git_safe() -> None:
    point = {"seed": "1", "data.split": "grouped"}
    assert point_name("sweep", point) == "sweep_seed=1_data.split=grouped"
    assert point_name("sweep", dict(point)) == point_name("sweep", point)
    odd = {"attack.eps_grid": "[0.0, 0.01]", "data.source": "../x..y"}
    long = {"data.source": "d" * 100}
    for p in (point, odd, long):
        name = point_name("sweep", p)
        ref = subprocess.run(["git", "check-ref-format", f"refs/exps/ab/cd/{name}"], check=False)
        assert ref.returncode == 0, name
        assert len(name) <= 80
    assert point_name("sweep", long) != point_name("sweep", {"data.source": "e" * 100})


def test_points_must_get_distinct_names_and_a_plain_prefix() -> None:
    with pytest.raises(PipelineError, match="same experiment name"):
        point_names("sweep", [{"k": "a b"}, {"k": "a+b"}])
    with pytest.raises(PipelineError, match="--name"):
        point_names("my sweep", [{"seed": "0"}])
    assert point_names("s", expand(["seed=0,1"])) == ["s_seed=0", "s_seed=1"]
