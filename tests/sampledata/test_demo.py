"""The zero-argument path: sample data, sample model, classified tree, report — then cached."""

import json

from classify_job.sampledata.demo import DemoConfig, run_demo


def test_demo_builds_everything_once_then_reuses_it(tmp_path):
    config = DemoConfig(
        data_dir=tmp_path / "data" / "train", tree_dir=tmp_path / "data" / "tree",
        model_dir=tmp_path / "models" / "sample", out_dir=tmp_path / "out", per_class=6, tree_per_class=2,
    )  # fmt: skip
    first = run_demo(config)
    assert [name for name, _, _ in first.steps] == [
        "sample photos",
        "sample tree",
        "sample model",
        "classify",
    ]
    assert (config.model_dir / "model.keras").is_file() and (config.out_dir / "report.html").is_file()
    summary = json.loads((config.out_dir / "summary.json").read_text())
    assert summary["files"] == first.summary["files"] > 8 and summary["errors"] >= 2  # messy files
    assert first.tree_accuracy is not None and first.test_accuracy is not None

    second = run_demo(config)
    details = {name: detail for name, _, detail in second.steps}
    assert details["sample photos"].startswith("cached") and details["sample model"].startswith("cached")
    assert details["classify"].startswith("0 classified")
