"""``train --arch cnn --tta flip``: the CNN is served averaged over each image and its mirror, in
Keras and in the exported graph alike, and its bundle says so; without it the flip is "none"."""

from __future__ import annotations

import numpy as np
import pandas as pd

from classify_job.bundle import load_bundle
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.nets.inference import served_flip
from classify_job.train.pipeline import train

from .test_run import tiny_config


def test_the_flip_is_trained_in_recorded_and_served_by_every_runtime(tiny_tree, tmp_path):
    data = tiny_tree(per_class=8)
    train(tiny_config(data, tmp_path / "flip", arch_options={"tta": "flip"}))
    train(tiny_config(data, tmp_path / "plain"))
    flip, plain = load_bundle(tmp_path / "flip"), load_bundle(tmp_path / "plain")
    assert served_flip(flip.model) == "horizontal" and flip.spec.extra["tta"] == {"flip": "horizontal"}
    assert served_flip(plain.model) == "none" and plain.spec.extra["tta"] == {"flip": "none"}
    rows = {}
    for runtime in ("keras", "onnx"):
        out = tmp_path / f"out-{runtime}"
        run_classify(ClassifyConfig(data, tmp_path / "flip", out, runtime=runtime))
        rows[runtime] = pd.read_parquet(out / "predictions").sort_values("relpath")
    assert len(rows["onnx"]) == 24 and list(rows["onnx"].label) == list(rows["keras"].label)
    np.testing.assert_allclose(rows["onnx"].confidence, rows["keras"].confidence, atol=1e-4)
