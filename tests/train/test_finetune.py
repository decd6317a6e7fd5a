"""Fine-tuning EfficientNet-Lite0 on tiny (32x32) trees: config defaults, feature caching, a frozen
backbone that really stays frozen, phase 2 touching only the unfrozen blocks, loadable bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classify_job.bundle import load_bundle
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.config import build
from classify_job.errors import InputError
from classify_job.nets import pretrained
from classify_job.train import finetune
from classify_job.train.architectures import configure
from classify_job.train.augment import build_augmentation
from classify_job.train.config import AugmentConfig, TrainConfig
from classify_job.train.pipeline import prepare_data, train
from classify_job.train.state import TrainRun

SIZE = (32, 32)
NO_AUGMENT = AugmentConfig("none", 0, 0, 0, 0, 0)
CHEAP_AUGMENT = AugmentConfig(rotation=0.0, zoom=0.0)  # no resampling: compiles in a second


@pytest.fixture(autouse=True)
def _use_cache(lite0_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSIFY_JOB_CACHE", str(lite0_weights))


def lite_config(data: Path, out: Path, **kwargs) -> TrainConfig:
    options = dict(
        arch="efficientnet_lite0",
        epochs=4,
        batch_size=8,
        image_size=SIZE,
        val_split=0.25,
        test_split=0.25,
        augment=NO_AUGMENT,
    )
    return TrainConfig(data, out, **{**options, **kwargs})


def imagenet_backbone_weights() -> dict[str, list[np.ndarray]]:
    backbone = pretrained.pretrained_backbone(SIZE)
    return {layer.name: layer.get_weights() for layer in backbone.layers if layer.weights}


def changed_layers(model, reference: dict[str, list[np.ndarray]]) -> set[str]:
    backbone = model.get_layer(finetune.BACKBONE)
    return {
        name
        for name, arrays in reference.items()
        if any(
            not np.array_equal(a, b)
            for a, b in zip(backbone.get_layer(name).get_weights(), arrays, strict=True)
        )
    }


def test_image_size_defaults_per_architecture_and_lite0_needs_rgb(tmp_path):
    def size(**options):
        return configure(TrainConfig(tmp_path, tmp_path, **options)).image_size

    assert size(arch="efficientnet_lite0") == (224, 224) and size() == (64, 64)
    assert size(arch="efficientnet_lite0", image_size=96) == (96, 96)
    with pytest.raises(InputError, match=r"color_mode=.grayscale."):
        size(arch="efficientnet_lite0", color_mode="grayscale")


def test_options_reject_unknown_keys_and_bad_values():
    assert finetune.FinetuneOptions.from_dict({"fine_tune_blocks": 2}).fine_tune_blocks == 2
    with pytest.raises(InputError, match="fine_tune_block"):
        finetune.FinetuneOptions.from_dict({"fine_tune_block": 2})
    with pytest.raises(InputError, match="fine_tune_blocks=17"):
        finetune.FinetuneOptions(fine_tune_blocks=17)
    with pytest.raises(InputError, match="rgb"):
        finetune.build_pretrained_classifier(3, SIZE, 1)


def test_unfreezing_picks_the_top_blocks_and_head_conv_but_no_batchnorm():
    from classify_job.nets.efficientnet_lite import build_backbone

    backbone = build_backbone(SIZE, random_init=False)
    unfrozen = finetune.unfreeze_top_blocks(backbone, 2)
    assert set(unfrozen) == {
        "block14_expand_conv",
        "block14_dwconv",
        "block14_project_conv",
        "block15_expand_conv",
        "block15_dwconv",
        "block15_project_conv",
        "head_conv",
    }
    assert all(
        not w.trainable for layer in backbone.layers if layer.name.endswith("_bn") for w in layer.weights
    )


def test_augmented_views_differ_from_the_clean_view_and_from_each_other():
    backbone = pretrained.pretrained_backbone(SIZE)
    images = np.random.default_rng(0).integers(0, 256, (8, *SIZE, 3), dtype=np.uint8)
    clean = finetune.extract_features(finetune.feature_function(backbone), images, 4)
    augment = finetune.feature_function(backbone, build_augmentation(CHEAP_AUGMENT, seed=0))
    first, second = (finetune.extract_features(augment, images, 4) for _ in range(2))
    assert clean.shape == (8, 1280) and not np.allclose(first, clean) and not np.allclose(first, second)
    np.testing.assert_allclose(
        finetune.extract_features(finetune.feature_function(backbone), images, 3), clean, atol=1e-4
    )


def test_phase_one_caches_features_once_keeps_the_backbone_and_classifies(tiny_tree, tmp_path, monkeypatch):
    data = tiny_tree(per_class=8)
    seen = []
    original = finetune.extract_features

    def counting(features_of, images, batch_size=64):
        seen.append(len(images))
        return original(features_of, images, batch_size)

    monkeypatch.setattr(finetune, "extract_features", counting)
    parsed = []
    monkeypatch.setattr(finetune, "build", lambda *args: parsed.append(args) or build(*args))
    config = lite_config(data, tmp_path / "model", arch_options={"augmented_views": 1}, augment=CHEAP_AUGMENT)
    result = train(config)
    assert len(parsed) == 1  # arch_options parsed once, when the run starts
    sizes = result.split_sizes
    # one clean and one augmented view of each training image, one of each validation image; no more,
    # however many epochs the head trained
    assert sorted(seen) == sorted([sizes["train"], sizes["train"], sizes["val"]]) and len(result.history) >= 2
    history = pd.read_csv(result.bundle_dir / "history.csv")
    assert set(history.phase) == {1} and list(history.epoch) == list(range(1, len(history) + 1))
    bundle = load_bundle(result.bundle_dir)
    assert bundle.spec.architecture == "efficientnet_lite0" and bundle.spec.image_size == SIZE
    provenance = bundle.spec.extra["pretrained"]
    assert provenance["sha256_prefix"] == pretrained.SOURCE_SHA256_PREFIX and provenance["kept_phase"] == 1
    assert changed_layers(bundle.model, imagenet_backbone_weights()) == set()
    assert "fine-tuned from ImageNet" in (result.bundle_dir / "README.md").read_text()
    run = run_classify(
        ClassifyConfig(input_dir=data, model=result.bundle_dir, out=tmp_path / "out", batch_size=4)
    )
    predictions = pd.read_parquet(tmp_path / "out" / "predictions")
    assert run.summary["errors"] == 0 and len(predictions) == 24
    assert (predictions.label == predictions.relpath.str.split("/").str[0]).mean() >= 0.75


def test_the_better_phase_is_kept(tiny_tree, tmp_path, monkeypatch):
    config = lite_config(tiny_tree(per_class=4), tmp_path / "m", arch_options={"fine_tune_blocks": 1})
    data = prepare_data(config)
    net = finetune.build_pretrained_classifier(3, SIZE, 3)
    before = [v.numpy() for v in net.weights]
    phase_one = [{"epoch": 1, "val_loss": 1.0, "phase": 1}]

    def fake_fine_tune(val_loss):
        def run(net, *args, **kwargs):
            kernel = net.get_layer("predictions").kernel
            kernel.assign(kernel.numpy() + 1.0)
            return [{"epoch": 1, "val_loss": val_loss}]

        return run

    run = TrainRun(config, data, finetune.FinetuneOptions(fine_tune_blocks=1))
    monkeypatch.setattr(finetune, "fine_tune", fake_fine_tune(2.0))
    rows, kept = finetune._phase_two(net, run, phase_one)
    assert kept == 1 and rows[0]["phase"] == 2 and rows[0]["epoch"] == 2
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, net.weights, strict=True))
    monkeypatch.setattr(finetune, "fine_tune", fake_fine_tune(0.5))
    _, kept = finetune._phase_two(net, run, phase_one)
    assert kept == 2 and not np.array_equal(before[-2], net.get_layer("predictions").kernel.numpy())


def test_phase_two_changes_only_the_unfrozen_blocks(tiny_tree, tmp_path):
    config = lite_config(tiny_tree(per_class=6), tmp_path / "m", learning_rate=0.1, augment=CHEAP_AUGMENT)
    data = prepare_data(config)
    net = finetune.build_pretrained_classifier(3, SIZE, 3)
    options = finetune.FinetuneOptions(fine_tune_blocks=2, fine_tune_epochs=2)
    rows = finetune.fine_tune(net, TrainRun(config, data, options))
    assert len(rows) >= 1 and rows[0]["learning_rate"] == pytest.approx(0.01)
    changed = changed_layers(net, imagenet_backbone_weights())
    assert changed and changed <= {
        f"{block}_{part}"
        for block in ("block14", "block15")
        for part in ("expand_conv", "dwconv", "project_conv")
    } | {"head_conv"}
    assert not net.get_layer(finetune.BACKBONE).trainable  # frozen again afterwards


@pytest.mark.slow
def test_train_with_phase_two_records_both_phases(tiny_tree, tmp_path):
    options = {"fine_tune_blocks": 1, "fine_tune_epochs": 2}
    result = train(lite_config(tiny_tree(per_class=6), tmp_path / "model", arch_options=options))
    history = pd.read_csv(result.bundle_dir / "history.csv")
    assert list(history.phase.unique()) == [1, 2] and history.epoch.is_monotonic_increasing
    kept = result.spec.extra["pretrained"]["kept_phase"]
    assert kept == int(history.phase[history.val_loss.idxmin()])
    bundle = load_bundle(result.bundle_dir)
    changed = changed_layers(bundle.model, imagenet_backbone_weights())
    assert (changed == set()) == (kept == 1)


def test_the_int8_refit_sees_the_held_out_rows_own_images(tiny_tree, tmp_path, monkeypatch):
    """The out-of-fold rows and the validation rows are refitted on the images they were predicted
    from: the float graph's features of the attached images are the held-out rows' features."""
    from classify_job.classify.backends import graph_outputs
    from classify_job.train import int8_rule

    captured, original = {}, int8_rule.Int8Refit.__call__

    def spy(self, float_graph, int8_graph, test):
        captured["held_out"] = self.sets.held_out
        return original(self, float_graph, int8_graph, test)

    monkeypatch.setattr(int8_rule.Int8Refit, "__call__", spy)
    result = train(lite_config(tiny_tree(per_class=8), tmp_path / "model", int8=True))
    held = captured["held_out"]
    assert (
        "cross-fitted" in held.source and len(held) == result.split_sizes["train"] + result.split_sizes["val"]
    )
    _, features = graph_outputs(result.bundle_dir / "model.onnx", np.concatenate(held.images))
    np.testing.assert_allclose(features, held.features, atol=1e-3)
