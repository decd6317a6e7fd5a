"""Every runtime writes the same rows: Keras on JAX, ONNX Runtime and OpenVINO, row for row."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import write_image

from classify_job.bundle import read_spec
from classify_job.classify.backends import choose_runtime
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.errors import BundleError
from classify_job.train.export import export_bundle

V1 = Path(__file__).parents[1] / "fixtures" / "v1"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The format-1 EfficientNet-style bundle (fast layers, BatchNorm, ReLU6), exported."""
    bundle = shutil.copytree(V1 / "lite_bundle", tmp_path_factory.mktemp("b") / "lite")
    export_bundle(bundle, data=V1 / "images")
    return bundle


@pytest.fixture
def tree(tmp_path) -> Path:
    rng = np.random.default_rng(3)
    for i in range(21):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        write_image(tmp_path / "tree" / f"d{i % 3}" / f"img_{i}.png", color, size=(40, 30))
    (tmp_path / "tree" / "broken.jpg").write_bytes(b"not a jpeg")
    return tmp_path / "tree"


def classify(tree: Path, bundle: Path, out: Path, runtime: str) -> pd.DataFrame:
    run_classify(ClassifyConfig(tree, bundle, out, batch_size=4, runtime=runtime))
    return pd.read_parquet(out / "predictions").sort_values("relpath").reset_index(drop=True)


def test_the_export_is_recorded_with_its_hash_and_verification(exported):
    spec = read_spec(exported)
    assert [e["format"] for e in spec.exports] == ["onnx", "openvino"]
    for entry in spec.exports:
        assert (exported / entry["file"]).is_file() and len(entry["sha256"]) == 64
        assert entry["verified"]["passed"] and entry["verified"]["max_abs_prob_diff"] <= 1e-4
        assert entry["versions"]["keras"] and entry["versions"]["jax2onnx"]
    assert spec.model_id == read_spec(V1 / "lite_bundle").model_id  # same weights, same id
    assert choose_runtime(spec, "auto") == "onnx"


def test_every_runtime_writes_the_same_rows(exported, tree, tmp_path):
    keras = classify(tree, exported, tmp_path / "keras", "keras")
    probs = [c for c in keras.columns if c.startswith("prob_")]
    for runtime in ("onnx", "openvino"):
        other = classify(tree, exported, tmp_path / runtime, runtime)
        assert other.relpath.tolist() == keras.relpath.tolist()
        assert other.status.tolist() == keras.status.tolist() and other.error.equals(keras.error)
        ok = keras.status == "ok"
        np.testing.assert_allclose(
            other.loc[ok, probs].to_numpy(), keras.loc[ok, probs].to_numpy(), atol=1e-4
        )
        top_two = np.sort(keras.loc[ok, probs].to_numpy(), axis=1)[:, -2:]
        clear = (top_two[:, 1] - top_two[:, 0]) > 1e-4
        assert (other.label[ok][clear] == keras.label[ok][clear]).all()
        facts = json.loads(next((tmp_path / runtime / "runs").glob("*.json")).read_text())
        summary = json.loads((tmp_path / runtime / "summary.json").read_text())
        assert facts["runtime"] == summary["runtime"] == runtime


AUTO_RUN = """
import sys
from pathlib import Path
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
result = run_classify(ClassifyConfig(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
print(result.record["runtime"], ",".join(sorted(m for m in ("keras", "jax") if m in sys.modules)) or "-")
"""


def test_an_exported_runtime_never_imports_keras_or_jax(exported, tree, tmp_path):
    command = [sys.executable, "-c", AUTO_RUN, str(tree), str(exported), str(tmp_path / "out")]
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["onnx", "-"], proc.stderr


def test_bundles_without_an_export_still_classify_with_keras(color_bundle, tree, tmp_path):
    rows = classify(tree, color_bundle, tmp_path / "out", "auto")
    facts = json.loads(next((tmp_path / "out" / "runs").glob("*.json")).read_text())
    assert facts["runtime"] == "keras" and (rows.status == "ok").sum() == 21
    with pytest.raises(BundleError, match="no verified onnx export"):
        classify(tree, color_bundle, tmp_path / "again", "onnx")


def test_a_changed_export_file_is_refused(exported, tree, tmp_path):
    bundle = shutil.copytree(exported, tmp_path / "bundle")
    with open(bundle / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="changed since it was verified"):
        classify(tree, bundle, tmp_path / "out", "onnx")


def test_the_runtime_is_chosen_on_the_command_line(exported, tree, tmp_path):
    from typer.testing import CliRunner

    from classify_job.cli import app

    def invoke(*args):
        return CliRunner().invoke(app, ["classify", str(tree), "--model", str(exported), *map(str, args)])

    result = invoke("--out", tmp_path / "out", "--runtime", "openvino", "--runtime-threads", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["runtime"] == "openvino"
    result = invoke("--out", tmp_path / "bad", "--runtime", "tensorrt")
    assert result.exit_code == 2 and "runtime must be one of" in result.output
