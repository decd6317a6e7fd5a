import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import write_image

from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.decisions.rule import review_reasons, top_two_margin
from classify_job.errors import InputError
from classify_job.report.tagging import tag_catalog

KEY_FROM = r"^(?P<key>\w+)/"  # the first folder of the relpath is the product key
CATALOG = """sku,name,price
red,Red shirt,0012.50
green,Green shirt,7
mixed,Two-tone,9.90
grey,Grey thing,1
broken,Broken photo,2
nothing,No photo yet,3
,No key,4
red,Red shirt (reissue),13
"""


@pytest.fixture
def out(tiny_tree, color_bundle, tmp_path):
    root = tiny_tree(per_class=2)  # red/, green/, blue/: two agreeing images each
    write_image(root / "mixed" / "a.png", (200, 60, 40))  # red, confidently
    write_image(root / "mixed" / "b.png", (60, 70, 160))  # blue, less confidently
    write_image(root / "grey" / "g.png", (128, 128, 128))  # near-uniform probabilities
    (root / "broken").mkdir()
    (root / "broken" / "x.jpg").write_bytes(b"\xff\xd8\xff garbage")
    write_image(root / "top.png", (30, 200, 40))  # no folder: the key pattern does not match
    out = tmp_path / "out"
    run_classify(ClassifyConfig(input_dir=root, model=color_bundle, out=out, batch_size=4))
    return out


@pytest.fixture
def catalog(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(CATALOG)
    return path


def read_tagged(path: Path) -> pd.DataFrame:
    """Every column as the text in the file, except the numbers tagging adds."""
    text = pd.read_csv(path, dtype=str, keep_default_na=False)
    return text.assign(confidence=pd.to_numeric(text.confidence), images=text.images.astype(int))


def test_every_catalog_row_is_tagged_in_order_and_text_round_trips(out, catalog):
    result = tag_catalog(out, catalog, "sku", KEY_FROM)
    assert result.tagged == out / "catalog.tagged.csv"
    tagged = read_tagged(result.tagged).set_index("name")
    assert tagged.index.tolist() == pd.read_csv(catalog).name.tolist()
    assert tagged.loc["Red shirt", "price"] == "0012.50"  # CSV values are copied as text
    red = tagged.loc["Red shirt (reissue)"]
    assert (red.label, red.needs_review, red.images, red.review_reason) == ("red", "False", 2, "")
    assert red.model_id.startswith("color-test-") and red.image_relpath.startswith("red/")
    assert tagged.loc["Green shirt", "label"] == "green"


def test_several_images_take_the_most_confident_and_flag_disagreement(out, catalog):
    tagged = read_tagged(tag_catalog(out, catalog, "sku", KEY_FROM).tagged).set_index("sku")
    mixed = tagged.loc["mixed"]
    predictions = pd.read_parquet(out / "predictions").set_index("relpath")
    assert mixed.label == "red" and mixed.image_relpath == "mixed/a.png" and mixed.images == 2
    assert mixed.confidence == pytest.approx(predictions.confidence["mixed/a.png"], abs=1e-4)
    assert mixed.needs_review == "True" and mixed.review_reason == "images disagree: blue 1, red 1"


def test_low_confidence_and_unreadable_rows_need_review(out, catalog):
    result = tag_catalog(out, catalog, "sku", KEY_FROM)
    tagged = read_tagged(result.tagged).set_index("sku")
    grey, broken = tagged.loc["grey"], tagged.loc["broken"]
    assert grey.needs_review == "True" and grey.review_reason.startswith("low confidence")
    assert broken.needs_review == "True" and broken.label == "" and np.isnan(broken.confidence)
    assert broken.review_reason == "no readable image: not a recognised image format"
    review = pd.read_csv(result.review, dtype=str)
    assert review.sku.tolist() == ["broken", "grey", "mixed"]  # unreadable first, then least confident


def test_unmatched_rows_are_kept_counted_and_listed(out, catalog):
    result = tag_catalog(out, catalog, "sku", KEY_FROM)
    tagged = read_tagged(result.tagged).set_index("name")
    assert tagged.loc["No photo yet", "needs_review"] == "" and tagged.loc["No photo yet", "images"] == 0
    unmatched = pd.read_csv(result.unmatched_catalog, dtype=str, keep_default_na=False)
    assert dict(zip(unmatched.name, unmatched.reason, strict=True)) == {
        "No photo yet": "no image with this key",
        "No key": "empty key",
    }
    stray = pd.read_csv(result.unmatched_predictions).set_index("relpath").reason.to_dict()
    assert stray == {
        "blue/blue_0.jpg": "no catalog row with this key",
        "blue/blue_1.png": "no catalog row with this key",
        "top.png": "key pattern did not match the relpath",
    }
    assert result.counts == {
        "catalog_rows": 8,
        "matched_rows": 6,
        "labelled_rows": 5,  # broken has images but no readable one
        "needs_review": 3,
        "unmatched_catalog": 2,
        "predictions": 11,
        "unmatched_predictions": 3,
        "keys_with_several_images": 3,
        "keys_with_disagreeing_images": 1,
    }


def test_sidecar_records_settings_rule_and_counts(out, catalog, tmp_path):
    result = tag_catalog(out, catalog, "sku", KEY_FROM, dest=tmp_path / "tags", threshold=0.9, margin=0.3)
    assert result.tagged.parent == tmp_path / "tags" and result.sidecar == tmp_path / "tags" / "tagging.json"
    sidecar = json.loads(result.sidecar.read_text())
    assert (sidecar["threshold"], sidecar["margin"], sidecar["key_from"]) == (0.9, 0.3, KEY_FROM)
    assert (
        sidecar["counts"] == result.counts and "accepted image with the highest confidence" in sidecar["rule"]
    )
    assert sidecar["files"]["tagged"] == "catalog.tagged.csv" and len(sidecar["model_ids"]) == 1


def test_parquet_catalog_gives_parquet_and_keys_match_as_text(out, tmp_path):
    catalog = tmp_path / "catalog.parquet"
    pd.DataFrame({"sku": ["red", "grey"], "stock": np.array([5, 0], dtype="int32")}).to_parquet(catalog)
    result = tag_catalog(out, catalog, "sku", r"(\w+)/")
    tagged = pd.read_parquet(result.tagged)
    assert result.tagged.name == "catalog.tagged.parquet" and str(tagged.stock.dtype) == "int32"
    assert tagged.label[0] == "red" and tagged.review_reason[1].startswith("low confidence")
    assert str(tagged.needs_review.dtype) == "boolean" and tagged.needs_review.tolist() == [False, True]


def test_numeric_keys_are_compared_as_text(tiny_tree, color_bundle, tmp_path):
    root = tiny_tree(per_class=1, root=tmp_path / "tree")
    write_image(root / "12345" / "front.jpg", (220, 30, 30))
    out = tmp_path / "out"
    run_classify(ClassifyConfig(input_dir=root, model=color_bundle, out=out, batch_size=4))
    catalog = tmp_path / "ids.parquet"
    pd.DataFrame({"id": [12345, None, 7]}).to_parquet(catalog)  # a gap makes the ids floats
    tagged = pd.read_parquet(tag_catalog(out, catalog, "id", r"^(\d+)/").tagged)
    assert tagged.label[0] == "red" and tagged.label[1:].isna().all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"catalog": "missing.csv"}, "catalog not found"),
        ({"catalog": "catalog.xlsx"}, r"\.csv or \.parquet"),
        ({"key_column": "SKU"}, "'SKU' is not a column of .*Columns: sku, name, price"),
        ({"key_from": r"^\w+/"}, "needs a group"),
        ({"key_from": r"^(\w+/"}, "not a valid regular expression"),
        ({"threshold": 1.2}, "--threshold must be between 0 and 1"),
    ],
)
def test_bad_inputs_are_input_errors(out, catalog, kwargs, message):
    args = {"catalog": catalog, "key_column": "sku", "key_from": KEY_FROM, **kwargs}
    args["catalog"] = catalog.parent / args["catalog"]
    with pytest.raises(InputError, match=message):
        tag_catalog(out, **args)


def test_catalog_with_a_column_tagging_adds_is_rejected(out, tmp_path):
    catalog = tmp_path / "c.csv"
    catalog.write_text("sku,label\nred,shirt\n")
    with pytest.raises(InputError, match="already has column"):
        tag_catalog(out, catalog, "sku", KEY_FROM)


def test_output_without_predictions_is_an_input_error(catalog, tmp_path):
    (tmp_path / "empty" / "predictions").mkdir(parents=True)
    with pytest.raises(InputError, match="no predictions"):
        tag_catalog(tmp_path / "empty", catalog, "sku", KEY_FROM)


def test_review_rule_names_each_reason():
    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.45, 0.05], [0.55, 0.2, 0.25], [0.45, 0.3, 0.25]])
    margin = top_two_margin(probs)
    np.testing.assert_allclose(margin, [0.85, 0.05, 0.30, 0.15])
    reasons = review_reasons(probs.max(axis=1), margin, threshold=0.52, min_margin=0.1)
    assert reasons.tolist() == ["", "low confidence; top two close", "", "low confidence"]
