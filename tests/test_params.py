"""params.yaml validation: every bad value is refused with a message naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from advdenoise.core.errors import ParamsError
from advdenoise.core.params import AttackParams, load_params, parse_params, read_yaml

ROOT = Path(__file__).resolve().parents[1]


def _with(section: str | None, key: str, value: object) -> dict:
    raw = read_yaml((ROOT / "params.yaml").read_text())
    if section is None:
        raw[key] = value
    else:
        raw[section][key] = value
    return raw


def test_project_params_load_and_match_paper_settings() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.train_cnn.lr == pytest.approx(1e-4)
    assert params.train_cnn.batch_size == 16
    assert params.data.test_fraction == pytest.approx(0.2)
    assert params.attack.eps in params.attack.eps_grid
    assert params.robustness.eps in params.robustness.eps_grid
    assert set(params.robustness.eps_grid) <= set(params.attack.eps_grid)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("attack", "eps", 1.5, "attack.eps must be in [0, 1], got 1.5"),
        ("attack", "eps", -0.1, "attack.eps must be in [0, 1]"),
        ("attack", "eps", "big", "attack.eps must be a number"),
        (
            "attack",
            "eps_grid",
            [0.1, 0.01],
            "attack.eps_grid must be sorted ascending without duplicates",
        ),
        (
            "attack",
            "eps_grid",
            [0.01, 0.01],
            "attack.eps_grid must be sorted ascending without duplicates",
        ),
        (
            "attack",
            "methods",
            ["fgsm", "cw"],
            "attack.methods must be one of ['fgsm', 'pgd'], got 'cw'",
        ),
        ("attack", "pgd_steps", 0, "attack.pgd_steps must be >= 1"),
        ("robustness", "square_images", 5, "robustness.square_images must be 0 (every evaluated"),
        ("robustness", "masking_alpha", 0.9, "robustness.masking_alpha must be in [1e-06, 0.5]"),
        ("robustness", "restarts_tolerance", -1, "robustness.restarts_tolerance must be >= 0"),
        ("robustness", "apgd_check_restarts", 0, "robustness.apgd_check_restarts must be in [1,"),
        ("attack", "batch_size", 2.5, "attack.batch_size must be an integer"),
        ("train_cnn", "lr", 0, "train_cnn.lr must be > 0"),
        ("train_cnn", "lr", -1e-4, "train_cnn.lr must be > 0"),
        ("train_cnn", "batch_size", 0, "train_cnn.batch_size must be >= 1"),
        ("train_cnn", "epochs", 0, "train_cnn.epochs must be >= 1"),
        ("train_cnn", "augment", "yes", "train_cnn.augment must be true or false"),
        ("train_cnn", "arch", "vgg16", "train_cnn.arch must be one of ['paper', 'resnet18']"),
        (
            "train_cnn",
            "resnet18",
            {"zero_init_residual": False, "channels": [8]},  # the paper's key, not resnet18's
            "unknown key 'train_cnn.resnet18.channels'; allowed keys in train_cnn.resnet18",
        ),
        (
            "train_cnn",
            "paper",
            {"channels": [8, 8], "dropout": 1.5},
            "train_cnn.paper.dropout must be in [0, 0.9], got 1.5",
        ),
        ("train_ae", "noise", {"blur": 0.1}, "train_ae.noise keys must be in"),
        ("robustness", "defences", ["ae", "magic"], "robustness.defences must be one of"),
        ("robustness", "defences", ["ae", "ae"], "robustness.defences must list distinct"),
        (
            "train_ae_adv",
            "methods",
            ["apgd"],
            "train_ae_adv.methods must be one of ['fgsm', 'pgd']",
        ),
        (
            "certify",
            "models",
            ["cnn", "ae_adv"],
            "certify.models must be one of ['cnn', 'ae', 'ae_",
        ),
        ("data", "image_size", 8, "data.image_size must be in [16, 1024]"),
        ("data", "image_size", 68, "data.image_size must be divisible by 8"),
        ("data", "test_fraction", 0.9, "data.test_fraction must be in [0.05, 0.5]"),
        (
            "data",
            "synthetic_counts",
            {"COVID": 50},
            "data.synthetic_counts must have exactly the keys",
        ),
        (None, "device", "tpu", "device must be one of ['auto', 'cpu', 'cuda']"),
        (None, "seed", -1, "seed must be in [0, 2**32)"),
    ],
)
def test_bad_values_name_the_key(section, key, value, message) -> None:
    with pytest.raises(ParamsError) as info:
        parse_params(_with(section, key, value))
    assert message in str(info.value)


def test_unknown_keys_are_refused_with_allowed_list() -> None:
    with pytest.raises(ParamsError, match=r"unknown key 'attack.epsilon'; allowed keys in attack"):
        parse_params(_with("attack", "epsilon", 0.03))
    with pytest.raises(ParamsError, match=r"unknown key 'atack'"):
        parse_params(_with(None, "atack", {}))


def test_params_yaml_is_the_one_source_of_values() -> None:
    raw = read_yaml((ROOT / "params.yaml").read_text())
    del raw["robustness"]["square_queries"]
    with pytest.raises(ParamsError, match=r"missing key 'robustness.square_queries'"):
        parse_params(raw)
    del raw["certify"]
    with pytest.raises(ParamsError, match=r"missing key 'certify'"):
        parse_params(raw)
    with pytest.raises(TypeError):  # no defaults in the classes to disagree with params.yaml
        AttackParams()  # type: ignore[call-arg]


def test_section_must_be_mapping() -> None:
    with pytest.raises(ParamsError, match="attack must be a mapping"):
        parse_params(_with(None, "attack", [0.03]))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("attack: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("attack", "eps", 0.025, "attack.eps must be one of attack.eps_grid"),
        ("robustness", "eps", 0.02, "robustness.eps must be one of robustness.eps_grid"),
        (
            "robustness",
            "eps_grid",
            [0.008, 0.04],
            "robustness.eps_grid must lie within attack.eps_grid",
        ),
    ],
)
def test_headlines_must_lie_on_their_grids(
    section: str, key: str, value: object, message: str
) -> None:
    """A headline off its grid would need an attack no stage depends on: refuse it, naming the key."""
    with pytest.raises(ParamsError, match=re.escape(message)):
        parse_params(_with(section, key, value))


def test_numbers_read_as_dvc_reads_them(tmp_path: Path) -> None:
    """YAML 1.2, as DVC: `1e-4` is a number (PyYAML's YAML 1.1 would make it a string)."""
    text = (ROOT / "params.yaml").read_text()
    text = re.sub(r"(?m)^(  lr: )1e-4", r"\g<1>1e-4", text)
    text = re.sub(r"(?m)^(  eps: )0.03 ", r"\g<1>3E-2 ", text)
    text = re.sub(r"(?m)^(  eps: )0.008 ", r"\g<1>8e-3 ", text)
    assert "3E-2" in text and "8e-3" in text and "lr: 1e-4" in text
    path = tmp_path / "params.yaml"
    path.write_text(text)
    params = load_params(path)
    assert (
        params.train_cnn.lr == 1e-4 and params.attack.eps == 0.03 and params.robustness.eps == 0.008
    )
    path.write_text(text.replace("lr: 1e-4", "lr: 1e-x", 1))
    with pytest.raises(ParamsError, match="train_cnn.lr must be a number"):
        load_params(path)


def test_dvc_yaml_plots_name_the_columns_params_make() -> None:
    """dvc.yaml's line plots name their columns, which follow params: robustness.defences and
    certify.models x sigmas. A column not named there is a `dvc plots show` warning, one named but
    not written another, so the two must change together."""
    import yaml

    params = load_params(ROOT / "params.yaml")
    plots = {}
    for entry in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]:
        if isinstance(entry, dict):
            ((name, spec),) = entry.items()
            plots[name] = next(iter(spec["y"].values()))
    defences = list(params.robustness.defences)
    for view in ("oblivious", "adaptive", "worst", "l2"):
        assert plots[f"robustness_{view}"] == defences, view
    c = params.certify
    assert plots["certify_curves"] == [f"{m}_sigma_{s:g}" for m in c.models for s in c.sigmas]
    bounds = [f"{side}_sigma_{s:g}" for s in c.sigmas for side in ("certified", "attacked")]
    assert {k: v for k, v in plots.items() if k.startswith("certify_bounds_")} == {
        f"certify_bounds_{m}": bounds for m in c.models
    }


@pytest.mark.parametrize(
    ("external", "classes", "message"),
    [
        ("site_b", {}, "data.external_classes must map one class folder of data.external to each"),
        ("site_b", {"normal": 0, "covid": 2}, "data.external_classes must map one class folder"),
        ("site_b", {"a": 0, "b": 0, "c": 1}, "data.external_classes must map one class folder"),
        ("synthetic/", {"normal": 0, "covid": 1}, "data.external must not be data.source"),
    ],
)
def test_an_external_set_needs_a_label_per_class_and_another_source(
    external: str, classes: dict, message: str
) -> None:
    raw = _with("data", "external", external)
    raw["data"]["external_classes"] = classes
    with pytest.raises(ParamsError, match=re.escape(message)):
        parse_params(raw)
    raw["data"]["external_classes"] = {"normal": 0, "covid": 1}
    raw["data"]["external"] = "" if external == "synthetic/" else external
    assert parse_params(raw).data.external_classes == {"normal": 0, "covid": 1}
