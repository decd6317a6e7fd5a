"""The int8 gate on given predictions: it passes a graph that agrees with the float graph, and
refuses one that loses accuracy, or whose accepted labels fall below their target precision."""

from __future__ import annotations

import numpy as np

from classify_job.bundle import BundleSpec
from classify_job.train.int8_gate import Labelled, judge

LABELS = ("a", "b", "c")


def spec(calibrated: bool = True) -> BundleSpec:
    thresholds = {label: {"threshold": 0.5, "target_precision": 0.95} for label in LABELS}
    return BundleSpec(
        LABELS,
        (8, 8),
        "rgb",
        "cnn",
        calibration={"method": "temperature", "temperature": 1.0, "calibration_id": "cal-test"}
        if calibrated
        else None,
        accept_thresholds=thresholds if calibrated else None,
    )


def confident(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.full((len(labels), 3), 0.02, np.float32)
    probs[np.arange(len(labels)), labels] = 0.96
    return probs, np.zeros((len(labels), 4), np.float32)


TRUTH = np.arange(300) % 3
IMAGES = Labelled(np.zeros((300, 8, 8, 3), np.uint8), TRUTH, "test images")


def test_a_graph_that_agrees_passes(tmp_path):
    verdict = judge(tmp_path, spec(), IMAGES, confident(TRUTH), confident(TRUTH))
    assert verdict.passed and verdict.figures["top1_agreement"] == 1.0
    assert verdict.figures["accuracy_diff_lower_95"] == 0.0
    assert verdict.figures["accepted"]["int8"]["a"] == {"accepted": 100, "precision": 1.0}
    assert verdict.figures["accepted"]["decision_agreement"] == 1.0


def test_a_graph_that_loses_accuracy_is_refused(tmp_path):
    wrong = TRUTH.copy()
    wrong[:9] = (wrong[:9] + 1) % 3  # 3 points of accuracy lost
    verdict = judge(tmp_path, spec(calibrated=False), IMAGES, confident(TRUTH), confident(wrong))
    assert not verdict.passed and verdict.reasons[0].startswith("accuracy: int8 - float is -0.0300")
    assert verdict.figures["accuracy_diff_lower_95"] < -0.005


def test_accepted_labels_below_their_target_precision_are_refused(tmp_path):
    # int8 is as accurate overall but confident where it is wrong: class "a" gets 10 wrong accepted labels
    float_probs, features = confident(TRUTH)
    int8_probs = float_probs.copy()
    doubtful = np.flatnonzero(TRUTH == 0)[:10]
    float_probs[doubtful] = [0.45, 0.3, 0.25]  # the float graph doubts them: not accepted
    int8_probs[doubtful] = [0.9, 0.05, 0.05]
    truth = TRUTH.copy()
    truth[doubtful] = 1  # ... and they are not "a"
    images = Labelled(IMAGES.pixels, truth, "test images")
    verdict = judge(tmp_path, spec(), images, (float_probs, features), (int8_probs, features))
    assert not verdict.passed
    assert any(r.startswith("accepted 'a': int8 precision 0.9") for r in verdict.reasons), verdict.reasons
