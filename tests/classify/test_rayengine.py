"""The Ray Data engine against the local engine, on a real local Ray cluster."""

import dataclasses

import pandas as pd
import pytest

from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify

pytest.importorskip("ray", reason="the [ray] extra is not installed")

VOLATILE = ["run_id", "classified_at"]


@pytest.mark.slow  # 20-40 s: starts a local Ray cluster
def test_ray_engine_writes_the_same_rows_and_summary_as_the_local_engine(tiny_tree, color_bundle, tmp_path):
    tree = tiny_tree(per_class=7)
    (tree / "corrupt.jpg").write_bytes(b"\xff\xd8 not really")
    local = ClassifyConfig(input_dir=tree, model=color_bundle, out=tmp_path / "local", batch_size=4)
    on_ray = dataclasses.replace(local, out=tmp_path / "ray", engine="ray")
    local_summary = run_classify(local).summary
    ray_summary = run_classify(on_ray).summary

    a = pd.read_parquet(local.out / "predictions").sort_values("relpath").reset_index(drop=True)
    b = pd.read_parquet(on_ray.out / "predictions").sort_values("relpath").reset_index(drop=True)
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a.drop(columns=VOLATILE), b.drop(columns=VOLATILE), atol=1e-6)
    for key in ("files", "ok", "errors", "labels", "error_reasons", "model_id"):
        assert local_summary[key] == ray_summary[key]

    again = run_classify(on_ray)  # resume works the same way: nothing left to do
    assert again.progress.classified == 0 and again.progress.skipped == 22
