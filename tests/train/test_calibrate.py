"""Fitting the decision rule: temperature, fixed-sequence Clopper-Pearson thresholds, the unfamiliar score."""

import numpy as np
import pytest

from classify_job.decisions.calibration import (
    HeldOut,
    accept_thresholds,
    calibration_figures,
    fit_temperature,
    fit_thresholds,
    fit_unfamiliar,
    fixed_sequence,
    lower_bound,
    needed_for,
    tradeoff_curve,
    unfamiliar_cutoff,
)


def overconfident(n=4000, temperature=2.5, seed=0):
    """Labels drawn from softmax(logits / T), predictions reported as softmax(logits): too sure."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, 4))
    truth = np.exp(logits / temperature)
    truth /= truth.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(4, p=p) for p in truth])
    raw = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return raw, labels


def test_temperature_is_recovered_and_calibration_error_falls():
    from classify_job.decisions.rule import calibrate

    raw, labels = overconfident()
    temperature = fit_temperature(raw, labels)
    assert temperature == pytest.approx(2.5, rel=0.1)
    before, after = calibration_figures(raw, labels), calibration_figures(calibrate(raw, temperature), labels)
    assert (
        after["ece"] < before["ece"] / 3 and after["nll"] < before["nll"] and after["brier"] < before["brier"]
    )


def test_the_lower_bound_needs_59_of_59_for_95_percent():
    assert needed_for(0.95) == 59
    assert lower_bound(59, 59) >= 0.95 > lower_bound(58, 58)
    assert lower_bound(0, 10) == 0


def test_thresholds_meet_the_target_or_are_refused_with_the_count_needed():
    rng = np.random.default_rng(1)
    confidence = np.r_[rng.uniform(0.9, 1.0, 80), rng.uniform(0.51, 0.6, 80), rng.uniform(0.9, 1.0, 30)]
    predicted = np.r_[np.zeros(160, int), np.ones(30, int)]
    labels = predicted.copy()
    labels[80:160:2] = 1  # half of class 0's unsure predictions are wrong
    probs = np.zeros((190, 2))
    probs[np.arange(190), predicted] = confidence
    probs[np.arange(190), 1 - predicted] = 1 - confidence
    found = accept_thresholds(probs, labels, ("zero", "one"), target=0.95)
    zero = found["zero"]
    assert 0.5 < zero["threshold"] <= confidence[:80].min() + 1e-6  # all sure ones, few unsure ones
    assert zero["lower_bound"] >= 0.95 and zero["accepted"] >= 80
    assert (
        found["one"]["threshold"] is None and found["one"]["needed"] == 59 and found["one"]["accepted"] == 30
    )


def test_unfamiliar_images_score_above_the_cutoff():
    rng = np.random.default_rng(2)
    centres = np.array([[0.0] * 8, [5.0] * 8])
    labels = rng.integers(0, 2, 400)
    features = centres[labels] + rng.normal(0, 1, (400, 8))
    score = fit_unfamiliar(features[:300], labels[:300], 2)
    held_out = HeldOut(np.zeros((100, 0)), labels[300:], features[300:], "held out")
    cutoff = unfamiliar_cutoff(score, held_out, recall=0.95)
    strangers = rng.normal(0, 1, (100, 8)) + np.array([12.0] * 4 + [-8.0] * 4)
    assert (score(features[300:]) <= cutoff).mean() >= 0.9 and (score(strangers) > cutoff).all()


def scanned(confidence, correct, target, level=0.05):
    """The procedure fixed-sequence testing replaces, in plain NumPy: every distinct threshold tested,
    the loosest whose bound at ``level`` passes kept (``level`` 0.05 / n: its Bonferroni-valid form)."""
    from scipy.stats import beta

    order = np.argsort(-confidence, kind="stable")
    conf, right = confidence[order], np.cumsum(correct[order])
    accepted = np.arange(1, len(conf) + 1)
    bound = np.where(right > 0, beta.ppf(level, np.maximum(right, 1e-12), accepted - right + 1), 0)
    passing = np.flatnonzero(np.r_[conf[1:] < conf[:-1], True] & (bound >= target))
    return float(conf[passing[-1]]) if len(passing) else None


def test_the_sequence_stops_at_the_first_failure_where_a_scan_would_jump_past_it():
    # 300 sure and right, then 30 of which half are wrong, then 1,000 right at a lower confidence
    confidence = np.r_[np.linspace(0.99, 0.95, 300), np.linspace(0.94, 0.9, 30), np.linspace(0.89, 0.6, 1000)]
    correct = np.r_[np.ones(300, bool), np.arange(30) % 2 == 0, np.ones(1000, bool)]
    assert scanned(confidence, correct, 0.95) == 0.6  # the scan keeps the loosest that passes
    found = fixed_sequence(confidence, correct, 0.95)
    assert 0.95 <= found["threshold"] <= 0.99 and found["lower_bound"] >= 0.95
    assert found["accepted"] <= 300 and found["tested"] == 5  # the top 5% .. 20% pass; 25% fails
    assert found["test"] == "fixed-sequence, one-sided Clopper-Pearson" and found["alpha"] == 0.05


def test_no_correction_for_many_thresholds_so_less_evidence_is_needed():
    # 70 right at the top, then 200 of which half are right: the bound passes at 59 of 59 correct
    confidence = np.r_[np.linspace(0.99, 0.9, 70), np.linspace(0.89, 0.5, 200)]
    correct = np.r_[np.ones(70, bool), np.arange(200) % 2 == 0]
    assert scanned(confidence, correct, 0.95, level=0.05 / len(confidence)) is None  # valid, but never
    found = fixed_sequence(confidence, correct, 0.95)
    assert found["threshold"] is not None and found["accepted"] >= 59
    assert found["correct"] == found["accepted"]


def test_too_little_evidence_fails_the_first_test():
    found = fixed_sequence(np.linspace(0.99, 0.9, 58), np.ones(58, bool), 0.95)
    assert found["threshold"] is None and found["tested"] == 0 and found["accepted"] == 58
    assert fixed_sequence(np.zeros(0), np.zeros(0, bool), 0.95)["predicted"] == 0


def test_accepted_labels_meet_the_target_on_fresh_draws_in_nearly_every_repetition():
    """Confidence uniform on [0.5, 1], right with probability equal to it: labels at or above t are
    right with probability (1 + t) / 2, the precision fresh draws realize; 0.9 needs t >= 0.8."""
    target, misses, found_any = 0.9, 0, 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        confidence = rng.uniform(0.5, 1.0, 600)
        t = fixed_sequence(confidence, rng.random(600) < confidence, target)["threshold"]
        found_any += t is not None
        misses += t is not None and (1 + t) / 2 < target
    assert found_any >= 100  # the test has something to check
    assert misses <= 0.05 * 200 + 6  # at most alpha of the repetitions, with a sampling margin


def test_pooling_the_classes_gives_one_threshold_and_a_weaker_stated_guarantee():
    predicted = np.repeat([0, 1, 2], 40)  # 40 right predictions each: a class alone needs 59
    confidence = np.tile(np.linspace(0.99, 0.9, 40), 3)
    probs = np.full((120, 3), 0.0)
    probs[np.arange(120), predicted] = confidence
    probs[np.arange(120), (predicted + 1) % 3] = 1 - confidence
    labels = predicted.copy()
    per_class, promise = fit_thresholds(probs, labels, ("a", "b", "c"), 0.95)
    assert all(t["threshold"] is None for t in per_class.values()) and promise["scope"] == "class"
    pooled, promise = fit_thresholds(probs, labels, ("a", "b", "c"), 0.95, scope="overall")
    assert len({t["threshold"] for t in pooled.values()}) == 1 and pooled["a"]["threshold"] is not None
    assert promise["scope"] == "overall" and "weaker" in promise["statement"]
    assert promise["evidence"]["lower_bound"] >= 0.95 and promise["evidence"]["accepted"] >= 59
    assert sum(t["accepted"] for t in pooled.values()) == promise["evidence"]["accepted"]


def test_the_tradeoff_curve_gives_share_accepted_against_precision_at_each_cut():
    confidence = np.linspace(0.99, 0.5, 200)
    correct = np.r_[np.ones(100, bool), np.arange(100) % 2 == 0]  # the sure half right, the rest half
    curve = tradeoff_curve(confidence, correct)
    assert [point["share_accepted"] for point in curve] == [round(0.05 * k, 4) for k in range(1, 21)]
    assert curve[9]["precision"] == 1.0 and curve[-1]["precision"] == 0.75
    assert all(p["lower_bound"] <= p["precision"] for p in curve)
    assert [p["threshold"] for p in curve] == sorted((p["threshold"] for p in curve), reverse=True)
