"""Every file a bundle names is inside it, a regular file and the one recorded (issue 19): a file
named outside the bundle, a symbolic link, an edited or truncated file, an unparsable graph and
malformed labels are each refused with BundleError, which the CLI reports as one line and exit 3,
before any prediction is written."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import colour_folder

from classify_job.bundle import SPEC_FILE, BundleSpec, bundle_file, read_spec
from classify_job.errors import BundleError
from classify_job.hashing import content_hash


@pytest.fixture(scope="module")
def full_bundle(color_bundle, tmp_path_factory) -> Path:
    """The colour bundle with a decision rule (``unfamiliar.npz``) and verified ONNX and OpenVINO exports."""
    from classify_job.bundle import load_bundle
    from classify_job.decisions.calibration import HeldOut
    from classify_job.decisions.fitting import CalibrationSets, RuleChoice, fit_decision_rule
    from classify_job.train.dataset import load_split
    from classify_job.train.evaluate import labelled_files, predict_with_features
    from classify_job.train.export import export_bundle

    tmp = tmp_path_factory.mktemp("tamper")
    data = colour_folder(tmp / "data", 8)
    bundle = shutil.copytree(color_bundle, tmp / "bundle")
    spec = load_bundle(bundle).spec
    loaded = load_split(data, labelled_files(data, "all", spec.labels, spec.extra), spec.image_size)
    probs, features = predict_with_features(load_bundle(bundle).model, loaded.images)
    held = HeldOut(probs, loaded.labels, features, "colour images")
    fit_decision_rule(bundle, spec, CalibrationSets(held, held, held), held, RuleChoice(0.95))
    export_bundle(bundle, data=data)
    return bundle


@pytest.fixture
def bundle(full_bundle, tmp_path) -> Path:
    return shutil.copytree(full_bundle, tmp_path / "bundle")


def edit_spec(bundle: Path, change) -> None:
    data = json.loads((bundle / SPEC_FILE).read_text())
    change(data)
    (bundle / SPEC_FILE).write_text(json.dumps(data))


def export_entry(data: dict, fmt: str) -> dict:
    return next(e for e in data["exports"] if e["format"] == fmt)


def classify_cli(tree: Path, bundle: Path, out: Path, runtime: str = "onnx"):
    from typer.testing import CliRunner

    from classify_job.cli import app

    args = ["classify", str(tree), "--model", str(bundle), "--out", str(out), "--runtime", runtime]
    return CliRunner().invoke(app, args, env={"COLUMNS": "100000"})  # no wrapping of long lines


def assert_refused(result, out: Path, match: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("{")]
    assert result.exit_code == 3, result.output  # the JSON lines are the run's log
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], result.output
    assert not any((out / "predictions").glob("*")), list((out / "predictions").glob("*"))


@pytest.fixture
def tree(tiny_tree) -> Path:
    return tiny_tree(per_class=1)


def test_the_export_records_openvino_weights_and_an_untouched_bundle_classifies(bundle, tree, tmp_path):
    spec = read_spec(bundle)
    entry = next(e for e in spec.exports if e["format"] == "openvino")
    assert entry["files"] == {"openvino/model.bin": content_hash(bundle / "openvino" / "model.bin")}
    for runtime in ("onnx", "openvino"):
        result = classify_cli(tree, bundle, tmp_path / runtime, runtime)
        assert result.exit_code == 0, result.output
        assert any((tmp_path / runtime / "predictions").glob("*.parquet"))


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
@pytest.mark.parametrize("fmt", ["onnx", "unfamiliar"])
def test_a_file_outside_the_bundle_is_refused(bundle, tree, tmp_path, where, fmt):
    relname = "model.onnx" if fmt == "onnx" else "unfamiliar.npz"
    outside = tmp_path / relname
    shutil.copy(bundle / relname, outside)  # the same bytes, so the hash alone would pass
    if where == "symlink":
        (bundle / relname).unlink()
        os.symlink(outside, bundle / relname)
        named, match = relname, "is a symbolic link"
    else:
        named = "../" + relname if where == "parent" else str(outside)
        match = "names a file outside the bundle"

    def point(data):
        (export_entry(data, "onnx") if fmt == "onnx" else data["unfamiliar"])["file"] = named

    edit_spec(bundle, point)
    assert_refused(classify_cli(tree, bundle, tmp_path / "out"), tmp_path / "out", match)


def test_an_edited_unfamiliar_file_is_refused(bundle, tree, tmp_path):
    with open(bundle / "unfamiliar.npz", "ab") as fh:
        fh.write(b"\0")
    assert_refused(classify_cli(tree, bundle, tmp_path / "out"), tmp_path / "out", "changed since")


def test_a_truncated_unfamiliar_file_whose_hash_matches_is_refused(bundle, tree, tmp_path):
    npz = bundle / "unfamiliar.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    edit_spec(bundle, lambda data: data["unfamiliar"].update(sha256=content_hash(npz)))
    assert_refused(
        classify_cli(tree, bundle, tmp_path / "out"), tmp_path / "out", "cannot read the unfamiliar"
    )


def test_an_edited_openvino_weights_file_is_refused(bundle, tree, tmp_path):
    weights = bundle / "openvino" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # same size, one bit
    weights.write_bytes(bytes(data))
    result = classify_cli(tree, bundle, tmp_path / "out", "openvino")
    assert_refused(result, tmp_path / "out", "model.bin changed since it was verified")


def test_an_old_export_without_the_weights_hash_still_works_and_a_truncated_bin_is_refused(
    bundle, tree, tmp_path
):
    edit_spec(bundle, lambda data: export_entry(data, "openvino").pop("files"))
    result = classify_cli(tree, bundle, tmp_path / "old", "openvino")
    assert result.exit_code == 0, result.output
    weights = bundle / "openvino" / "model.bin"
    weights.write_bytes(weights.read_bytes()[:16])
    result = classify_cli(tree, bundle, tmp_path / "out", "openvino")
    assert_refused(result, tmp_path / "out", "cannot load")


def test_a_weights_file_that_is_a_symlink_is_refused_even_without_a_hash(bundle, tree, tmp_path):
    edit_spec(bundle, lambda data: export_entry(data, "openvino").pop("files"))
    weights = bundle / "openvino" / "model.bin"
    shutil.move(weights, tmp_path / "model.bin")
    os.symlink(tmp_path / "model.bin", weights)
    result = classify_cli(tree, bundle, tmp_path / "out", "openvino")
    assert_refused(result, tmp_path / "out", "is a symbolic link")


def test_an_invalid_onnx_file_whose_hash_matches_is_refused(bundle, tree, tmp_path):
    (bundle / "model.onnx").write_bytes(b"not an onnx graph\n" * 10)
    sha = content_hash(bundle / "model.onnx")
    edit_spec(bundle, lambda data: export_entry(data, "onnx").update(sha256=sha))
    assert_refused(classify_cli(tree, bundle, tmp_path / "out"), tmp_path / "out", "cannot load")


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (["red", "gr\0een", "blue"], "no NUL"),
        (["red", "g" * 256, "blue"], "at most 255 characters"),
        (["red", "red", "blue"], "distinct labels"),
    ],
    ids=["nul", "long", "duplicate"],
)
def test_malformed_labels_are_refused_when_read(bundle, tree, tmp_path, labels, match):
    edit_spec(bundle, lambda data: data.update(labels=labels))
    with pytest.raises(BundleError, match=match):
        read_spec(bundle)
    assert_refused(classify_cli(tree, bundle, tmp_path / "out"), tmp_path / "out", match)


def test_a_label_of_255_characters_is_allowed():
    BundleSpec(labels=("a" * 255, "b"), image_size=(16, 16), color_mode="rgb", architecture="x").validate()


@pytest.mark.parametrize("relname", ["", ".", "a/../b", "/etc/passwd", "a\\b", "a\0b", "c:/x", None, 3])
def test_bundle_file_refuses_names_that_leave_the_bundle(tmp_path, relname):
    with pytest.raises(BundleError):
        bundle_file(tmp_path, relname)


def test_bundle_file_refuses_a_directory_a_missing_file_and_a_linked_folder(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_bytes(b"x")
    bundle = tmp_path / "bundle"
    (bundle / "sub").mkdir(parents=True)
    os.symlink(tmp_path / "outside", bundle / "linked")
    with pytest.raises(BundleError, match="not a regular file"):
        bundle_file(bundle, "sub")
    with pytest.raises(BundleError, match="missing"):
        bundle_file(bundle, "sub/none")
    with pytest.raises(BundleError, match="symbolic link"):
        bundle_file(bundle, "linked/f")
    (bundle / "sub" / "f").write_bytes(b"x")
    assert bundle_file(bundle, "sub/f", content_hash(bundle / "sub" / "f")) == bundle / "sub" / "f"
    with pytest.raises(BundleError, match="changed since"):
        bundle_file(bundle, "sub/f", "0" * 64)
