"""End to end: the real `dvc repro`, `dvc exp run` and `dvc metrics diff` on a tiny configuration.

The project is copied to a temporary git repository with a tiny params.yaml; one cold `dvc repro`
is shared by the tests below (module-scoped), each of which then checks one promise of the pipeline.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from advdenoise.core.io import flatten
from advdenoise.core.params import read_yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = tuple(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])  # the one stage list
HEADLINE_STAGES = {"denoise", "embed", "report"}  # what a new attack.eps on the grid re-runs

pytestmark = pytest.mark.slow

TINY = {
    "data": {
        "image_size": 32,
        "synthetic_counts": {"non-COVID": 48, "COVID": 48},
        "synthetic_slices": [2, 4],
    },
    "train_cnn": {"epochs": 2, "paper": {"channels": [8, 16, 16, 16], "dropout": 0.2}},
    "train_ae": {"epochs": 1, "channels": [8, 8, 8], "latent_channels": 4},
    "attack": {"eps_grid": [0.0, 0.01, 0.03, 0.1], "pgd_steps": 3},
    "embed": {"max_points": 20, "tsne_perplexity": 5.0, "umap_neighbors": 5, "probe_folds": 2},
    "train_ae_adv": {"epochs": 1, "eps": [0.03]},
    "train_ae_guided": {"epochs": 1, "eps": [0.03]},
    "robustness": {
        "eps": 0.03,
        "eps_grid": [0.03],
        "max_images": 20,
        "apgd_steps": 3,
        "square_queries": 10,
        "detector_steps": 3,
        "l2_steps": 3,
    },
    "train_ae_gauss": {"epochs": 1},
    "certify": {
        "n0": 8,
        "n": 40,
        "max_images": 8,
        "attack_images": 2,
        "attack_samples": 4,
        "l2_steps": 2,
    },
}


TINY_DEFENCES = tuple(read_yaml((ROOT / "params.yaml").read_text())["robustness"]["defences"])


def tiny_params() -> dict:
    """The project's params.yaml with the TINY overrides merged in, section by section."""
    raw = read_yaml((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        raw[section].update(values)
    return raw


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["DVC_NO_ANALYTICS"] = "1"
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def ran_stages(output: str) -> set[str]:
    """Stages DVC actually executed, from its "Running stage '<name>':" lines."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def copy_project(dest: Path) -> Path:
    tracked = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout
    for rel in tracked.splitlines():
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("data/", "metrics/", "plots/", "report/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "data" / "raw").mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "data" / "raw" / "README.md", dest / "data" / "raw" / "README.md")
    (dest / "dvc.lock").unlink(missing_ok=True)
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "config", "user.email", "test@example.com"], dest)
    run(["git", "config", "user.name", "test"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "tiny"], dest)
    return dest


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = copy_project(tmp_path_factory.mktemp("pipeline"))
    proc = run(["dvc", "repro"], dest)
    assert ran_stages(proc.stdout) == set(STAGES)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "repro"], dest)
    return dest


def test_every_metric_file_has_numeric_keys(repo: Path) -> None:
    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())
    for rel in dvc["metrics"]:
        data = json.loads((repo / rel).read_text())
        flat = flatten(data)
        assert flat, f"{rel} is empty"
        env = {k: flat.pop(k) for k in list(flat) if k.startswith("env.")}
        assert all(isinstance(v, str) for v in env.values()), rel
        assert rel.endswith("prepare.json") or env["env.device"] == "cpu", rel  # no device there
        bad = {k: v for k, v in flat.items() if not isinstance(v, (int, float, bool))}
        assert not bad, f"{rel} has non-numeric values {bad}"
    # the attack stage attacks the whole test split with the trained CNN: its clean accuracy is
    # the training stage's test accuracy
    attack = json.loads((repo / "metrics/attack.json").read_text())
    train_cnn = json.loads((repo / "metrics/train_cnn.json").read_text())
    assert attack["clean_accuracy"] == pytest.approx(train_cnn["test.accuracy"], abs=1e-12)


def test_every_plot_file_is_parseable(repo: Path) -> None:
    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())
    files: set[str] = set()
    for entry in dvc["plots"]:
        name, spec = next(iter(entry.items())) if isinstance(entry, dict) else (entry, None)
        y = (spec or {}).get("y")
        files |= set(y) if isinstance(y, dict) else {name}
    assert files
    for rel in sorted(files):
        path = repo / rel
        assert path.is_file() and path.stat().st_size > 0, rel
        if path.suffix == ".csv":
            rows = list(csv.DictReader(path.open()))
            assert rows, f"{rel} has no rows"
        elif path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
    html = (repo / "report" / "index.html").read_text()
    assert "93.2%" in html  # the paper's figure, next to this run's


def test_repro_again_runs_nothing(repo: Path) -> None:
    proc = run(["dvc", "repro"], repo)
    assert ran_stages(proc.stdout) == set()


def test_dvc_plots_show_renders_without_warnings(repo: Path) -> None:
    proc = run(["dvc", "plots", "show", "-o", "dvc_plots"], repo)
    assert "WARNING" not in proc.stdout + proc.stderr
    assert (repo / "dvc_plots" / "index.html").stat().st_size > 0


def test_exp_run_with_another_headline_reruns_no_attack(repo: Path) -> None:
    proc = run(["dvc", "exp", "run", "-S", "attack.eps=0.01"], repo)
    assert ran_stages(proc.stdout) == HEADLINE_STAGES
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], repo).stdout)
    eps = diff["metrics/denoise.json"]["eps"]
    assert (eps["old"], eps["new"]) == (0.03, 0.01)
    assert any(k.startswith("pgd.") for k in diff["metrics/denoise.json"]), diff
    assert "metrics/attack.json" not in diff and "metrics/robustness.json" not in diff


def test_seed_sweep_and_its_aggregation(repo: Path, tmp_path: Path) -> None:
    """The README's sweep: `dvc exp run --queue -S seed=...`, `--run-all`, then advdenoise.seeds."""
    copy = tmp_path / "seeds"
    shutil.copytree(repo, copy, symlinks=True)
    run(["git", "checkout", "-q", "--", "."], copy)
    # experiments of other tests would form groups of their own
    run(["dvc", "exp", "remove", "-A"], copy)
    run(["dvc", "exp", "run", "--queue", "-S", "seed=1"], copy)
    proc = run(["dvc", "exp", "run", "--run-all"], copy)
    show = copy / "show.json"
    show.write_text(run(["dvc", "exp", "show", "--json"], copy).stdout)
    out = run([sys.executable, "-m", "advdenoise.sweeps.seeds", "--show", str(show)], copy).stdout
    assert out.startswith("Seeds: 0 (") and ", 1 (" in out.splitlines()[0], out + proc.stdout
    row = next(line for line in out.splitlines() if line.startswith("| train_cnn:test.accuracy"))
    assert row.endswith("| 2 |")  # both seeds report it
    assert "| ae_adv |" in out  # a verdict row (agreeing or not) per defence


def test_another_dataset_by_set_params_alone(repo: Path, tmp_path: Path) -> None:
    """Other class-folder names: `-S` overrides of data.source and data.classes are enough."""
    from PIL import Image

    source = tmp_path / "other"
    rng = np.random.default_rng(0)
    for cls in ("normal", "pneumonia"):
        (source / cls).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 256, (40, 40), dtype=np.uint8)
            Image.fromarray(pixels).save(source / cls / f"{i}.png")
    copy = tmp_path / "switch"
    shutil.copytree(repo, copy, symlinks=True)
    run(["git", "checkout", "-q", "--", "."], copy)
    proc = run(["dvc", "exp", "run", "prepare", "-S", f"data.source={source}",
                "-S", "~data.classes", "-S", "+data.classes={normal: 0, pneumonia: 1}"], copy)  # fmt: skip
    assert ran_stages(proc.stdout) == {"prepare"}
    counts = json.loads((copy / "metrics/prepare.json").read_text())
    assert counts["all.normal"] == 12 and counts["all.pneumonia"] == 12


def test_resnet18_through_every_stage_by_set_params_alone(repo: Path, tmp_path: Path) -> None:
    """`-S train_cnn.arch=resnet18`: every stage after prepare runs on torchvision's ResNet-18."""
    copy = tmp_path / "resnet"
    shutil.copytree(repo, copy, symlinks=True)
    run(["git", "checkout", "-q", "--", "."], copy)
    before = json.loads((copy / "metrics/robustness.json").read_text())
    proc = run(["dvc", "exp", "run", "-S", "train_cnn.arch=resnet18"], copy)
    assert ran_stages(proc.stdout) == set(STAGES) - {"prepare"}
    model = torch.load(copy / "data/train_cnn/model.pt", weights_only=True)
    assert model["kind"] == "resnet18" and model["state_dict"]["net.fc.weight"].shape == (2, 512)
    after = json.loads((copy / "metrics/robustness.json").read_text())
    assert set(after) == set(before) and after != before  # the same figures, of another CNN
    assert "train_cnn.resnet18.zero_init_residual" in (copy / "report/index.html").read_text()


def test_an_external_test_set_by_set_params_alone(repo: Path, tmp_path: Path) -> None:
    """data.external, a generated other site (another seed; noisier, fainter lesions): robustness
    and the report run again and add external.* beside unchanged figures; a bad folder is named."""
    from advdenoise.data import synthetic

    site = tmp_path / "site_b"
    counts, names = {"normal": 10, "covid": 10}, ("normal", "covid")
    synthetic.write_folder(synthetic.generate(counts, names, 32, 9, synthetic.ANOTHER_SITE), site)
    copy = tmp_path / "external"
    shutil.copytree(repo, copy, symlinks=True)
    run(["git", "checkout", "-q", "--", "."], copy)
    before = json.loads((copy / "metrics/robustness.json").read_text())
    classes = "+data.external_classes={normal: 0, covid: 1}"  # + : the default map is empty
    proc = run(["dvc", "exp", "run", "-S", f"data.external={site}", "-S", classes], copy)
    assert ran_stages(proc.stdout) == {"prepare", "robustness", "report"}
    after = json.loads((copy / "metrics/robustness.json").read_text())
    external = {k: v for k, v in after.items() if k.startswith("external.")}
    assert {k: v for k, v in after.items() if k not in external} == before
    assert external["external.images"] == 20
    assert {f"external.{d}.robust_accuracy" for d in TINY_DEFENCES} <= set(external)
    html = (copy / "report/index.html").read_text()
    assert "Another site: the external test set" in html and "test_sets.png" in html
    missing = tmp_path / "nowhere"
    proc = run(["dvc", "exp", "run", "-S", f"data.external={missing}", "-S", classes], copy, False)
    assert proc.returncode != 0
    assert f"data.external directory {str(missing)!r} does not exist" in proc.stdout + proc.stderr


def test_queued_sweep_runs_every_value(repo: Path, tmp_path: Path) -> None:
    """`dvc exp run --queue` with a comma sweep, `dvc queue start -j 2`: one experiment per value."""
    copy = tmp_path / "queue"
    shutil.copytree(repo, copy, symlinks=True)
    run(["git", "checkout", "-q", "--", "."], copy)
    run(["dvc", "exp", "run", "--queue", "-S", "attack.eps=0.01,0.1"], copy)
    try:
        run(["dvc", "queue", "start", "-j", "2"], copy)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            status = run(["dvc", "queue", "status"], copy).stdout
            if not any(word in status for word in ("Queued", "Running")):
                break
            time.sleep(3)
        assert "Failed" not in status, status + run(["dvc", "queue", "logs"], copy, False).stdout
    finally:
        run(["dvc", "queue", "stop", "--kill"], copy, check=False)
    rows = json.loads(run(["dvc", "exp", "show", "--json"], copy).stdout)
    eps = {}
    for commit in rows:
        for exp in commit.get("experiments") or []:
            for revision in exp.get("revs", []):
                data = revision.get("data") or {}
                headline = data["params"]["params.yaml"]["data"]["attack"]["eps"]
                denoise = data["metrics"]["metrics/denoise.json"]["data"]
                eps[headline] = denoise["eps"]
    assert eps == {0.01: 0.01, 0.1: 0.1}, eps


def _out_hashes(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {
        f"{stage}:{out['path']}": out["md5"]
        for stage, spec in lock["stages"].items()
        for out in spec.get("outs", [])
    }


def test_forced_rerun_is_byte_identical(repo: Path, tmp_path: Path) -> None:
    """Same params, same code: every output hash and every metrics file repeats exactly."""
    copy = tmp_path / "again"
    shutil.copytree(repo, copy, symlinks=True)
    run(["git", "checkout", "-q", "--", "."], copy)  # undo the exp run's params change
    run(["dvc", "checkout", "-q"], copy)
    before = _out_hashes(copy)
    metrics = {p.name: p.read_bytes() for p in (copy / "metrics").glob("*.json")}
    run(["dvc", "repro", "--force"], copy)
    assert _out_hashes(copy) == before
    assert {p.name: p.read_bytes() for p in (copy / "metrics").glob("*.json")} == metrics


def test_interrupted_stage_leaves_no_partial_outputs(repo: Path, tmp_path: Path) -> None:
    """SIGTERM mid-training: exit 130, no model or temp file; the next repro re-runs and succeeds."""
    copy = tmp_path / "interrupt"
    shutil.copytree(repo, copy, symlinks=True)
    run(["git", "checkout", "-q", "--", "."], copy)
    params = read_yaml((copy / "params.yaml").read_text())
    params["train_cnn"]["epochs"] = 200
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.Popen(
        ["dvc", "repro", "train_cnn"], cwd=copy, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until training has started
        if "Running stage 'train_cnn'" in line:
            break
    time.sleep(4)
    os.killpg(proc.pid, 15)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    out = copy / "data" / "train_cnn"
    assert not (out / "model.pt").exists()
    assert not list(copy.rglob(".*.tmp"))
    params["train_cnn"]["epochs"] = TINY["train_cnn"]["epochs"] + 1  # not in DVC's run cache
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc2 = run(["dvc", "repro"], copy)
    assert "train_cnn" in ran_stages(proc2.stdout)
    assert (out / "model.pt").is_file()


PLUGIN_DEFENCE = '''"""A box blur: the mean of each window (differentiable; [0, 1] images stay in [0, 1])."""

from torch import nn


def box_blur(window: int) -> nn.Module:
    return nn.AvgPool2d(window, stride=1, padding=window // 2, count_include_pad=False)
'''
PLUGIN_ATTACK = '''"""FGSM at half the budget: never stronger than FGSM, so a test can predict its effect."""

import numpy as np

from advdenoise.attacks import fgsm
from advdenoise.attacks.specs import AttackCall


def half_fgsm(c: AttackCall) -> list[np.ndarray]:
    return [fgsm(c.classifier, c.x, c.y, c.eps / 2, c.attack.batch_size)]
'''


def add_plugins(root: Path) -> None:
    """docs/extending.md's recipe: one file and one registry entry per plug-in."""
    (root / "src/advdenoise/defences/blur.py").write_text(PLUGIN_DEFENCE)
    (root / "src/advdenoise/attacks/half_fgsm.py").write_text(PLUGIN_ATTACK)
    specs = root / "src/advdenoise/defences/specs.py"
    entry = '    DefenceSpec("jpeg", "advdenoise.defences.jpeg:jpeg_compression", {"quality": "jpeg_quality"}),\n'
    text = specs.read_text()
    assert entry in text
    blur = '    DefenceSpec("blur", "advdenoise.defences.blur:box_blur", {"window": "smoothing_window"}),\n'
    specs.write_text(text.replace(entry, entry + blur))
    specs = root / "src/advdenoise/attacks/specs.py"
    entry = '    AttackSpec("apgd", "APGD-CE", "advdenoise.attacks.runs:run_apgd", "robustness.apgd"),\n'
    text = specs.read_text()
    assert entry in text
    half = (
        '    AttackSpec("half_fgsm", "FGSM/2", "advdenoise.attacks.half_fgsm:half_fgsm", None),\n'
    )
    specs.write_text(text.replace(entry, entry + half))


# robustness figures over every attack (or over their survivors): a new attack may move them
OVER_ATTACKS = ("worst", "robust_accuracy", "apgd_more_restarts", "square.breaks_beyond",
                "square.gradient_", "square.masking", "adaptive_le_oblivious",
                "gradient_not_masked", "apgd_restarts_converged", "all_passed")  # fmt: skip


def over_attacks(key: str) -> bool:
    return any(part in key for part in OVER_ATTACKS)


def test_a_plugin_defence_and_attack_change_no_other_figure(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A defence and an attack added by the recipe: every figure that is neither theirs nor a
    worst case over attacks repeats exactly; worst cases can only fall."""
    copy = tmp_path / "plugins"
    shutil.copytree(repo, copy, symlinks=True)
    run(["git", "checkout", "-q", "--", "."], copy)
    before = {p.name: flatten(json.loads(p.read_text())) for p in (copy / "metrics").glob("*.json")}
    add_plugins(copy)
    raw = read_yaml((copy / "params.yaml").read_text())
    raw["robustness"]["defences"].append("blur")
    (copy / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("PYTHONPATH", str(copy / "src"))  # the stages import the copy's package
    run(["dvc", "repro"], copy)
    after = {p.name: flatten(json.loads(p.read_text())) for p in (copy / "metrics").glob("*.json")}
    assert set(after) == set(before)
    for name, old in before.items():
        new = after[name]
        assert set(old) <= set(new), name
        added = set(new) - set(old)
        assert all(".half_fgsm." in k or k.startswith(("blur.", "checks.blur.")) for k in added), (
            name, sorted(added)[:10])  # fmt: skip
        assert any(k.startswith("blur.") for k in added) == (name == "robustness.json")
        for key, value in old.items():
            if name != "robustness.json" or not over_attacks(key):
                assert new[key] == value, (name, key, value, new[key])
            elif key.endswith("accuracy"):
                assert new[key] <= value, key  # one attack more: a worst case can only fall
    rob_new = after["robustness.json"]
    assert "blur.robust_accuracy" in rob_new and "ae.adaptive.half_fgsm.accuracy" in rob_new
