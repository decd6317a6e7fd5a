"""Attribute decisions through a real classify run: the Parquet columns, re-deciding stored rows
under a new calibration, one tag and one needs-review column per attribute, coverage in the
summary and the HTML report."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import write_image

from classify_job.bundle import BundleSpec, read_spec, save_bundle, write_spec
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.decisions.attributes import attributes_for, parse_attributes
from classify_job.report.tagging import tag_catalog

LABELS = ("red_dark", "red_light", "blue_dark", "blue_light")
ATTRIBUTES = "colour=red,blue shade=dark,light"


def attribute_spec(labels, shade_threshold: float | None) -> dict:
    colour, shade = attributes_for(parse_attributes(ATTRIBUTES), labels)
    return {
        "colour": {**colour.to_json(labels), "threshold": 0.9},
        "shade": {**shade.to_json(labels), "threshold": shade_threshold},
    }


@pytest.fixture(scope="module")
def shade_blind_bundle(tmp_path_factory) -> Path:
    """Tells red from blue by the mean colour, and never dark from light: every image's colour is
    sure (about 1.0), its shade and so its class a coin flip (about 0.5 each)."""
    import keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    weights = np.zeros((3, 4), np.float32)
    weights[0, :2] = weights[2, 2:] = 20
    model.layers[-1].set_weights([weights, np.zeros(4, np.float32)])
    point = {"share_accepted": 1.0, "threshold": 0.5, "precision": 0.5, "lower_bound": 0.4}
    curves = {"overall": [point], "classes": {}, "attributes": {"colour": [{**point, "precision": 0.99}]}}
    calibration = {
        "temperature": 1.0,
        "calibration_id": "cal-attr-1",
        "attributes": attribute_spec(LABELS, 0.9),
        "curves": curves,
    }
    thresholds = {label: {"threshold": 0.9, "target_precision": 0.9} for label in LABELS}
    spec = BundleSpec(
        LABELS, (16, 16), "rgb", "shade-blind", calibration=calibration, accept_thresholds=thresholds
    )
    directory = tmp_path_factory.mktemp("bundle") / "shade-blind"
    save_bundle(directory, model, spec)
    return directory


@pytest.fixture
def out(shade_blind_bundle, tmp_path):
    root = tmp_path / "tree"
    for i in range(3):
        write_image(root / f"sku{i}" / "a.png", (220, 30, 30))
    write_image(root / "sku9" / "b.png", (30, 40, 220))
    (root / "sku8").mkdir()
    (root / "sku8" / "x.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    run_classify(ClassifyConfig(input_dir=root, model=shade_blind_bundle, out=out, batch_size=4))
    return out


def rows(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "predictions").set_index("relpath").sort_index()


def test_the_colour_is_accepted_while_the_shade_goes_to_review(out):
    table = rows(out)
    ok = table[table.status == "ok"]
    assert (ok.decision == "review").all()  # no class is sure
    assert ok.attr_colour.tolist() == ["red", "red", "red", "blue"]
    assert (ok.attr_colour_decision == "accept").all() and (ok.attr_shade_decision == "review").all()
    assert (ok.attr_colour_confidence > 0.99).all() and (ok.attr_shade_confidence < 0.6).all()
    broken = table.loc["sku8/x.jpg"]
    assert broken[["attr_colour", "attr_colour_confidence", "attr_colour_decision"]].isna().all()
    schema = pq.read_schema(next((out / "predictions").glob("*.parquet")))
    assert schema.field("attr_shade_confidence").nullable


def test_a_new_calibration_re_decides_the_stored_attribute_columns(out, shade_blind_bundle, tmp_path):
    recalibrated = tmp_path / "recalibrated"
    shutil.copytree(shade_blind_bundle, recalibrated)
    spec = read_spec(recalibrated)
    calibration = {
        **spec.calibration,
        "calibration_id": "cal-attr-2",
        "attributes": attribute_spec(LABELS, 0.5),
    }
    write_spec(recalibrated, dataclasses.replace(spec, calibration=calibration))
    result = run_classify(
        ClassifyConfig(input_dir=tmp_path / "tree", model=recalibrated, out=out, batch_size=4)
    )
    assert result.record["redecided"] == 5
    ok = rows(out).query("status == 'ok'")
    assert (ok.attr_shade_decision == "accept").all() and (ok.calibration_id == "cal-attr-2").all()


def test_tagging_adds_one_tag_and_one_needs_review_column_per_attribute(out, tmp_path):
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("sku,name\nsku0,a\nsku9,b\nsku8,broken\nnone,no photo\n")
    tagged = pd.read_csv(tag_catalog(out, catalog, "sku", r"^(?P<key>\w+)/").tagged, dtype=str).set_index(
        "sku"
    )
    assert tagged.loc["sku0", "attr_colour"] == "red" and tagged.loc["sku9", "attr_colour"] == "blue"
    assert tagged.loc["sku0", "attr_colour_needs_review"] == "False"
    assert tagged.loc["sku0", "attr_shade_needs_review"] == "True"
    assert tagged.loc["sku8", "attr_colour_needs_review"] == "True"  # unreadable
    assert pd.isna(tagged.loc["none", "attr_colour_needs_review"])  # no image: left empty


def test_summary_and_report_show_coverage_per_attribute(out):
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attributes"]["colour"] == {"accept": 4, "review": 0, "share_accepted": 1.0}
    assert summary["attributes"]["shade"]["share_accepted"] == 0.0
    assert "| colour | 4 | 0 | 100.0% |" in (out / "summary.md").read_text()
    html = (out / "report.html").read_text()
    assert "share accepted" in html and ">colour<" in html and ">shade<" in html
    assert ">attribute colour<" in html and ">0.990 (0.400)<" in html  # the trade-off curve


def test_a_bundle_without_attributes_writes_no_attribute_columns(tiny_tree, color_bundle, tmp_path):
    out = tmp_path / "plain"
    run_classify(ClassifyConfig(input_dir=tiny_tree(per_class=1), model=color_bundle, out=out))
    assert not [c for c in rows(out).columns if c.startswith("attr_")]
    assert json.loads((out / "summary.json").read_text())["attributes"] == {}
