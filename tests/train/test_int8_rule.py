"""The int8 graph decides with a rule fitted for it: train refits the float rule on the same
held-out images through the int8 graph, records it in the int8 export entry with its own
calibration_id, and classify decides with it whenever the int8 graph serves (re-deciding rows the
other graph wrote); ``calibrate`` refits it too."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from classify_job.bundle import BundleSpec, read_spec
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.decisions.rule import DecisionRule
from classify_job.errors import BundleError
from classify_job.train.int8_rule import THROUGH_INT8, shifted
from classify_job.train.pipeline import train
from classify_job.train.recalibrate import recalibrate_bundle

from .test_run import tiny_config


def test_the_shift_gives_the_int8_prediction_where_the_float_graph_made_the_held_out_one():
    rng = np.random.default_rng(0)
    served_float, served_int8 = (rng.dirichlet(np.ones(4), 50).astype(np.float32) for _ in range(2))
    np.testing.assert_allclose(shifted(served_float, served_float, served_int8), served_int8, atol=1e-5)
    out_of_fold = rng.dirichlet(np.ones(4), 50)  # another head's prediction: moved, still a distribution
    moved = shifted(out_of_fold, served_float, served_float)
    np.testing.assert_allclose(moved, out_of_fold, atol=1e-5)  # no change from int8, no change here
    np.testing.assert_allclose(shifted(out_of_fold, served_float, served_int8).sum(axis=1), 1, atol=1e-5)


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    from helpers import colour_folder

    data = colour_folder(root / "data", per_class=12)
    train(tiny_config(data, root / "model", int8=True))
    return root / "model", data


def int8_entry(spec):
    return next(e for e in spec.exports if e["format"] == "onnx-int8")


def test_train_records_the_int8_graphs_own_rule(int8_bundle):
    bundle, _ = int8_bundle
    spec = read_spec(bundle)
    entry = int8_entry(spec)
    own, floats = entry["calibration"], spec.calibration
    assert own["calibration_id"] != floats["calibration_id"]
    assert own["fitted_on"] == f"{floats['fitted_on']}, {THROUGH_INT8}"
    assert own["test"]["source"] == f"the test split, {THROUGH_INT8}"
    assert set(entry["accept_thresholds"]) == set(spec.labels)
    assert (
        entry["unfamiliar"]["sha256"] == spec.unfamiliar["sha256"]
    )  # the score is shared, its cut-off refitted
    assert entry["unfamiliar"]["cutoff_on"].endswith(THROUGH_INT8)
    gate = entry["verified"]["accepted"]
    assert gate["calibration_id"] == {"float": floats["calibration_id"], "int8": own["calibration_id"]}
    assert DecisionRule.from_bundle(bundle, spec, "onnx-int8").calibration_id == own["calibration_id"]
    assert DecisionRule.from_bundle(bundle, spec, "onnx").calibration_id == floats["calibration_id"]
    assert own["calibration_id"] in (bundle / "README.md").read_text()  # the model card says so


def classify(tree, bundle, out, runtime):
    result = run_classify(ClassifyConfig(tree, bundle, out, batch_size=8, runtime=runtime))
    return result, pd.read_parquet(out / "predictions")


def test_classify_decides_with_the_rule_of_the_graph_serving(int8_bundle, tmp_path):
    bundle, data = int8_bundle
    spec = read_spec(bundle)
    own = int8_entry(spec)["calibration"]["calibration_id"]
    result, rows = classify(data, bundle, tmp_path / "out", "onnx-int8")
    assert set(rows["calibration_id"]) == {own} and result.record["calibration_id"] == own
    (data / "red" / "late.png").write_bytes((data / "red" / "red_001.png").read_bytes())
    result, rows = classify(data, bundle, tmp_path / "out", "onnx")  # a rerun on the float graph
    assert set(rows["calibration_id"]) == {spec.calibration["calibration_id"]}
    assert result.record["redecided"] == len(rows) - 1 and result.record["runtime"] == "onnx"


def test_calibrate_refits_the_int8_graphs_rule_on_the_same_images(int8_bundle, tmp_path):
    bundle, data = int8_bundle
    old = int8_entry(read_spec(bundle))["calibration"]["calibration_id"]
    spec = recalibrate_bundle(bundle, data, tmp_path / "recalibrated")
    own = int8_entry(spec)["calibration"]
    assert own["calibration_id"] not in (old, spec.calibration["calibration_id"])
    assert own["fitted_on"] == f"{spec.calibration['fitted_on']}, {THROUGH_INT8}"
    assert int8_entry(read_spec(tmp_path / "recalibrated"))["calibration"] == own


def test_an_int8_entry_with_a_malformed_rule_is_refused_and_an_unverified_one_ignored():
    spec = BundleSpec(("a", "b"), (8, 8), "rgb", "cnn", calibration={"calibration_id": "cal-bundle"})
    with pytest.raises(BundleError, match="onnx-int8 export's calibration must be an object"):
        dataclasses.replace(spec, exports=({"format": "onnx-int8", "calibration": "high"},)).validate()
    unverified = {
        "format": "onnx-int8",
        "verified": {"passed": False},
        "calibration": {"calibration_id": "x"},
    }
    assert dataclasses.replace(spec, exports=(unverified,)).rule_keys("onnx-int8")["calibration"] == {
        "calibration_id": "cal-bundle"
    }


def test_the_report_shows_the_promises_of_the_graph_that_served():
    from classify_job.report.page import _decisions_section

    def rule(threshold):
        entry = {
            "threshold": threshold,
            "target_precision": 0.95,
            "lower_bound": 0.96,
            "correct": 70,
            "accepted": 70,
        }
        return {
            "calibration": {"calibration_id": f"cal-{threshold}"},
            "accept_thresholds": {"a": entry, "b": entry},
        }

    int8 = {"format": "onnx-int8", "verified": {"passed": True}, **rule(0.777)}
    spec = BundleSpec(("a", "b"), (8, 8), "rgb", "cnn", exports=(int8,), **rule(0.555))
    summary = {"decisions": {"accept": 3, "review": 1}}
    served = {
        name: _decisions_section({**summary, "runtime": name}, {"spec": spec})
        for name in ("onnx", "onnx-int8")
    }
    assert "0.555" in served["onnx"] and "0.777" not in served["onnx"]
    assert "0.777" in served["onnx-int8"] and "0.555" not in served["onnx-int8"]
