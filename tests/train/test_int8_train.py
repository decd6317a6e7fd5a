"""train writes the int8 graph beside the float ones, gated on the test split it decoded; one the
gate refuses is a warning, and the bundle keeps its float graphs."""

from __future__ import annotations

import logging

from helpers import break_int8_graph

from classify_job.bundle import bundle_file, read_spec
from classify_job.train.pipeline import train

from .test_run import tiny_config


def test_train_writes_the_gated_int8_graph(tiny_tree, tmp_path):
    result = train(tiny_config(tiny_tree(per_class=8), tmp_path / "model", int8=True))
    spec = read_spec(tmp_path / "model")
    assert [e["format"] for e in spec.exports] == ["onnx", "openvino", "onnx-int8"], result.export_warning
    entry = spec.exports[-1]
    assert bundle_file(tmp_path / "model", entry["file"], entry["sha256"]).name == "model.int8.onnx"
    gate = entry["verified"]
    assert gate["passed"] and gate["source"] == "the test split"
    assert gate["images"] == result.split_sizes["test"]
    assert gate["accepted"]["unfamiliar_cutoff"] == "applied"  # the bundle's whole rule, held in memory
    assert entry["quantization"]["calibration"]["images"] == result.split_sizes["train"]
    assert spec.extra["training"]["int8"] is True


def test_a_refused_int8_graph_is_a_warning_and_the_float_graphs_stay(
    tiny_tree, tmp_path, monkeypatch, caplog
):
    break_int8_graph(monkeypatch)  # the int8 graph gets every image wrong
    with caplog.at_level(logging.WARNING):
        train(tiny_config(tiny_tree(per_class=8), tmp_path / "model", int8=True))
    assert "the bundle has no int8 graph" in caplog.text and "int8 graph was refused" in caplog.text
    assert [e["format"] for e in read_spec(tmp_path / "model").exports] == ["onnx", "openvino"]
    assert not (tmp_path / "model" / "model.int8.onnx").exists()
