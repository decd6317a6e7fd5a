"""The int8 graph: quantised from the exported float graph, recorded as an export with its hash,
gated against the float graph (refused: exit 3, nothing kept), and run by --runtime onnx-int8."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import break_int8_graph, colour_folder

from classify_job.bundle import bundle_file, read_spec
from classify_job.classify.backends import open_backend
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.errors import BundleError
from classify_job.hashing import content_hash
from classify_job.train import int8_export
from classify_job.train.export import export_bundle

V1 = Path(__file__).parents[1] / "fixtures" / "v1"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return colour_folder(tmp_path_factory.mktemp("tree") / "colours", per_class=10)


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, tree) -> Path:
    """The format-1 EfficientNet-style bundle (fast layers, BatchNorm, ReLU6), exported, then int8."""
    bundle = shutil.copytree(V1 / "lite_bundle", tmp_path_factory.mktemp("b") / "lite")
    export_bundle(bundle, data=tree)
    int8_export.export_int8(bundle, data=tree)
    return bundle


def int8_entry(bundle: Path) -> dict:
    (entry,) = [e for e in read_spec(bundle).exports if e["format"] == "onnx-int8"]
    return entry


def test_the_int8_graph_is_an_export_entry_with_its_hash_and_gate(int8_bundle):
    import onnx

    entry = int8_entry(int8_bundle)
    assert entry["file"] == "model.int8.onnx" and entry["sha256"] == content_hash(int8_bundle / entry["file"])
    assert bundle_file(int8_bundle, entry["file"], entry["sha256"]) == int8_bundle / "model.int8.onnx"
    ops = {node.op_type for node in onnx.load(str(int8_bundle / entry["file"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    gate = entry["verified"]
    assert gate["passed"] and gate["images"] == 30 and gate["top1_agreement"] == 1.0
    assert gate["accuracy_diff_lower_95"] >= -0.005
    assert entry["quantized_from"]["sha256"] == content_hash(int8_bundle / "model.onnx")
    assert entry["benchmark"]["cpu"]["model"] and entry["benchmark"]["int8_images_per_s"] > 0
    assert entry["versions"]["onnxruntime"]
    assert [e["format"] for e in read_spec(int8_bundle).exports] == ["onnx", "openvino", "onnx-int8"]


def test_a_tampered_int8_graph_is_refused(int8_bundle, tmp_path):
    bundle = shutil.copytree(int8_bundle, tmp_path / "bundle")
    with open(bundle / "model.int8.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="changed since it was verified"):
        open_backend(bundle, read_spec(bundle), "onnx-int8", 4, 1)


def test_the_gate_refuses_a_graph_that_drops_accuracy_and_keeps_nothing(
    int8_bundle, tree, tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from classify_job.cli import app

    bundle = shutil.copytree(int8_bundle, tmp_path / "bundle")
    break_int8_graph(monkeypatch)  # the int8 graph gets every image wrong
    result = CliRunner().invoke(app, ["export", str(bundle), "--data", str(tree), "--int8"])
    assert result.exit_code == 3, result.output
    assert "int8 graph was refused" in result.output and "accuracy" in result.output
    assert not (bundle / "model.int8.onnx").exists()
    assert [e["format"] for e in read_spec(bundle).exports] == ["onnx", "openvino"]  # the float graphs stay


def classify(tree: Path, bundle: Path, out: Path, runtime: str) -> pd.DataFrame:
    run_classify(ClassifyConfig(tree, bundle, out, batch_size=4, runtime=runtime))
    return pd.read_parquet(out / "predictions").sort_values("relpath").reset_index(drop=True)


def test_onnx_int8_writes_the_labels_the_float_graph_writes(int8_bundle, tree, tmp_path):
    floats = classify(tree, int8_bundle, tmp_path / "onnx", "onnx")
    int8 = classify(tree, int8_bundle, tmp_path / "int8", "onnx-int8")
    assert int8.relpath.tolist() == floats.relpath.tolist() and (int8.status == "ok").all()
    assert int8.label.tolist() == floats.label.tolist()
    facts = json.loads(next((tmp_path / "int8" / "runs").glob("*.json")).read_text())
    summary = json.loads((tmp_path / "int8" / "summary.json").read_text())
    assert facts["runtime"] == summary["runtime"] == "onnx-int8"
