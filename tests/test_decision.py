"""The decision rule: calibrated confidences, per-class thresholds, the unfamiliar cut-off, and the
first release's rule for bundles without calibration."""

import numpy as np
import pyarrow as pa

from classify_job.decisions.rule import (
    ACCEPT,
    REVIEW,
    DecisionRule,
    UnfamiliarScore,
    calibrate,
    stored_decisions,
)

LABELS = ("a", "b", "c")


def test_temperature_scaling_keeps_the_label_and_sums_to_one():
    raw = np.array([[0.7, 0.2, 0.1], [0.34, 0.33, 0.33]], np.float32)
    for temperature in (0.5, 1.0, 3.0):
        probs = calibrate(raw, temperature)
        np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
        assert (probs.argmax(axis=1) == raw.argmax(axis=1)).all()
    np.testing.assert_allclose(calibrate(raw, 1.0), raw, rtol=1e-6)
    assert calibrate(raw, 3.0)[0, 0] < 0.7 < calibrate(raw, 0.5)[0, 0]


def test_without_calibration_the_old_rule_decides():
    rule = DecisionRule(LABELS)
    decided = rule.decide(np.array([[0.9, 0.05, 0.05], [0.5, 0.45, 0.05], [np.nan] * 3]))
    assert decided.decision.tolist() == [ACCEPT, REVIEW, None]
    assert decided.reason.tolist() == ["", "low confidence; top two close", None]


def test_thresholds_per_class_and_the_unfamiliar_cutoff():
    score = UnfamiliarScore(centroids=np.zeros((3, 2), np.float32), whitening=np.eye(2, dtype=np.float32),
                            mean=np.zeros(2, np.float32))  # fmt: skip
    rule = DecisionRule(LABELS, 1.0, "cal-x", thresholds=(0.8, None, 0.5), score=score, cutoff=1.0)
    raw = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.05, 0.9, 0.05], [0.1, 0.2, 0.7], [0.1, 0.2, 0.7]])
    features = np.array([[0, 0], [0, 0], [0, 0], [0.5, 0.5], [3, 3]], np.float32)
    decided = rule.decide(raw, features)
    assert decided.decision.tolist() == [ACCEPT, REVIEW, REVIEW, ACCEPT, REVIEW]
    assert decided.reason.tolist() == ["", "below class threshold", "below class threshold", "", "unfamiliar"]
    np.testing.assert_allclose(decided.unfamiliar_score, [0, 0, 0, 0.5, 18])
    again = rule.decide(raw, score=decided.unfamiliar_score)  # stored scores decide the same
    assert again.decision.tolist() == decided.decision.tolist()


def test_stored_decisions_win_and_old_rows_use_the_old_rule():
    batch = pa.record_batch(
        {
            "status": ["ok", "ok", "error"],
            "confidence": pa.array([0.55, 0.55, None], pa.float32()),
            "decision": [ACCEPT, None, None],
            "review_reason": [None, None, None],
            "prob_a": pa.array([0.55, 0.55, None], pa.float32()),
            "prob_b": pa.array([0.45, 0.45, None], pa.float32()),
        }
    )
    decision, reason = stored_decisions(batch)
    assert decision.tolist() == [ACCEPT, REVIEW, None]
    assert reason.tolist() == ["", "low confidence; top two close", None]
    decision, _ = stored_decisions(batch, threshold=0.5, margin=0.05)
    assert decision.tolist() == [ACCEPT, ACCEPT, None]
