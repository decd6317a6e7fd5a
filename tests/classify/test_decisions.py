"""Every row carries its decision; classify, the summary, the report and tagging agree on each one;
a new calibration re-decides earlier rows without running the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import colour_folder, write_image

from classify_job.bundle import load_bundle, read_spec
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.decisions.calibration import HeldOut
from classify_job.decisions.fitting import CalibrationSets, RuleChoice, fit_decision_rule
from classify_job.report.html import write_reports
from classify_job.report.tagging import tag_catalog
from classify_job.train.dataset import load_split
from classify_job.train.evaluate import labelled_files, predict_with_features
from classify_job.train.recalibrate import recalibrate_bundle


@pytest.fixture(scope="module")
def calibrated(color_bundle, tmp_path_factory) -> tuple[Path, Path]:
    """The colour bundle with a decision rule fitted on 70 held-out images per class."""
    tmp = tmp_path_factory.mktemp("cal")
    data = colour_folder(tmp / "data", 70)
    bundle = shutil.copytree(color_bundle, tmp / "bundle")
    spec = load_bundle(bundle).spec
    samples = labelled_files(data, "all", spec.labels, spec.extra)
    loaded = load_split(data, samples, spec.image_size)
    probs, features = predict_with_features(load_bundle(bundle).model, loaded.images)
    held = HeldOut(probs, loaded.labels, features, "colour images")
    fit_decision_rule(bundle, spec, CalibrationSets(held, held, held), held, RuleChoice(0.95))
    return bundle, data


def test_rows_carry_calibrated_values_raw_values_and_a_decision(calibrated, tmp_path):
    bundle, _ = calibrated
    tree = colour_folder(tmp_path / "tree", 3)
    write_image(tmp_path / "tree" / "odd" / "grey.png", (128, 128, 128))  # none of the classes
    (tmp_path / "tree" / "broken.png").write_bytes(b"not a png")
    run_classify(ClassifyConfig(tree, bundle, tmp_path / "out"))
    rows = pd.read_parquet(tmp_path / "out" / "predictions").set_index("relpath")
    spec = read_spec(bundle)
    ok = rows[rows.status == "ok"]
    assert (ok.calibration_id == spec.calibration["calibration_id"]).all()
    assert np.allclose(ok.raw_probs.map(max), ok.raw_confidence, atol=1e-6)
    assert (ok.decision[ok.index.str.match("(red|green|blue)/")] == "accept").all()
    assert (
        ok.loc["odd/grey.png", "decision"] == "review"
        and "unfamiliar" in ok.loc["odd/grey.png", "review_reason"]
    )
    assert rows.loc["broken.png", ["decision", "calibration_id"]].isna().all()
    assert ok.review_reason[ok.decision == "accept"].isna().all()


def test_classify_summary_report_and_tagging_agree_on_every_decision(calibrated, tmp_path):
    bundle, _ = calibrated
    tree = colour_folder(tmp_path / "tree", 3)
    write_image(tmp_path / "tree" / "odd" / "grey.png", (128, 128, 128))
    run_classify(ClassifyConfig(tree, bundle, tmp_path / "out"))
    rows = pd.read_parquet(tmp_path / "out" / "predictions")
    summary, page = write_reports(tmp_path / "out")
    counts = rows.decision.value_counts().to_dict()
    assert summary["decisions"] == {"accept": counts.get("accept", 0), "review": counts.get("review", 0)}
    assert f"{counts['review']:,} images need review" in page.read_text()
    catalog = tmp_path / "catalog.csv"
    rows["sku"] = rows.relpath.str.rsplit(".", n=1).str[0]
    catalog.write_text("sku\n" + "\n".join(rows.sku) + "\n")
    result = tag_catalog(tmp_path / "out", catalog, "sku", r"(?P<key>.+)\.png", dest=tmp_path / "tags")
    tagged = pd.read_csv(result.tagged).set_index("sku")
    expected = rows.set_index("sku").decision == "review"
    assert (tagged.needs_review.reindex(expected.index) == expected).all()


def test_a_new_calibration_redecides_earlier_rows_without_running_the_model(calibrated, tmp_path):
    bundle, data = calibrated
    tree = colour_folder(tmp_path / "tree", 3)
    run_classify(ClassifyConfig(tree, bundle, tmp_path / "out"))
    before = pd.read_parquet(tmp_path / "out" / "predictions").sort_values("relpath")
    stricter = recalibrate_bundle(bundle, data, tmp_path / "stricter", RuleChoice(0.999))
    assert stricter.model_id == read_spec(bundle).model_id
    assert stricter.calibration["calibration_id"] != read_spec(bundle).calibration["calibration_id"]
    result = run_classify(ClassifyConfig(tree, tmp_path / "stricter", tmp_path / "out"))
    assert result.progress.classified == 0 and result.record["redecided"] == len(before)
    after = pd.read_parquet(tmp_path / "out" / "predictions").sort_values("relpath")
    assert after.run_id.tolist() == before.run_id.tolist()  # the same rows, decided again
    assert (after.calibration_id == stricter.calibration["calibration_id"]).all()
    assert (after.decision == "review").all()  # 0.999 needs 2,995 correct predictions per class
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["decisions"]["review"] == len(after)
