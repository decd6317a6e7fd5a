"""``train --attributes`` and ``--precision-scope`` through the CLI: what bundle.json and the model
card record, what classify writes, and ``calibrate`` moving the scope without retraining."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import write_image
from typer.testing import CliRunner

from classify_job.cli import app

SHADES = {
    "red_dark": (140, 20, 20),
    "red_light": (250, 140, 140),
    "blue_dark": (20, 20, 140),
    "blue_light": (140, 140, 250),
}
ATTRIBUTES = "colour=red,blue shade=dark,light"
TRAIN = (
    "--epochs",
    "3",
    "--batch-size",
    "16",
    "--image-size",
    "16",
    "--val-split",
    "0.3",
    "--test-split",
    "0.2",
)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def shades(tmp_path_factory):
    root = tmp_path_factory.mktemp("shades") / "data"
    for name, colour in SHADES.items():
        for i in range(30):
            write_image(root / name / f"{name}_{i:03d}.png", colour)
    return root


@pytest.fixture(scope="module")
def bundle(shades, tmp_path_factory):
    bundle = tmp_path_factory.mktemp("models") / "shades"
    result = invoke("train", shades, "--out", bundle, *TRAIN, "--attributes", ATTRIBUTES)
    assert result.exit_code == 0, result.output
    return bundle


def test_train_records_the_attributes_and_the_guarantee(bundle):
    calibration = json.loads((bundle / "bundle.json").read_text())["calibration"]
    colour = calibration["attributes"]["colour"]
    assert colour["values"] == ["red", "blue"] and colour["classes"]["blue_light"] == "blue"
    assert {"threshold", "lower_bound", "tested", "accepted", "alpha"} <= set(colour)
    guarantee = calibration["guarantee"]
    assert (guarantee["scope"], guarantee["alpha"], guarantee["precision"]) == ("class", 0.05, 0.95)
    assert guarantee["evidence"]["classes"] == 4
    assert set(calibration["curves"]["attributes"]) == {"colour", "shade"}
    card = (bundle / "README.md").read_text()
    assert "| colour | red, blue |" in card and "Guarantee (class scope" in card
    assert "The trade-off on held-out predictions" in card and "| attribute shade |" in card


def test_classify_writes_each_attributes_columns(bundle, shades, tmp_path):
    result = invoke("classify", shades, "--model", bundle, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    rows = pd.read_parquet(tmp_path / "out" / "predictions")
    assert set(rows.attr_colour) <= {"red", "blue"} and set(rows.attr_shade_decision) <= {"accept", "review"}
    assert (rows.attr_colour == rows.label.str.split("_").str[0]).mean() > 0.5


def test_calibrate_moves_the_scope_and_a_new_rule_has_a_new_id(bundle, shades, tmp_path):
    result = invoke("calibrate", bundle, shades, "--out", tmp_path / "pooled", "--precision-scope", "overall")
    assert result.exit_code == 0, result.output
    before = json.loads((bundle / "bundle.json").read_text())["calibration"]
    after = json.loads((tmp_path / "pooled" / "bundle.json").read_text())["calibration"]
    assert after["guarantee"]["scope"] == "overall" and "weaker" in after["guarantee"]["statement"]
    assert "Recalibrated bundle" in result.output and after["calibration_id"] in result.output
    assert set(after["attributes"]) == {"colour", "shade"}  # kept, their thresholds refitted
    assert after["calibration_id"] != before["calibration_id"]
    assert "Pooled evidence" in (tmp_path / "pooled" / "README.md").read_text()
    bad = invoke("calibrate", bundle, shades, "--out", tmp_path / "bad", "--precision-scope", "each")
    assert bad.exit_code == 2 and "precision-scope" in bad.output


@pytest.mark.parametrize(
    ("attributes", "says"),
    [("colour=red,green", "'blue_dark'"), ("colour", "name=value"), ("shade=dark,dark", "distinct")],
)
def test_attributes_that_do_not_fit_the_class_names_exit_2_before_training(
    shades, tmp_path, attributes, says
):
    result = invoke("train", shades, "--out", tmp_path / "m", *TRAIN, "--attributes", attributes)
    assert result.exit_code == 2 and says in result.output
    assert not (tmp_path / "m" / "bundle.json").exists()


def test_a_job_file_gives_attributes_as_text_or_as_a_table(tmp_path):
    from classify_job.train.config import TrainConfig

    job = tmp_path / "job.toml"
    head = f'[train]\ndata_dir = "{tmp_path}"\nout_dir = "{tmp_path / "m"}"\n'
    job.write_text(head + 'attributes = "colour=red,blue"\nprecision_scope = "overall"\n')
    config = TrainConfig.resolve(job)
    assert config.attributes == {"colour": ("red", "blue")} and config.precision_scope == "overall"
    job.write_text(head + 'attributes = {shade = ["dark", "light"]}\n')
    assert TrainConfig.resolve(job).attributes == {"shade": ("dark", "light")}
    assert TrainConfig.resolve(job, attributes="colour=red,blue").attributes == {"colour": ("red", "blue")}
