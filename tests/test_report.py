"""The report stage renders a small fake metrics/plots tree: content, tolerance, strictness."""

from __future__ import annotations

import base64
import html
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image as PILImage

from advdenoise import report
from advdenoise.report import rules

ROOT = Path(__file__).resolve().parents[1]

METRICS = {
    "prepare": {
        "test.COVID": 250,
        "test.non-COVID": 246,
        "test.total": 496,
        "duplicate_groups": 0,
        "leakage.groups": 98,
        "leakage.group_size_median": 22,
        "leakage.groups_shared": 91,
        "leakage.nn_accuracy": 0.931,
        "leakage.random.groups_shared": 91,
        "leakage.random.nn_accuracy": 0.931,
        "leakage.grouped.groups_shared": 0,
        "leakage.grouped.nn_accuracy": 0.584,
    },
    "train_cnn": {"test": {"accuracy": 0.8853, "roc_auc": 0.95}, "epochs": 12},
    "train_ae": {"test.clean.psnr": 28.1, "test.cnn_accuracy_denoised": 0.86},
    "attack": {
        "clean_accuracy": 0.8853,
        "fgsm.eps_0.01.accuracy": 0.7,
        "fgsm.eps_0.03.accuracy": 0.41,
        "pgd.eps_0.03.accuracy": 0.12,
        "check.pgd_le_fgsm": True,
    },
    "denoise": {
        "clean_accuracy": 0.8853,
        "denoised_clean_accuracy": 0.87,
        "pgd.adversarial_accuracy": 0.12,
        "pgd.denoised_accuracy": 0.2,
    },
    "embed": {
        "points_per_group": 400,
        "cnn.pgd.silhouette": 0.31,
        "cnn.pgd.probe_auroc.full": 0.97,
        "cnn.pgd.probe_auroc.pca": 0.81,
        "cnn.pgd.probe_auroc.tsne": 0.77,
        "cnn.pgd.probe_auroc.umap": 0.74,
        "ae.pgd.silhouette": 0.001,
        "ae.pgd.probe_auroc.full": 0.53,
        "ae.pgd.probe_auroc.pca": 0.51,
        "ae.pgd.probe_auroc.tsne": 0.5,
        "ae.pgd.probe_auroc.umap": 0.52,
        "detector.pgd.auroc": 0.55,
        "detector.pgd.tpr_at_5pct_fpr": 0.06,
        "detector.pgd.mean_error": 0.0041,
        "detector.clean.mean_error": 0.0040,
    },
}
PLOTS = {
    "train_cnn": ("training_curves.png", "confusion.png", "zz_extra.png"),
    "embed": ("cnn_embeddings.png", "detector_roc.png"),
}


def _png(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.full((8, 8), shade, np.uint8)).save(path)


def _tree(tmp: Path) -> dict[str, Path]:
    params = (
        (ROOT / "params.yaml")
        .read_text()
        .replace("methods: [fgsm, pgd]\n  pgd", "methods: [pgd]\n  pgd")
        .replace("split: grouped", "split: random")  # METRICS are those of a random-split run
    )
    (tmp / "params.yaml").write_text(params)
    for stage, data in METRICS.items():
        (tmp / "metrics").mkdir(exist_ok=True)
        (tmp / "metrics" / f"{stage}.json").write_text(json.dumps(data))
    for i, (stage, names) in enumerate(sorted(PLOTS.items())):
        for j, name in enumerate(names):
            _png(tmp / "plots" / stage / name, 40 * i + 10 * j)
    (tmp / "plots" / "embed" / "cnn_pca.csv").write_text("x,y,group,label\n")
    return {"root": tmp, "out": tmp / "report"}


def _stage():
    spec = importlib.util.spec_from_file_location("stage_report", ROOT / "stages" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp: Path) -> int:
    return _stage().main(
        [
            "--params", str(tmp / "params.yaml"), "--metrics", str(tmp / "metrics"),
            "--plots", str(tmp / "plots"), "--out", str(tmp / "report"),
            "--results", str(tmp / "results.md"),
        ]
    )  # fmt: skip


def _text(page: str) -> str:
    """The visible text of the page, without tags (and without the embedded images)."""
    page = re.sub(r"</?(strong|code)>", "", page)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_report_renders_paper_numbers_figures_and_conclusions(tmp_path):
    paths = _tree(tmp_path)
    assert _run(tmp_path) == 0
    page = (paths["out"] / "index.html").read_text()
    text = _text(page)
    # the paper's figure next to this run's accuracy in the same table row
    row = re.search(r"<tr><td>clean test accuracy</td>(.*?)</tr>", page)
    assert row and "93.2%" in row.group(1) and "88.5%" in row.group(1)
    # every PNG embedded as a data URI, byte for byte
    for stage, names in PLOTS.items():
        for name in names:
            data = base64.b64encode((tmp_path / "plots" / stage / name).read_bytes()).decode()
            assert f"data:image/png;base64,{data}" in page
    assert "test 246 250 496" in text  # split sizes: non-COVID, COVID, total
    assert (
        "Leakage (random split): 91 of 98 scan groups have images in both train and test, and a "
        "1-nearest-neighbour lookup of test images among training images scores 93.1%" in text
    )
    assert "random (this run) 91 93.1% grouped 0 58.4%" in text  # both splits side by side
    assert "zz_extra.png" in text  # an unknown PNG is shown with its file name
    assert 'src="../' not in page and "file://" not in page  # self-contained
    # conclusions derived from the numbers, with the thresholds
    assert (
        "The autoencoder bottleneck separates clean from PGD eps=0.03 images with probe AUROC "
        "0.53 - indistinguishable" in text
    )
    assert (
        "CNN penultimate layer separates clean from PGD eps=0.03 images with probe AUROC 0.97 - separable"
        in text
    )
    assert "lowers accuracy from 88.5% to 12.0%" in text
    assert "AUROC < 0.6 indistinguishable" in text
    # optional stages that did not run say so
    assert "Not run: metrics/robustness.json is absent" in text
    assert "Not run: metrics/train_ae_adv.json is absent" in text
    assert "gives 20.0%, 10.5% of the loss recovered: it does not restore it" in text
    assert "changes accuracy from 88.5% to 87.0% (-1.5 points)" in text
    toc = re.findall(r'<a href="#([a-z0-9-]+)">', page)
    ids = re.findall(r'<h2 id="([a-z0-9-]+)">', page)
    assert toc == ids and "does-denoising-defend" in ids


def test_markdown_links_figures_relative_to_the_report(tmp_path):
    paths = _tree(tmp_path)
    assert _run(tmp_path) == 0
    md = (paths["out"] / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == sorted(
        f"../plots/{stage}/{name}" for stage, names in PLOTS.items() for name in names
    )
    for link in links:
        assert (paths["out"] / link).resolve().is_file()
    assert "| clean test accuracy | 93.2% | 88.5% |" in md
    assert "(#does-denoising-defend)" in md and "## Does denoising defend?" in md


def test_output_is_deterministic(tmp_path):
    paths = _tree(tmp_path)
    assert _run(tmp_path) == 0
    outputs = [paths["out"] / "index.html", paths["out"] / "report.md", tmp_path / "results.md"]
    first = [p.read_bytes() for p in outputs]
    assert _run(tmp_path) == 0
    assert first == [p.read_bytes() for p in outputs]


def test_malformed_json_is_an_error_naming_the_file(tmp_path, capsys):
    paths = _tree(tmp_path)
    (tmp_path / "metrics" / "embed.json").write_text('{"cnn.pgd.silhouette": 0.3,')
    assert _run(tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "embed.json" in err and "not valid JSON" in err
    assert not (paths["out"] / "index.html").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [('{"a": "high"}', "is not a number"), ('{"a": NaN}', "is not finite"), ("[1, 2]", "object")],
)
def test_malformed_metrics_are_errors(tmp_path, capsys, content, message):
    _tree(tmp_path)
    (tmp_path / "metrics" / "attack.json").write_text(content)
    assert _run(tmp_path) == 2
    err = capsys.readouterr().err
    assert "attack.json" in err and message in err


def test_robustness_section_renders_any_defences_and_verdicts(tmp_path):
    _tree(tmp_path)
    rob = {"eps": 0.008, "test_images": 200, "chance": 0.5}
    for d, clean, obl, worst in (("none", 0.9, 0.1, 0.1), ("ae", 0.88, 0.7, 0.12),
                                 ("ae_adv", 0.86, 0.84, 0.8), ("mystery", 0.5, 0.5, 0.5)):  # fmt: skip
        rob |= {f"{d}.clean_accuracy": clean, f"{d}.oblivious.pgd.accuracy": obl,
                f"{d}.adaptive.pgd.accuracy": worst, f"{d}.oblivious.worst.accuracy": obl,
                f"{d}.adaptive.worst.accuracy": worst, f"{d}.robust_accuracy": worst}  # fmt: skip
    rob |= {"none.adaptive.blur_attack.accuracy": 0.3}  # an attack of a plug-in: its column
    rob |= {"checks.all_passed": False, "checks.ae.pgd_converged": False}
    rob |= {f"detector.{t}.{k}": 0.5 for t in ("oblivious", "adaptive")
            for k in ("auroc", "tpr_at_5fpr", "evasion_rate")}  # fmt: skip
    rob |= {"detector.eps": 0.008, "detector.adaptive.auroc": 0.31}
    (tmp_path / "metrics" / "robustness.json").write_text(json.dumps(rob))
    assert _run(tmp_path) == 0
    text = _text((tmp_path / "report" / "index.html").read_text())
    # the columns follow the attacks in the metrics: obl. PGD, ad. PGD, ad. blur_attack, worst ...
    assert "oblivious FGSM" not in text and "adaptive blur_attack" in text
    assert "none 90.0% 10.0% 10.0% 30.0% 10.0% 10.0% - - 10.0%" in text
    assert "ae 88.0% 70.0% 12.0% - 70.0%" in text
    assert "on 200 test images (robustness.max_images)" in text
    assert "mystery 50.0%" in text
    assert "ae: clean 88.0%" in text and "helps only against the oblivious attack" in text
    assert "ae_adv: clean 86.0%" in text and "defends" in text
    assert "failed: checks.ae.pgd_converged, checks.all_passed" in text
    assert "adaptive: AUROC 0.31" in text
    assert "Not run: metrics/robustness.json" not in text
    assert "no defence is flagged at this budget" in text  # no Square figures: p = 1 everywhere


def _l2_metrics(violated: bool) -> tuple[dict, dict]:
    """certify and robustness metrics with L2 figures at the default radii (cnn at sigma 0.25
    only); `violated`: the certificate at r = 0.25 claims more than the attack left."""
    radii = (0.0, 0.1, 0.25, 0.5, 1.0)
    upper = (0.9, 0.8, 0.5 if violated else 0.7, 0.4, 0.1)
    lower = (0.8, 0.7, 0.7, 0.0, 0.0)
    key = "cnn.sigma_0.25"
    cert = {"images": 20, "l2_images": 8, f"checks.{key}.l2_certified_le_attacked": not violated}
    for r, hi, lo in zip(radii, upper, lower, strict=True):
        cert |= {
            f"{key}.l2.radius_{r:g}.accuracy": hi,
            f"{key}.l2.radius_{r:g}.certified_accuracy": lo,
        }
    rob = {"eps": 0.008, "test_images": 40, "l2_images": 10, "checks.none.l2_le_linf_inside": True}
    for d, clean, worst in (("none", 0.95, 0.1), ("ae", 0.9, 0.5)):
        rob |= {f"{d}.clean_accuracy": clean, f"{d}.robust_accuracy": worst,
                f"{d}.oblivious.worst.accuracy": worst, f"{d}.adaptive.worst.accuracy": worst}  # fmt: skip
    curve = (0.9, 0.6, 0.3, 0, 0)
    rob |= {f"none.l2.radius_{r:g}.accuracy": a for r, a in zip(radii, curve, strict=True)}
    return cert, rob


@pytest.mark.parametrize("violated", [False, True])
def test_the_l2_section_sets_certified_beside_attacked_and_names_a_violation(tmp_path, violated):
    _tree(tmp_path)
    cert, rob = _l2_metrics(violated)
    (tmp_path / "metrics" / "certify.json").write_text(json.dumps(cert))
    (tmp_path / "metrics" / "robustness.json").write_text(json.dumps(rob))
    _png(tmp_path / "plots" / "certify" / "bounds.png", 99)
    assert _run(tmp_path) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    text = _text(page)
    assert "Proven vs broken: L2 attacks at the certified radii" in text
    middle = "50.0%" if violated else "70.0%"
    assert (
        f"cnn 0.25 80.0% - 90.0% 70.0% - 80.0% 70.0% - {middle} 0.0% - 40.0% 0.0% - 10.0%" in text
    )
    assert ("FAILED" in text) is violated
    assert "none 90.0% 60.0% 30.0% 0.0% 0.0% passed" in text
    assert "of the robustness stage's images" in text and "on 10 of" in text
    if violated:
        assert "FAILED for cnn.sigma_0.25: a certificate claims more than the attack left" in text
    else:
        assert "held for all 1 (model, sigma) pairs. The widest gap, 40.0 points (cnn, " in text
    assert text.count("certified accuracy (solid, a lower bound)") == 1  # bounds.png, once
    results = (tmp_path / "results.md").read_text()
    assert "Proven vs broken" in results and "bounds.png" not in results


def test_the_masking_sentence_states_the_budget_and_names_what_it_flags():
    from advdenoise.core.params import load_params
    from advdenoise.report.robustness import masking_sentence

    cfg = load_params(Path(__file__).resolve().parents[1] / "params.yaml").robustness
    m = {"square_images": 40, "none.clean_accuracy": 0.9, "jpeg.clean_accuracy": 0.9,
         "ae.clean_accuracy": 0.5, "none.square.masking_p_value": 1.0,
         "jpeg.square.masking_p_value": 0.0625, "ae.square.masking_p_value": 0.5}  # fmt: skip
    calm = masking_sentence(m, cfg)
    assert f"({cfg.square_queries} queries per image" in calm and "one of 40 images" in calm
    assert "no defence is flagged at this budget (smallest p: jpeg, 0.0625)" in calm
    m["jpeg.square.masking_p_value"] = 0.03125
    assert "it flags jpeg: there the white-box figures rest on masked gradients" in (
        masking_sentence(m, cfg)
    )


def test_everything_missing_still_renders(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    assert _run(tmp_path) == 0
    text = _text((tmp_path / "report" / "index.html").read_text())
    for stage in report.STAGES:
        assert f"metrics/{stage}.json is absent" in text, stage


def test_verdict_thresholds():
    assert rules.separability(0.59) == "indistinguishable"
    assert rules.separability(0.6) == "partly separable"
    assert rules.separability(0.8) == "separable"
    assert rules.restoration(0.9, 0.1, 0.8)[1] == "restores it"
    assert rules.restoration(0.9, 0.1, 0.3)[1] == "partly restores it"
    assert rules.restoration(0.9, 0.1, 0.15)[1] == "does not restore it"
    assert rules.restoration(0.9, 0.88, 0.2)[0] is None


def test_report_reads_every_stage_of_dvc_yaml():
    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    assert list(report.STAGES) == [s for s in stages if s != "report"]


def test_html_escapes_text_and_both_renderings_carry_the_same_blocks(tmp_path):
    from advdenoise.report.document import Bullets, Paragraph, Section, Table
    from advdenoise.report.render import render_html, render_markdown

    sections = [
        Section("A <b> & 'c'", [Paragraph("x < y and **bold** and `code`")]),
        Section("Two", [Bullets(("one | two",)), Table(("k", "v"), (("a|b", "<1>"),))]),
    ]
    page = render_html(sections)
    assert "<b>" not in page and "&lt;b&gt;" in page
    assert "x &lt; y and <strong>bold</strong> and <code>code</code>" in page
    assert "<td>a|b</td><td>&lt;1&gt;</td>" in page
    md = render_markdown(sections, tmp_path)
    assert md.startswith("# ") and md.endswith("|\n") and "\n\n\n" not in md
    assert "1. [A <b> & 'c'](#a-b--c)" in md
    assert "x < y and **bold** and `code`" in md
    assert "| a\\|b | <1> |" in md
    assert _text(page).count("one | two") == 1 and "- one | two" in md


def test_pivot_turns_per_eps_keys_into_a_method_by_eps_grid():
    from advdenoise.report.document import pivot

    m = {"pgd.eps_0.03.accuracy": 0.1, "fgsm.eps_0.008.accuracy": 0.5, "fgsm.eps_0.03.accuracy": 0.25,
         "fgsm.eps_0.008.success_rate": 0.4, "ae.sigma_0.25.radius_0.certified_accuracy": 0.6,
         "clean_accuracy": 0.9}  # fmt: skip
    tables = pivot(m, "eps", rows=("pgd",))
    assert set(tables) == {"accuracy", "success_rate"}
    assert tables["accuracy"].columns == ("", "eps 0.008", "eps 0.03")  # sorted by value
    assert tables["accuracy"].rows == (("pgd", "-", "10.0%"), ("fgsm", "50.0%", "25.0%"))
    radius = pivot(m, "radius")["certified_accuracy"]
    assert radius.rows == (("ae.sigma_0.25", "60.0%"),) and radius.columns == ("", "radius 0")


def _robustness_tree(tmp: Path) -> dict[str, float | bool]:
    """The fake tree plus robustness and certify metrics: none broken, ae defends at 75%."""
    _tree(tmp)
    rob: dict[str, float | bool] = {"eps": 0.008, "test_images": 40, "chance": 0.5}
    for d, clean, worst in (("none", 0.9, 0.0), ("ae", 0.8, 0.75), ("jpeg", 0.95, 0.3)):
        rob |= {f"{d}.clean_accuracy": clean, f"{d}.robust_accuracy": worst,
                f"{d}.oblivious.worst.accuracy": worst, f"{d}.adaptive.worst.accuracy": worst,
                f"{d}.eps_0.004.worst.accuracy": (clean + worst) / 2,
                f"{d}.eps_0.008.worst.accuracy": worst}  # fmt: skip
    rob |= {"checks.jpeg.gradient_not_masked": False, "checks.ae.pgd_converged": True}
    (tmp / "metrics" / "robustness.json").write_text(json.dumps(rob))
    cert = {"chance": 0.5, "images": 20}
    for r, acc in ((0, 0.7), (0.5, 0.55), (1, 0.0)):
        cert[f"ae.sigma_0.5.radius_{r:g}.certified_accuracy"] = acc
        cert[f"cnn.sigma_0.25.radius_{r:g}.certified_accuracy"] = 0.5 if r < 1 else 0.0
    (tmp / "metrics" / "certify.json").write_text(json.dumps(cert))
    return rob


def test_the_first_screen_is_figure_verdicts_and_three_sentences(tmp_path):
    _robustness_tree(tmp_path)
    assert _run(tmp_path) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    first = page.split('<h2 id="summary">Summary</h2>', 1)[1].split("<h2", 1)[0]
    assert page.index('id="summary"') < page.index("<h2 id=", page.index('id="summary"') + 1)
    text = _text(first)
    paragraph = _text(re.search(r"<p>(.*?)</p>", first).group(1))
    assert len(re.findall(r"\.(?= [A-Z0-9]|$)", paragraph)) == 3, paragraph  # three sentences
    assert "the undefended CNN keeps 0.0%; the best defence, ae, keeps 75.0% at 80.0% clean" in text
    assert "(defends), and 1 of 2 defences defend" in text
    # the figure is drawn from the metrics and embedded, then one verdict row per defence
    png = (tmp_path / "report" / "headline.png").read_bytes()
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in first
    assert "ae 80.0% 75.0% defends -" in text and "jpeg 95.0% 30.0% helps partly" in text
    assert "gradient_not_masked" in text  # a failed check is named beside its verdict
    # the comparable radius: robustness.eps x 64 px = 0.512 -> 0.5; ae certifies 55% there
    assert "at L2 radius 0.5 (an L-inf ball of 0.0078) is 55.0% (paper's AE + CNN" in text
    assert "<details>" not in first  # raw dumps come later, folded
    later = page.split('<h2 id="attacks">', 1)[1]
    assert "<details><summary>All 5 metrics of metrics/attack.json</summary>" in later
    grid = re.search(r"accuracy per eps:</p>\s*<table>(.*?)</table>", later, re.S).group(1)
    assert "<th>eps 0.01</th>" in grid and "<td>fgsm</td><td>70.0%</td><td>41.0%</td>" in grid


def test_no_headline_figure_without_robustness_or_certify(tmp_path):
    _tree(tmp_path)
    assert _run(tmp_path) == 0
    assert not (tmp_path / "report" / "headline.png").exists()
    assert "<img" not in _text((tmp_path / "report" / "index.html").read_text())


def test_results_md_holds_the_headline_grids(tmp_path):
    _robustness_tree(tmp_path)
    assert _run(tmp_path) == 0
    md = (tmp_path / "results.md").read_text()
    assert md.startswith("# Results\n")
    assert "| ae | 80.0% | 75.0% | **defends** | - |" in md  # verdict table
    assert "| ae | 80.0% | 77.5% | 75.0% |" in md  # eps 0 (clean), 0.004, 0.008
    # rows in certify.models order, columns by radius
    assert (
        "| cnn.sigma_0.25 | 50.0% | 50.0% | 0.0% |\n| ae.sigma_0.5 | 70.0% | 55.0% | 0.0% |" in md
    )
    assert "| pgd | 88.5% | - | 12.0% |\n| fgsm | 88.5% | 70.0% | 41.0% |" in md  # clean, .01, .03


def test_committed_results_md_is_generated_from_the_committed_metrics(tmp_path):
    from advdenoise.core.params import load_params

    inputs = report.load_inputs(load_params(ROOT / "params.yaml"), ROOT / "metrics", tmp_path)
    expected = report.render_markdown(report.results_sections(inputs), ROOT, report.RESULTS_TITLE)
    assert (ROOT / "results.md").read_text() == expected, "run `dvc repro report`"
