"""Attribute-level decisions: class names parsed into attributes, marginal probabilities, one
threshold per attribute, and the attribute columns of a prediction row."""

import numpy as np
import pyarrow as pa
import pytest

from classify_job.decisions.attributes import attributes_for, attributes_from_json, parse_attributes
from classify_job.decisions.calibration import attribute_thresholds
from classify_job.decisions.rule import ACCEPT, REVIEW, DecisionRule, UnfamiliarScore
from classify_job.errors import InputError

LABELS = ("female_jeans", "female_trousers", "male_jeans", "male_trousers")
TEXT = "gender=male,female garment=trousers,jeans"


def test_class_names_parse_into_one_value_of_each_attribute():
    gender, garment = attributes_for(parse_attributes(TEXT), LABELS)
    assert gender.values == ("male", "female") and gender.of_class == (1, 1, 0, 0)
    assert garment.values == ("trousers", "jeans") and garment.of_class == (1, 0, 1, 0)
    assert parse_attributes({"gender": ["male", "female"]}) == {"gender": ("male", "female")}  # a job file


@pytest.mark.parametrize(
    ("labels", "named"),
    [
        (("female_jeans", "male_shorts"), "male_shorts"),  # no garment
        (("female_jeans", "male_female_jeans"), "male_female_jeans"),  # two genders
        (("jeans", "male_jeans"), "'jeans'"),
    ],
)
def test_a_class_without_exactly_one_value_of_an_attribute_is_refused_by_name(labels, named):
    with pytest.raises(InputError, match=named):
        attributes_for(parse_attributes(TEXT), labels)


@pytest.mark.parametrize("text", ["gender", "gender=male", "gen_der=a,b", "g=a,a", "g=a,b g=c,d", "g=a_b,c"])
def test_malformed_attributes_are_refused(text):
    with pytest.raises(InputError):
        parse_attributes(text)


def test_marginals_sum_the_classes_of_each_value():
    gender, garment = attributes_for(parse_attributes(TEXT), LABELS)
    probs = np.array([[0.4, 0.1, 0.45, 0.05]])  # jeans sure (0.85), gender unsure (0.5 / 0.5)
    np.testing.assert_allclose(gender.marginals(probs), [[0.5, 0.5]])
    np.testing.assert_allclose(garment.marginals(probs), [[0.15, 0.85]])


def rule_with_attributes(thresholds=(0.8, 0.8), cutoff=None):
    recorded = {
        a.name: {**a.to_json(LABELS), "threshold": t}
        for a, t in zip(attributes_for(parse_attributes(TEXT), LABELS), thresholds, strict=True)
    }
    score = UnfamiliarScore(
        np.zeros((4, 1), np.float32), np.eye(1, dtype=np.float32), np.zeros(1, np.float32)
    )
    return DecisionRule(
        LABELS, 1.0, "cal-x", thresholds=(0.9,) * 4, score=score if cutoff else None, cutoff=cutoff,
        attributes=attributes_from_json(recorded, LABELS), attribute_thresholds=thresholds,
    )  # fmt: skip


def test_jeans_is_accepted_while_the_gender_goes_to_review():
    raw = np.array([[0.4, 0.1, 0.45, 0.05], [0.05, 0.05, 0.85, 0.05], [np.nan] * 4])
    decided = rule_with_attributes().decide(raw)
    assert decided.decision.tolist() == [REVIEW, REVIEW, None]  # no class reaches 0.9
    gender, garment = decided.attributes["gender"], decided.attributes["garment"]
    assert garment.value.tolist() == ["jeans", "jeans", None]
    assert garment.decision.tolist() == [ACCEPT, ACCEPT, None]
    assert gender.value.tolist()[1] == "male" and gender.decision.tolist() == [REVIEW, ACCEPT, None]
    np.testing.assert_allclose(garment.confidence[:2], [0.85, 0.9], rtol=1e-6)


def test_an_unfamiliar_image_gets_no_attribute_accepted_and_none_never_accepts():
    raw = np.array([[0.05, 0.05, 0.85, 0.05]] * 2)
    decided = rule_with_attributes(cutoff=1.0).decide(raw, np.array([[0.0], [3.0]], np.float32))
    assert decided.attributes["garment"].decision.tolist() == [ACCEPT, REVIEW]
    decided = rule_with_attributes(thresholds=(None, 0.8)).decide(raw)
    assert decided.attributes["gender"].decision.tolist() == [REVIEW, REVIEW]


def test_each_attribute_gets_its_own_threshold_from_held_out_predictions():
    """Garment is easy (the model tells jeans from trousers), gender is a coin flip: the garment
    gets a threshold and the gender none, though no class alone is sure."""
    rng = np.random.default_rng(0)
    n = 800
    labels = rng.integers(0, 4, n)
    garment = np.array([1, 0, 1, 0])[labels]  # the value index of each image's garment
    probs = np.full((n, 4), 0.0)
    for i in range(n):
        same = [c for c in range(4) if np.array([1, 0, 1, 0])[c] == garment[i]]
        probs[i, same] = 0.49  # both genders of the right garment, nearly equal
        probs[i, rng.choice(same)] += 0.01  # the gender: a coin flip
        probs[i, [c for c in range(4) if c not in same]] = 0.005
    found = attribute_thresholds(probs, labels, LABELS, attributes_for(parse_attributes(TEXT), LABELS), 0.95)
    assert found["garment"]["threshold"] is not None and found["garment"]["lower_bound"] >= 0.95
    assert found["gender"]["threshold"] is None
    assert found["garment"]["classes"] == dict(zip(LABELS, ["jeans", "trousers"] * 2, strict=True))


def test_prediction_rows_carry_nullable_attribute_columns():
    from classify_job.classify.rows import decision_columns
    from classify_job.predictions import attributes_of, predictions_schema

    raw = np.array([[0.05, 0.05, 0.85, 0.05], [np.nan] * 4])
    rule = rule_with_attributes()
    columns = decision_columns(rule.decide(raw), np.array([True, False]), rule)
    assert columns["attr_garment"].to_pylist() == ["jeans", None]
    assert columns["attr_gender_decision"].to_pylist() == [ACCEPT, None]
    assert (
        columns["attr_gender_confidence"].type == pa.float32()
        and columns["attr_gender_confidence"][1].as_py() is None
    )
    schema = predictions_schema(LABELS, ("gender", "garment"))
    assert attributes_of(schema) == ["gender", "garment"]
    assert all(schema.field(name).nullable for name in columns if name.startswith("attr_"))


def test_a_recorded_attribute_that_misses_a_class_is_a_bundle_error():
    from classify_job.errors import BundleError

    recorded = {"gender": {"values": ["male", "female"], "classes": {"male_jeans": "male"}}}
    with pytest.raises(BundleError, match=r"calibration\.attributes"):
        attributes_from_json(recorded, LABELS)
