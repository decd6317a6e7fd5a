"""One train builds its bundle in memory: bundle.json is written once, as the last staged file, and
nothing training has just written or read (the model, unfamiliar.npz, the data folder) is read again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from helpers import write_image

from classify_job import atomic
from classify_job.bundle import SPEC_FILE, BundleSpec, read_spec
from classify_job.decisions.rule import DecisionRule, UnfamiliarScore
from classify_job.train import dataset
from classify_job.train.export import decoded_images, verification_images
from classify_job.train.pipeline import prepare_data, train
from classify_job.train.staging import STAGING_PREFIX

from .test_run import tiny_config


@pytest.fixture
def bundle_json_writes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path bundle.json is written at through the one atomic writer."""
    writes: list[Path] = []
    original = atomic.atomic_path

    def recording(path):
        if Path(path).name == SPEC_FILE:
            writes.append(Path(path))
        return original(path)

    monkeypatch.setattr(atomic, "atomic_path", recording)
    return writes


def refuse(what: str):
    def refused(*args, **kwargs):
        raise AssertionError(f"train read back {what}")

    return refused


def test_one_train_writes_bundle_json_once_and_reads_nothing_back(
    tiny_tree, tmp_path, monkeypatch, bundle_json_writes
):
    import keras

    config = tiny_config(tiny_tree(per_class=8), tmp_path / "model")
    data = prepare_data(config)  # the one walk and decode; any later walk of the folder fails
    monkeypatch.setattr(dataset, "iter_files", refuse("the data folder"))
    monkeypatch.setattr(keras.saving, "load_model", refuse("model.keras"))
    monkeypatch.setattr(UnfamiliarScore, "load", refuse("unfamiliar.npz"))
    result = train(config, data=data)
    assert len(bundle_json_writes) == 1 and bundle_json_writes[0].parent.name.startswith(STAGING_PREFIX)
    monkeypatch.undo()
    spec = read_spec(config.out_dir)
    assert spec.to_json() == result.spec.to_json()
    assert spec.extra["training"]["out_dir"] == str(config.out_dir)  # not the staging folder
    assert [e["format"] for e in spec.exports] == ["onnx", "openvino"]
    assert all(e["verified"]["source"].startswith("the test split of") for e in spec.exports)
    rule = DecisionRule.from_bundle(config.out_dir, spec)  # the recorded sha256 is the written file's
    assert rule.score is not None and rule.calibration_id == spec.calibration["calibration_id"]


def test_a_tuned_bundle_gets_its_extras_in_the_one_write(tiny_tree, tmp_path, bundle_json_writes):
    def add_trials(staging: Path, spec: BundleSpec) -> BundleSpec:
        (staging / "trials.csv").write_text("trial\n")
        return dataclasses.replace(spec, extra={**spec.extra, "tuning": {"trials_run": 0}})

    result = train(tiny_config(tiny_tree(per_class=8), tmp_path / "m"), before_commit=add_trials)
    assert len(bundle_json_writes) == 1
    assert read_spec(result.bundle_dir).extra["tuning"] == {"trials_run": 0}
    assert (result.bundle_dir / "trials.csv").is_file()


@pytest.mark.parametrize("test_split", [0.25, 0.0])
def test_export_verifies_on_the_images_it_would_read_from_the_folder(tiny_tree, tmp_path, test_split):
    root = tiny_tree(per_class=6)
    write_image(root / "red" / "deeper" / "a.png", (200, 20, 20))  # a folder walks among its sorted siblings
    write_image(root / "red" / "Z.png", (200, 20, 20))
    (root / "green" / "broken.png").write_bytes(b"\x89PNG broken")  # unreadable: skipped by both
    config = tiny_config(root, tmp_path / "m", test_split=test_split)
    data = prepare_data(config)
    spec = BundleSpec(
        labels=data.index.classes,
        image_size=config.image_size,
        color_mode=config.color_mode,
        architecture="cnn",
        extra={"training": {**config.to_dict(), "data_dir": str(root.resolve())}},
    )
    from_folder = verification_images(spec, None)
    in_memory = decoded_images(data, str(root.resolve()))
    assert in_memory.source == from_folder.source
    assert ("test split" in in_memory.source) == (test_split > 0)
    np.testing.assert_array_equal(in_memory.pixels, from_folder.pixels)
