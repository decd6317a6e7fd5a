"""What format-1 code wrote (tests/fixtures/v1) keeps working: bundles load and predict the same,
and an output directory resumes without redoing anything."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from classify_job.bundle import load_bundle
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.imageio import load_image

V1 = Path(__file__).parent / "fixtures" / "v1"
EXPECTED = json.loads((V1 / "expected.json").read_text())


@pytest.mark.parametrize("name", ["lite_bundle", "cnn_bundle"])
def test_format_1_bundles_load_and_predict_as_before(name):
    bundle = load_bundle(V1 / name)
    expected = EXPECTED[name]
    assert bundle.spec.model_id == expected["model_id"]
    relpaths = sorted(expected["probs"])
    pixels = np.stack([load_image(V1 / "images" / r, bundle.spec.image_size).pixels for r in relpaths])
    probs = np.asarray(bundle.model.predict_on_batch(pixels.astype("float32")))
    np.testing.assert_allclose(probs, [expected["probs"][r] for r in relpaths], atol=1e-6)


def copy_v1(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The v1 images (with their recorded mtimes), bundle and output directory, copied to tmp_path."""
    images = shutil.copytree(V1 / "images", tmp_path / "images")
    for relpath, mtime_ns in json.loads((V1 / "image_mtimes.json").read_text()).items():
        os.utime(images / relpath, ns=(mtime_ns, mtime_ns))
    bundle = shutil.copytree(V1 / "cnn_bundle", tmp_path / "cnn_bundle")
    out = shutil.copytree(V1 / "out", tmp_path / "out")
    return images, bundle, out


def test_format_1_output_resumes_without_redoing_rows(tmp_path):
    images, bundle, out = copy_v1(tmp_path)
    result = run_classify(ClassifyConfig(images, bundle, out))
    assert result.progress.classified == 0 and result.progress.skipped == 6
    shutil.copy(images / "red" / "red_0.png", images / "red" / "red_new.png")
    result = run_classify(ClassifyConfig(images, bundle, out))
    assert result.progress.classified == 1
    frame = pd.read_parquet(out / "predictions")
    assert len(frame) == 7 and frame.relpath.is_unique
    assert result.summary["files"] == 7


def test_format_1_output_reads_as_one_dataset_after_new_columns_appear(tmp_path):
    """Old parts are upgraded in place, so pandas and DuckDB (which take the columns from one
    file) see every column in every part; until then every reader here fills them with nulls."""
    import duckdb

    from classify_job.predictions import SCHEMA_VERSION, iter_batches, list_parts, schema_version

    images, bundle, out = copy_v1(tmp_path)
    old = [batch for _, batch in iter_batches(out, ["relpath", "relpath_bytes"])]
    assert sum(b.num_rows for b in old) == 6
    assert sum(b.column("relpath_bytes").null_count for b in old) == 6
    shutil.copy(images / "red" / "red_0.png", images / "red" / "red_new.png")
    run_classify(ClassifyConfig(images, bundle, out))
    assert {schema_version(pq.read_schema(p)) for p in list_parts(out)} == {SCHEMA_VERSION}
    frame = pd.read_parquet(out / "predictions")
    assert len(frame) == 7 and "relpath_bytes" in frame and frame.relpath_bytes.isna().all()
    glob = str(out / "predictions" / "*.parquet")
    ((count, nulls),) = duckdb.sql(
        f"SELECT count(*), count(relpath_bytes) FROM read_parquet('{glob}')"
    ).fetchall()
    assert (count, nulls) == (7, 0)
