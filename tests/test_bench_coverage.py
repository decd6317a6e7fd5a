"""The figures ``make bench-coverage`` reports, computed on a hand-made table of rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling common.py
        spec = importlib.util.spec_from_file_location("bench_coverage", BENCHMARKS / "bench_coverage.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def rows(*entries: tuple) -> pd.DataFrame:
    """(relpath, label, confidence, decision, extra columns) -> rows as a classify run writes them."""
    records = [
        {
            "relpath": relpath,
            "status": "ok",
            "label": label,
            "confidence": confidence,
            "decision": decision,
            "review_reason": None if decision == "accept" else "below class threshold",
            **extra,
        }
        for relpath, label, confidence, decision, extra in entries
    ]
    return pd.DataFrame.from_records(records)


def test_interval_is_clopper_pearson_at_the_edges(bench):
    assert bench.interval(0, 0) is None
    assert bench.interval(59, 59) == [round(0.025 ** (1 / 59), 4), 1.0]
    assert bench.interval(0, 10) == [0.0, round(1 - 0.025 ** (1 / 10), 4)]
    low, high = bench.interval(2, 3)
    assert 0 < low < 2 / 3 < high < 1


def test_label_figures_from_rows(bench):
    table = rows(
        ("familiar/coat/a.png", "coat", 0.9, "accept", {}),
        ("familiar/coat/b.png", "shirt", 0.8, "accept", {}),
        (
            "familiar/shirt/c.png",
            "shirt",
            0.3,
            "review",
            {"review_reason": "below class threshold; unfamiliar"},
        ),
        ("familiar/shirt/d.png", "shirt", 0.7, "accept", {}),
        ("unfamiliar/bag/e.png", "coat", 0.95, "accept", {}),
        ("unfamiliar/bag/f.png", "coat", 0.4, "review", {}),
    )
    figures = bench.label_figures(table, ("coat", "shirt"))

    assert (figures["familiar_images"], figures["unfamiliar_images"], figures["accuracy"]) == (4, 2, 0.75)
    assert figures["familiar"]["share_accepted"] == 0.75
    assert figures["familiar"]["precision"] == round(2 / 3, 4)
    keys = ("images", "accepted", "precision", "share_of_class_accepted")
    assert [figures["per_class"]["coat"][k] for k in keys] == [1, 1, 1.0, 1.0]
    assert [figures["per_class"]["shirt"][k] for k in keys] == [3, 2, 0.5, 0.5]
    assert figures["unfamiliar_accepted_share"] == 0.5
    assert figures["unfamiliar_accepted_by_kind"] == {"bag": 0.5}
    assert figures["familiar_flagged_unfamiliar_share"] == 0.25
    curve = {point["share"]: point["precision"] for point in figures["curve"]}
    assert (curve[0.5], curve[1.0]) == (0.5, 0.75)  # the two most confident are a (right) and b (wrong)


def test_attribute_figures_read_the_attribute_columns(bench):
    def gender(value, decision):
        return {"attr_gender": value, "attr_gender_decision": decision}

    table = rows(
        ("familiar/male_jeans/a.jpg", "male_jeans", 0.5, "review", gender("male", "accept")),
        ("familiar/female_jeans/b.jpg", "male_jeans", 0.5, "review", gender("male", "accept")),
        ("familiar/female_trousers/c.jpg", "female_trousers", 0.9, "accept", gender("female", "review")),
        ("familiar/male_trousers/d.jpg", "female_jeans", 0.5, "review", gender("female", "review")),
        ("unfamiliar/skirt/e.jpg", "female_jeans", 0.5, "review", gender("female", "accept")),
    )
    figures = bench.attribute_figures(table, bench.parse_attributes(bench.SAMPLE_ATTRIBUTES))

    assert figures["columns_found"] == ["gender"]
    gender_figures = figures["per_attribute"]["gender"]
    assert (gender_figures["accepted"], gender_figures["precision"]) == (2, 0.5)
    assert gender_figures["unfamiliar_accepted_share"] == 1.0
    assert figures["familiar_any_attribute_accepted_share"] == 0.75  # a, b by gender; c by its label
    assert figures["unfamiliar_any_attribute_accepted_share"] == 1.0


def test_without_attribute_columns_an_accepted_label_counts(bench):
    table = rows(
        ("familiar/male_jeans/a.jpg", "male_jeans", 0.9, "accept", {}),
        ("familiar/male_jeans/b.jpg", "male_jeans", 0.5, "review", {}),
    )
    figures = bench.attribute_figures(table, bench.parse_attributes(bench.SAMPLE_ATTRIBUTES))

    assert figures["columns_found"] == []
    assert figures["familiar_any_attribute_accepted_share"] == 0.5


def test_targets_pass_and_fail(bench):
    familiar = {"share_accepted": 0.3, "precision_95ci": [0.9, 0.97]}
    checks = bench.targets(
        "fmnist-300", {"familiar": familiar, "unfamiliar_accepted_share": 0.01, "train_s": 700.0}
    )

    assert {name: check["pass"] for name, check in checks.items()} == {
        "familiar_accepted_share": False,
        "precision_95ci_upper_reaches_target": True,
        "unfamiliar_accepted_share": True,
        "train_s": False,
    }
