"""``--accept-score combined``: thresholds on the confidence less the unfamiliar score's rank.

Synthetic predictions where the confidence says nothing about which images are hard and the
features' distance does: the combined score accepts where confidence alone cannot, the accepted
labels of fresh draws stay at the target, held-out training images are ranked out of fold, and
the score is recorded (and read back) in ``calibration.accept_score``."""

from __future__ import annotations

import numpy as np
import pytest

from classify_job.bundle import BundleSpec
from classify_job.decisions.calibration import HeldOut, fit_unfamiliar, held_out_penalties
from classify_job.decisions.card import decision_lines
from classify_job.decisions.fitting import CalibrationSets, RuleChoice, fit_rule
from classify_job.decisions.rule import ACCEPT, DecisionRule, UnfamiliarPenalty
from classify_job.errors import BundleError, InputError

LABELS = ("a", "b")
SPEC = BundleSpec(LABELS, (16, 16), "rgb", "synthetic", model_id="m")
CENTROIDS = np.array([[4.0] * 8, [-4.0] * 8])


def draw(n: int, seed: int) -> HeldOut:
    """Half easy images (near their centroid, 99.5% right), half hard (far off, 60% right); the
    confidence is drawn alike for both, so it cannot tell them apart."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    hard = np.arange(n) % 2 == 1
    features = CENTROIDS[labels] + rng.normal(size=(n, 8)) * np.where(hard, 3.0, 1.0)[:, None]
    right = rng.random(n) < np.where(hard, 0.6, 0.995)
    guess = np.where(right, labels, 1 - labels)
    confidence = rng.uniform(0.7, 0.99, n)
    probs = np.empty((n, 2))
    probs[np.arange(n), guess], probs[np.arange(n), 1 - guess] = confidence, 1 - confidence
    return HeldOut(probs, labels, features, f"draw {seed}")


def reference(n: int = 2000, seed: int = 9) -> HeldOut:
    labels = np.random.default_rng(seed).integers(0, 2, n)
    features = CENTROIDS[labels] + np.random.default_rng(seed + 1).normal(size=(n, 8))
    return HeldOut(np.zeros((n, 0)), labels, features, "training features")


@pytest.fixture(scope="module")
def sets() -> CalibrationSets:
    return CalibrationSets(draw(4000, 0), reference(), draw(1000, 1))


def accepted_precision(rule, tmp_path, data: HeldOut) -> tuple[float, float]:
    rule.write_files(tmp_path)
    decided = DecisionRule.from_bundle(tmp_path, rule.recorded_in(SPEC)).decide(data.probs, data.features)
    taken = decided.decision == ACCEPT
    right = decided.probs.argmax(axis=1) == data.labels
    return float(taken.mean()), float(right[taken].mean()) if taken.any() else float("nan")


def test_the_combined_score_accepts_what_confidence_cannot_at_the_target(sets, tmp_path):
    plain = fit_rule(SPEC, sets, None, RuleChoice(0.95))
    combined = fit_rule(SPEC, sets, None, RuleChoice(0.95, accept_score="combined"))
    fresh = draw(4000, 2)
    share_plain, _ = accepted_precision(plain, tmp_path / "plain", fresh)
    share, precision = accepted_precision(combined, tmp_path / "combined", fresh)
    assert share_plain == 0.0  # 80% right at every confidence: no threshold passes
    assert share > 0.25 and precision >= 0.95
    recorded = combined.calibration["accept_score"]
    assert recorded["kind"] == "combined" and recorded["weight"] == 0.5 and len(recorded["quantiles"]) == 21
    assert plain.calibration["accept_score"] == {"kind": "confidence"}
    assert plain.calibration["calibration_id"] != combined.calibration["calibration_id"]
    assert "less 0.5 x the rank" in "\n".join(decision_lines(combined.recorded_in(SPEC)))


def test_training_images_held_out_are_ranked_out_of_fold():
    """Scored by a score they shaped, training images look more familiar than new images (a low
    penalty: accepted too easily); out of fold they rank like new familiar images."""
    rng = np.random.default_rng(5)

    def images(n: int) -> HeldOut:
        labels = rng.integers(0, 2, n)
        return HeldOut(np.zeros((n, 0)), labels, labels[:, None] * 3.0 + rng.normal(size=(n, 48)), "x")

    training, familiar = images(150), images(1000)
    score = fit_unfamiliar(training.features, training.labels, 2)
    in_sample, none = held_out_penalties(score, training, None, familiar, 2)  # not told they are training's
    out_of_fold, refitted = held_out_penalties(score, training, training, familiar, 2)
    assert (none, refitted) == (0, 150)
    assert in_sample.mean() < 0.15 < 0.2 <= out_of_fold.mean() <= 0.3  # 0.5 x a rank near uniform


def test_the_penalty_ranks_between_its_quantiles_and_a_missing_score_ranks_last():
    penalty = UnfamiliarPenalty(0.5, (0.0, 10.0, 20.0))
    np.testing.assert_allclose(penalty(np.array([0.0, 5.0, 20.0, 99.0, np.nan])), [0, 0.125, 0.5, 0.5, 0.5])
    assert UnfamiliarPenalty.from_json(penalty.to_json()) == penalty
    assert (
        UnfamiliarPenalty.from_json(None) is None
        and UnfamiliarPenalty.from_json({"kind": "confidence"}) is None
    )
    with pytest.raises(BundleError, match="accept_score kind 'magic'"):
        UnfamiliarPenalty.from_json({"kind": "magic"})


def test_an_unknown_accept_score_is_an_input_error():
    with pytest.raises(InputError, match="--accept-score must be one of confidence, combined"):
        RuleChoice(0.95, accept_score="margin")
