"""Fitting the decision rule: temperature, Clopper-Pearson thresholds, the unfamiliar score."""

import numpy as np
import pytest

from classify_job.decisions.calibration import (
    HeldOut,
    accept_thresholds,
    calibration_figures,
    fit_temperature,
    fit_unfamiliar,
    lower_bound,
    needed_for,
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
