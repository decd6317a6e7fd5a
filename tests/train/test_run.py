"""TrainConfig, the CNN builder, and real (tiny) training runs that write a loadable bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classify_job.bundle import load_bundle
from classify_job.errors import InputError, OutputError
from classify_job.nets.cnn import build_cnn, stage_widths
from classify_job.train.architectures import ARCHITECTURES, build_model, configure
from classify_job.train.config import AugmentConfig, TrainConfig
from classify_job.train.fit import make_optimizer
from classify_job.train.pipeline import train

NO_AUGMENT = AugmentConfig("none", 0, 0, 0, 0, 0)


def tiny_config(data: Path, out: Path, **kwargs) -> TrainConfig:
    options = dict(
        epochs=2, batch_size=8, image_size=(16, 16), val_split=0.25, test_split=0.25, augment=NO_AUGMENT,
        int8=False,  # the int8 step has its own tests (tests/train/test_int8_train.py)
    )  # fmt: skip
    return TrainConfig(data, out, **{**options, **kwargs})


def test_config_validates_with_the_received_value(tmp_path):
    with pytest.raises(InputError, match="epochs=0"):
        TrainConfig(tmp_path, tmp_path, epochs=0)
    with pytest.raises(InputError, match="resnet"):
        configure(TrainConfig(tmp_path, tmp_path, arch="resnet"))
    with pytest.raises(InputError, match="val_split"):
        TrainConfig(tmp_path, tmp_path, val_split=0.5, test_split=0.6)
    with pytest.raises(InputError, match=r"workers must be in \[1, \d+\]"):
        TrainConfig(tmp_path, tmp_path, workers=100_000)  # bounded to the machine like classify's
    assert TrainConfig("d", "o", image_size=32).image_size == (32, 32)


def test_config_from_toml_with_overrides(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(
        '[train]\ndata_dir = "data/flowers"\nout_dir = "models/flowers"\nepochs = 7\nimage_size = [48, 40]\n'
        '[train.augment]\nflip = "none"\nrotation = 0.0\n'
    )
    config = TrainConfig.resolve(job, epochs=None, seed=3)
    assert config.data_dir == Path("data/flowers") and config.epochs == 7 and config.seed == 3
    assert config.image_size == (48, 40) and config.augment.flip == "none" and config.augment.zoom == 0.1
    assert config.with_overrides(epochs=2, batch_size=None).epochs == 2
    assert json.loads(json.dumps(config.to_dict()))["augment"]["flip"] == "none"
    job.write_text('[train]\ndata_dir = "d"\nout_dir = "o"\nepoch = 3\n')
    with pytest.raises(InputError, match="epoch"):
        TrainConfig.resolve(job)
    job.write_text('[classify]\ninput_dir = "d"\n')
    with pytest.raises(InputError, match=r"\[train\]"):
        TrainConfig.resolve(job)


def test_registry_builds_by_name_and_rejects_unknown():
    assert "cnn" in ARCHITECTURES
    model = build_model("cnn", 4, (16, 16), "grayscale", {"top_width": 32})
    assert model.input_shape == (None, 16, 16, 1) and model.output_shape == (None, 4)
    with pytest.raises(InputError, match="Received: arch='vgg'"):
        build_model("vgg", 4, (16, 16), "rgb", {})


@pytest.mark.parametrize("size", [(28, 28), (64, 48), (33, 17), (128, 128)])
def test_cnn_outputs_probabilities_for_any_size(size):
    model = build_cnn(3, size, 3, top_width=32)
    x = np.random.default_rng(0).uniform(0, 255, (2, *size, 3)).astype("float32")
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_stage_widths_pool_to_at_most_4_pixels():
    assert stage_widths(14, 256) == [64, 128, 256]
    assert stage_widths(32, 128) == [32, 32, 64, 128]
    assert stage_widths(4, 64) == [64]


def test_cosine_schedule_warms_up_then_decays(tmp_path):
    config = TrainConfig(
        tmp_path, tmp_path, epochs=4, lr_schedule="cosine", warmup_epochs=1, learning_rate=0.01
    )
    schedule = make_optimizer(config, steps_per_epoch=10).learning_rate
    assert float(schedule) == pytest.approx(0.0)


def test_train_writes_a_loadable_bundle_with_reports(tiny_tree, tmp_path):
    data = tiny_tree(per_class=8)
    (data / "red" / "broken.png").write_bytes(b"\x89PNG broken")
    epochs_seen = []
    result = train(tiny_config(data, tmp_path / "model"), on_epoch=epochs_seen.append)
    assert [e.epoch for e in epochs_seen] == [1, 2] and "val_loss" in epochs_seen[0].metrics
    names = {p.name for p in result.bundle_dir.iterdir()}
    expected = {
        "model.keras",
        "bundle.json",
        "metrics.json",
        "history.csv",
        "training_curves.png",
        "accuracy_vs_time.png",
        "README.md",
    }
    assert expected | {"confusion_matrix.png", "confusion_matrix.csv", "misclassified.csv"} <= names
    bundle = load_bundle(result.bundle_dir)
    assert bundle.spec.labels == ("blue", "green", "red") and bundle.spec.model_id == result.spec.model_id
    extra = bundle.spec.extra
    assert extra["run"]["bad_files"] == 1 and extra["run"]["data_fingerprint"]
    assert sum(extra["run"]["split_sizes"].values()) == 24 and extra["training"]["epochs"] == 2
    assert set(extra["versions"]) >= {"keras", "jax", "numpy"}
    assert len(pd.read_csv(result.bundle_dir / "history.csv")) == 2
    assert json.loads((result.bundle_dir / "metrics.json").read_text())["split"] == "test"
    card = (result.bundle_dir / "README.md").read_text()
    assert result.spec.model_id in card and "## Decisions" in card
    assert result.spec.calibration["calibration_id"] in card
    assert (result.bundle_dir / "calibration.png").is_file()
    with pytest.raises(OutputError, match="already holds"):
        train(tiny_config(data, tmp_path / "model"))


def test_training_learns_colours_and_weights_imbalanced_classes(tiny_tree, tmp_path):
    data = tiny_tree(per_class=6)
    from helpers import write_image

    for i in range(6, 24):
        write_image(data / "red" / f"extra_{i}.png", (220, 30, 30))
    config = tiny_config(data, tmp_path / "m", epochs=6, learning_rate=3e-3, val_split=0.2, test_split=0.2)
    result = train(config)
    weights = result.spec.extra["run"]["class_weights"]
    assert weights is not None and weights["red"] < weights["blue"]
    assert result.report.accuracy >= 0.75


@pytest.mark.slow
def test_train_with_augmentation_and_cosine_schedule(tiny_tree, tmp_path):
    config = tiny_config(
        tiny_tree(per_class=8),
        tmp_path / "aug",
        augment=AugmentConfig(),
        lr_schedule="cosine",
        warmup_epochs=1,
    )
    result = train(config)
    assert result.history[-1]["learning_rate"] < result.history[0]["learning_rate"]
    assert result.spec.extra["training"]["augment"]["rotation"] == 0.05


def test_a_trained_bundle_carries_a_verified_export_and_a_failed_one_keeps_nothing(
    tiny_tree, tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from classify_job.cli import app
    from classify_job.train import export as export_module

    result = train(tiny_config(tiny_tree(per_class=8), tmp_path / "model"))
    assert result.export_warning is None
    assert [e["format"] for e in result.spec.exports] == ["onnx", "openvino"]
    assert all(e["verified"]["source"].startswith("the test split") for e in result.spec.exports)
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # nothing can match now
    outcome = CliRunner().invoke(app, ["export", str(tmp_path / "model")])
    assert outcome.exit_code == 3 and "does not match the Keras model" in outcome.output
    assert (
        not (tmp_path / "model" / "model.onnx").exists() and not load_bundle(tmp_path / "model").spec.exports
    )
