"""Drift between runs: the population stability index, the histograms a run keeps, and the
comparison a classify run makes with the runs before it on the same output."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from helpers import COLORS, write_image
from typer.testing import CliRunner

from classify_job.classify.config import ClassifyConfig
from classify_job.classify.merge import merge_outputs
from classify_job.classify.pipeline import run_classify
from classify_job.cli import app
from classify_job.loop.drift import (
    ALERT,
    NONE,
    NOT_ENOUGH,
    WATCH,
    RunHistograms,
    compare,
    flag_of,
    psi,
    reference_runs,
    unfamiliar_edges,
)
from classify_job.runrecords import write_run_record


def test_identical_histograms_have_zero_psi_whatever_their_size():
    assert psi([5, 3, 0, 2], [5, 3, 0, 2]) == 0.0
    assert psi([50, 30, 0, 20], [5, 3, 0, 2]) == pytest.approx(0.0, abs=1e-12)


def test_a_known_shift_gives_the_textbook_value():
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)  # p = (.5, .5) against q = (.25, .75)
    assert psi([50, 50], [25, 75], smoothing=0) == pytest.approx(expected, rel=1e-12)
    assert psi([50, 50], [25, 75]) == pytest.approx(expected, abs=0.01)  # smoothing: half a row per bin
    assert psi([50, 50], [25, 75]) == pytest.approx(psi([25, 75], [50, 50]))  # symmetric


def test_smoothing_keeps_empty_bins_finite():
    value = psi([100, 0], [0, 100])
    assert math.isfinite(value) and value > 5  # a large, finite penalty
    assert 0 < psi([197, 3], [200, 0]) < 0.05  # three stray rows are not a shift
    with np.errstate(divide="ignore", invalid="ignore"):
        assert not math.isfinite(psi([100, 0], [0, 100], smoothing=0))


def test_flags_are_set_at_the_documented_thresholds():
    assert [flag_of(v) for v in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0)] == [
        NONE, NONE, WATCH, WATCH, ALERT, ALERT,
    ]  # fmt: skip
    assert flag_of(None) == NOT_ENOUGH


def facts(run_id: str, labels: dict[str, int], confidence: list[int], model: str = "m") -> dict:
    edges = [i / 10 for i in range(11)]
    histograms = {
        "rows": sum(labels.values()),
        "labels": labels,
        "confidence": {"edges": edges, "counts": confidence},
    }
    return {"run_id": run_id, "model_id": model, "calibration_id": None, "histograms": histograms}


def test_a_side_under_min_rows_gives_not_enough_data_never_a_flag():
    small = facts("r2", {"a": 150, "b": 0}, [0] * 9 + [150])  # one class gone: a huge shift
    big = facts("r1", {"a": 500, "b": 500}, [0] * 5 + [200] * 5)
    drift = compare(small, [big], min_rows=200)
    assert drift["flag"] == NOT_ENOUGH
    for signal in drift["signals"].values():
        assert signal["flag"] == NOT_ENOUGH and signal["psi"] is None
        assert (signal["rows"], signal["reference_rows"]) == (150, 1000)
    assert compare(small, [big], min_rows=150)["flag"] == ALERT
    first = compare(big, [], min_rows=200)  # a first run has nothing to compare with
    assert first["flag"] == NOT_ENOUGH and first["reference_run_ids"] == []


def test_earlier_runs_are_pooled_and_the_moved_labels_listed():
    earlier = [facts("r1", {"a": 100, "b": 100}, [0] * 9 + [200]), facts("r2", {"a": 300}, [0] * 9 + [300])]
    drift = compare(facts("r3", {"a": 200, "b": 200}, [0] * 9 + [400]), earlier, min_rows=200)
    labels = drift["signals"]["labels"]
    assert labels["reference_rows"] == 500 and labels["psi"] == pytest.approx(
        psi([200, 200], [400, 100]), abs=1e-4
    )
    assert labels["moved"][0] == {"label": "a", "share": 0.5, "reference_share": 0.8}
    assert drift["signals"]["confidence"]["psi"] == 0.0 and drift["flag"] == labels["flag"] == ALERT


def test_run_histograms_count_readable_rows_only():
    table = pa.table(
        {
            "status": ["ok", "ok", "ok", "error", "ok"],
            "label": ["a", "b", "b", None, "a"],
            "confidence": [1.0, 0.55, 0.05, None, 0.1],
            "unfamiliar_score": [0.0, 9.9, 1.0, None, None],  # a null score is left out of its histogram
        }
    )
    histograms = RunHistograms(("a", "b", "c"), unfamiliar_cutoff=2.0)
    histograms.add(table)
    histograms.add(table.slice(3, 1))  # an error row alone adds nothing
    data = histograms.to_json()
    assert data["rows"] == 4 and data["labels"] == {"a": 2, "b": 2, "c": 0}
    assert data["confidence"]["counts"] == [1, 1, 0, 0, 0, 1, 0, 0, 0, 1]  # 1.0 in the last bin
    assert data["unfamiliar"]["edges"] == unfamiliar_edges(2.0) and data["unfamiliar"]["edges"][-1] is None
    counts = data["unfamiliar"]["counts"]
    assert sum(counts) == 3 and counts[0] == 1 and counts[-1] == 1  # 9.9 > 3 x cut-off: the open bin
    assert RunHistograms(("a",)).to_json() is None  # nothing readable: nothing to keep


def test_reference_is_the_last_runs_of_the_same_model_with_histograms(tmp_path):
    for i in range(5):
        write_run_record(tmp_path, facts(f"2026{i}", {"a": 10}, [0] * 9 + [10]))
    write_run_record(tmp_path, facts("20265", {"a": 10}, [0] * 9 + [10], model="other"))
    write_run_record(tmp_path, {"run_id": "20266", "model_id": "m", "calibration_id": None})  # before drift
    damaged = facts("20267", {"a": 10}, [0] * 9 + [10])
    damaged["histograms"]["confidence"]["counts"] = [1, 2]
    write_run_record(tmp_path, damaged)
    (tmp_path / "runs" / "20268.json").write_text("{not json")
    current = facts("20269", {"a": 10}, [0] * 9 + [10])
    assert [r["run_id"] for r in reference_runs(tmp_path, current, 3)] == ["20262", "20263", "20264"]


def add_images(root: Path, batch: str, per_class: int, colors: dict[str, tuple[int, int, int]]) -> None:
    for name, color in colors.items():
        for i in range(per_class):
            write_image(root / batch / name / f"{batch}_{name}_{i:03d}.png", color, size=(12, 10))


def run_record(out: Path, run_id: str) -> dict:
    return json.loads((out / "runs" / f"{run_id}.json").read_text())


def drift_section(out: Path) -> str:
    page = (out / "report.html").read_text()
    return re.search(r'<section id="drift">(.*?)</section>', page, re.S).group(1)


def test_an_injected_shift_raises_a_flag_and_an_unchanged_rerun_none(color_bundle, tmp_path, caplog):
    tree, out = tmp_path / "tree", tmp_path / "out"
    config = ClassifyConfig(tree, color_bundle, out, batch_size=64)
    add_images(tree, "week1", 70, COLORS)
    first = run_classify(config)
    stored = run_record(out, first.run_id)
    assert stored["histograms"]["rows"] == 210 and stored["histograms"]["labels"] == dict.fromkeys(
        ("blue", "green", "red"), 70
    )
    assert (
        sum(stored["histograms"]["confidence"]["counts"]) == 210 and "unfamiliar" not in stored["histograms"]
    )
    assert first.summary["drift"]["flag"] == NOT_ENOUGH  # nothing earlier to compare with

    add_images(tree, "week2", 70, COLORS)  # new files, same distribution
    second = run_classify(config)
    drift = second.summary["drift"]
    assert drift["run_id"] == second.run_id and drift["reference_run_ids"] == [first.run_id]
    assert drift["flag"] == NONE and drift["signals"]["labels"]["rows"] == 210, drift
    assert drift["signals"]["labels"]["reference_rows"] == 210

    halved = {name: tuple(c // 2 for c in color) for name, color in COLORS.items() if name != "blue"}
    add_images(tree, "week3", 105, halved)  # blue gone, brightness halved
    with caplog.at_level(logging.WARNING, logger="classify_job"):
        third = run_classify(config)
    drift = json.loads((out / "summary.json").read_text())["drift"]
    assert drift["run_id"] == third.run_id and drift["new"] is True
    assert drift["reference_run_ids"] == [first.run_id, second.run_id]
    assert drift["flag"] in (WATCH, ALERT) and drift["signals"]["labels"]["flag"] == ALERT
    assert drift["signals"]["labels"]["moved"][0]["label"] == "blue"
    assert drift["signals"]["labels"]["moved"][0]["share"] == 0.0
    assert any(f"drift {drift['flag']}: run {third.run_id}" in r.getMessage() for r in caplog.records)
    section = drift_section(out)
    assert third.run_id in section and "<strong>alert</strong>" in section and "blue" in section
    assert f"drift {drift['flag']}: run {third.run_id}" in (out / "summary.md").read_text()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="classify_job"):
        rerun = run_classify(config)  # unchanged: classifies nothing
    assert rerun.progress.classified == 0
    assert "drift" not in run_record(out, rerun.run_id) and "histograms" not in run_record(out, rerun.run_id)
    assert not [r for r in caplog.records if "drift" in r.getMessage()]
    drift = json.loads((out / "summary.json").read_text())["drift"]
    assert drift["run_id"] == third.run_id and drift["new"] is False  # the latest comparison, not a new one
    assert "no new flag" in (out / "summary.md").read_text()


def test_merged_shards_show_no_comparison_rather_than_a_wrong_one(color_bundle, tiny_tree, tmp_path):
    tree = tiny_tree(per_class=4)
    shards = [tmp_path / f"shard{k}" for k in range(2)]
    for k, out in enumerate(shards):
        run_classify(ClassifyConfig(tree, color_bundle, out, shard=f"{k}/2"))
        assert json.loads((out / "summary.json").read_text())["drift"]["run_id"]  # each shard compares
    merged = merge_outputs(shards, tmp_path / "merged")
    assert merged.summary["drift"] is None
    assert "no comparison" in (tmp_path / "merged" / "summary.md").read_text()
    from classify_job.report.html import write_html_report

    write_html_report(tmp_path / "merged", merged.summary)
    assert "No comparison recorded" in drift_section(tmp_path / "merged")


def test_drift_settings_are_checked(tmp_path):
    result = CliRunner().invoke(
        app, ["classify", str(tmp_path), "--model", str(tmp_path), "--out", str(tmp_path / "o"),
              "--drift-min-rows", "0"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "drift_min_rows must be at least 1" in result.output


@pytest.fixture(scope="module")
def calibrated_bundle(color_bundle, tmp_path_factory) -> Path:
    """The colour bundle with a decision rule (so an unfamiliar score and its cut-off)."""
    import shutil

    from classify_job.bundle import load_bundle
    from classify_job.decisions.calibration import HeldOut
    from classify_job.decisions.fitting import CalibrationSets, RuleChoice, fit_decision_rule
    from classify_job.train.dataset import load_split
    from classify_job.train.evaluate import labelled_files, predict_with_features

    tmp = tmp_path_factory.mktemp("calibrated")
    add_images(tmp, "data", 70, COLORS)
    bundle = shutil.copytree(color_bundle, tmp / "bundle")
    loaded_bundle = load_bundle(bundle)
    samples = labelled_files(tmp / "data", "all", loaded_bundle.spec.labels, loaded_bundle.spec.extra)
    loaded = load_split(tmp / "data", samples, loaded_bundle.spec.image_size)
    probs, features = predict_with_features(loaded_bundle.model, loaded.images)
    held = HeldOut(probs, loaded.labels, features, "colour images")
    fit_decision_rule(bundle, loaded_bundle.spec, CalibrationSets(held, held, held), held, RuleChoice(0.95))
    return bundle


def test_the_unfamiliar_score_drifts_on_its_own(calibrated_bundle, tmp_path):
    cutoff = json.loads((calibrated_bundle / "bundle.json").read_text())["unfamiliar"]["cutoff"]
    tree, out = tmp_path / "tree", tmp_path / "out"
    config = ClassifyConfig(tree, calibrated_bundle, out, batch_size=64)
    add_images(tree, "week1", 140, COLORS)  # 420 rows a side: a chance PSI of about 0.03
    first = run_classify(config)
    assert first.record["histograms"]["unfamiliar"]["edges"] == unfamiliar_edges(cutoff)
    add_images(tree, "week2", 140, COLORS)
    assert run_classify(config).record["drift"]["signals"]["unfamiliar"]["flag"] == NONE
    faded = {name: tuple((c + 128) // 2 for c in color) for name, color in COLORS.items()}
    add_images(tree, "week3", 70, faded)  # same labels, same confidence, but unlike the training images
    signals = run_classify(config).summary["drift"]["signals"]
    assert signals["labels"]["flag"] == signals["confidence"]["flag"] == NONE
    assert signals["unfamiliar"]["flag"] == ALERT and signals["unfamiliar"]["reference_rows"] == 840
