"""fit_rule on synthetic held-out predictions: the guarantee and its scope, attribute thresholds,
the trade-off curves, a calibration_id that follows the rule, and the model card that states it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from classify_job.bundle import BundleSpec
from classify_job.decisions.attributes import attributes_for, parse_attributes
from classify_job.decisions.calibration import HeldOut
from classify_job.decisions.card import decision_lines
from classify_job.decisions.fitting import CalibrationSets, RuleChoice, fit_rule

LABELS = ("female_jeans", "female_trousers", "male_jeans", "male_trousers")
ATTRIBUTES = attributes_for(parse_attributes("gender=male,female garment=trousers,jeans"), LABELS)


def held_out(n=1200, seed=0) -> HeldOut:
    """The garment is easy, the gender is often confused: sure and right about garments, 70% right
    about genders."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    other_gender = labels ^ 2  # female_jeans <-> male_jeans, ...
    guess = np.where(rng.random(n) < 0.7, labels, other_gender)
    probs = np.full((n, 4), 0.01)
    probs[np.arange(n), guess] = rng.uniform(0.6, 0.95, n)
    probs[np.arange(n), guess ^ 2] = 0.97 - probs[np.arange(n), guess]
    features = rng.normal(size=(n, 3)) + labels[:, None]
    return HeldOut(probs, labels, features, "synthetic held-out predictions")


@pytest.fixture(scope="module")
def sets():
    data = held_out()
    return CalibrationSets(data, data, data)


SPEC = BundleSpec(LABELS, (16, 16), "rgb", "synthetic", model_id="m")


def test_the_rule_records_its_guarantee_attributes_and_curves(sets):
    rule = fit_rule(SPEC, sets, None, RuleChoice(0.95, "class"), ATTRIBUTES)
    calibration = rule.calibration
    assert calibration["guarantee"]["scope"] == "class" and calibration["guarantee"]["alpha"] == 0.05
    garment, gender = calibration["attributes"]["garment"], calibration["attributes"]["gender"]
    assert garment["threshold"] is not None and garment["lower_bound"] >= 0.95
    assert gender["threshold"] is None  # 70% right: never auto-accepted
    assert all(t["threshold"] is None for t in rule.accept_thresholds.values())  # the classes inherit that
    assert set(calibration["curves"]["attributes"]) == {"garment", "gender"}
    expected = calibration["expected"]["held_out"]
    assert expected["attributes"]["garment"]["share_accepted"] > 0.3
    assert expected["attributes"]["garment"]["precision_of_accepted"] >= 0.95
    assert expected["share_with_an_attribute_accepted"] == expected["attributes"]["garment"]["share_accepted"]


def test_calibration_id_changes_with_the_scope_the_target_and_the_attributes(sets):
    ids = {
        fit_rule(SPEC, sets, None, RuleChoice(0.95)).calibration["calibration_id"],
        fit_rule(SPEC, sets, None, RuleChoice(0.95, "overall")).calibration["calibration_id"],
        fit_rule(SPEC, sets, None, RuleChoice(0.9)).calibration["calibration_id"],
        fit_rule(SPEC, sets, None, RuleChoice(0.95, "class"), ATTRIBUTES).calibration["calibration_id"],
    }
    assert len(ids) == 4
    again = fit_rule(SPEC, sets, None, RuleChoice(0.95, "overall")).calibration["calibration_id"]
    assert again in ids  # the same rule, the same id


def test_the_card_states_the_guarantee_its_scope_and_the_tradeoff(sets):
    rule = fit_rule(SPEC, sets, None, RuleChoice(0.7, "overall"), ATTRIBUTES)
    card = "\n".join(decision_lines(rule.recorded_in(SPEC)))
    assert "Guarantee (overall scope, alpha 0.05): All accepted labels together (a weaker promise" in card
    assert "Pooled evidence:" in card and "| garment | trousers, jeans |" in card
    assert "| attribute gender |" in card and "| all labels |" in card


def test_a_card_for_a_bundle_from_before_the_guarantee_reads_as_before(sets):
    spec = fit_rule(SPEC, sets, None, RuleChoice(0.95)).recorded_in(SPEC)
    calibration = {k: v for k, v in spec.calibration.items() if k not in ("guarantee", "curves")}
    card = "\n".join(decision_lines(dataclasses.replace(spec, calibration=calibration)))
    assert "the lowest calibrated confidence at which the one-sided 95% Clopper-Pearson" in card
    assert "Guarantee" not in card and "trade-off" not in card
