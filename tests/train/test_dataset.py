"""Folder discovery, stable splits, decoding into arrays, class weights, augmentation, IDX files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import write_image

from classify_job.errors import DatasetError, InputError
from classify_job.sampledata import fashion_mnist
from classify_job.train.augment import RandomShift, build_augmentation
from classify_job.train.config import AugmentConfig
from classify_job.train.dataset import LabelledFile, class_weights, hash_split, index_dataset, load_split


def all_relpaths(index) -> list[str]:
    return sorted(s.relpath for split in index.splits.values() for s in split)


def test_index_finds_sorted_classes_and_every_image(tiny_tree):
    root = tiny_tree(per_class=6)
    (root / "red" / "notes.txt").write_text("not an image")
    (root / "red" / ".hidden.png").write_bytes(b"")
    index = index_dataset(root, val_split=0.2, test_split=0.2)
    assert index.classes == ("blue", "green", "red")
    assert index.layout == "folders"
    assert len(all_relpaths(index)) == 18
    assert not any(p.endswith((".txt", ".hidden.png")) for p in all_relpaths(index))
    assert sum(index.split_sizes().values()) == 18


def test_split_is_deterministic_and_adding_images_moves_none(tiny_tree):
    root = tiny_tree(per_class=8)
    before = index_dataset(root, 0.25, 0.25)
    assert before == index_dataset(root, 0.25, 0.25)
    for i in range(8, 16):
        write_image(root / "red" / f"red_{i}.png", (220, 30, 30))
    after = index_dataset(root, 0.25, 0.25)
    for name in ("train", "val", "test"):
        old = {s.relpath for s in before.splits[name]}
        new = {s.relpath for s in after.splits[name]}
        assert old <= new, name
    assert before.fingerprint() != after.fingerprint()


def test_hash_split_fractions_are_stratified():
    samples = [LabelledFile(f"c{c}/img_{i}.png", c, 100) for c in range(3) for i in range(3000)]
    splits = hash_split(samples, val_split=0.1, test_split=0.2)
    for c in range(3):
        n = {name: sum(1 for s in split if s.label == c) for name, split in splits.items()}
        assert n["test"] / 3000 == pytest.approx(0.2, abs=0.03)
        assert n["val"] / 3000 == pytest.approx(0.1, abs=0.03)


def test_presplit_layout_uses_folders_and_carves_val_from_train(tiny_tree, tmp_path):
    root = tmp_path / "pre"
    tiny_tree(per_class=10, root=root / "train")
    tiny_tree(per_class=2, root=root / "test")
    index = index_dataset(root, val_split=0.3, test_split=0.5)
    assert index.layout == "presplit"
    assert index.split_sizes()["test"] == 6
    assert all(s.relpath.startswith("test/") for s in index.splits["test"])
    assert all(s.relpath.startswith("train/") for s in index.splits["val"])
    assert index.split_sizes()["train"] + index.split_sizes()["val"] == 30


def test_presplit_rejects_unknown_class_in_test(tiny_tree, tmp_path):
    root = tmp_path / "pre"
    tiny_tree(per_class=3, root=root / "train")
    write_image(root / "test" / "purple" / "p.png", (120, 0, 120))
    with pytest.raises(DatasetError, match="purple"):
        index_dataset(root)


def test_index_errors_are_typed(tmp_path, tiny_tree):
    with pytest.raises(DatasetError, match="not found"):
        index_dataset(tmp_path / "missing")
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(DatasetError, match="at least two"):
        index_dataset(tmp_path / "one")
    with pytest.raises(InputError, match="val_split"):
        index_dataset(tiny_tree(), val_split=0.6, test_split=0.5)


def test_load_split_decodes_uint8_and_skips_bad_files(tiny_tree):
    root = tiny_tree(per_class=3)
    (root / "green" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    index = index_dataset(root, 0.0, 0.0)
    loaded = load_split(root, index.splits["train"], (16, 12), "rgb", workers=2)
    assert loaded.images.shape == (9, 16, 12, 3) and loaded.images.dtype == np.uint8
    assert [b.relpath for b in loaded.bad_files] == ["green/broken.jpg"]
    assert "green/broken.jpg" not in loaded.relpaths
    red = loaded.images[loaded.labels == index.classes.index("red")]
    assert red[..., 0].mean() > 150 > red[..., 2].mean()
    gray = load_split(root, index.splits["train"][:2], (8, 8), "grayscale")
    assert gray.images.shape == (2, 8, 8, 1)


def test_class_weights_balance_the_loss():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 4)
    weights = class_weights(labels, 4)
    assert weights[0] == pytest.approx(12 / (4 * 6))
    assert weights[1] == pytest.approx(12 / (4 * 2))
    assert weights[3] == 0.0
    total = sum(weights[c] * n for c, n in enumerate(np.bincount(labels, minlength=4)))
    assert total == pytest.approx(len(labels) * 3 / 4)


def test_augment_config_validates_and_can_be_off():
    with pytest.raises(InputError, match="flip"):
        AugmentConfig(flip="diagonal")
    with pytest.raises(InputError, match="rotation"):
        AugmentConfig(rotation=1.5)
    off = AugmentConfig("none", 0, 0, 0, 0, 0)
    assert not off.enabled and build_augmentation(off, seed=0) is None


def test_augmentation_changes_training_batches_only():
    layers = build_augmentation(
        AugmentConfig(flip="horizontal", rotation=0, zoom=0, contrast=0, brightness=0), 1
    )
    x = np.arange(2 * 4 * 4 * 1, dtype="float32").reshape(2, 4, 4, 1)
    assert np.array_equal(np.asarray(layers(x, training=False)), x)
    outs = [np.asarray(layers(x, training=True)) for _ in range(6)]
    assert any(np.array_equal(o[0], x[0, :, ::-1]) for o in outs)


def test_random_shift_moves_whole_pixels_within_its_limit():
    layer = RandomShift(2 / 28, seed=3)
    x = np.zeros((16, 28, 28, 1), "float32")
    x[:, 12:16, 12:16] = 1.0
    y = np.asarray(layer(x, training=True))
    offsets = {tuple(np.argwhere(img[..., 0] > 0.5).min(axis=0) - 12) for img in y}
    assert len(offsets) > 1 and all(max(abs(o) for o in off) <= 2 for off in offsets)
    np.testing.assert_allclose(y.sum(axis=(1, 2, 3)), 16.0)
    assert np.array_equal(np.asarray(layer(x, training=False)), x)


def test_default_augmentation_keeps_the_train_step_jitted():
    import keras

    inputs = keras.Input((16, 16, 3))
    net = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)))
    augment = build_augmentation(AugmentConfig(), seed=0)
    wrapped = keras.Model(inputs, net(augment(inputs)))
    wrapped.compile(loss="sparse_categorical_crossentropy")
    assert wrapped.jit_compile  # Keras would silently train eagerly (~5x slower) otherwise


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_fashion_source(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


def test_read_idx_round_trips_and_rejects_garbage(tmp_path):
    source = fake_fashion_source(tmp_path / "src")
    images, labels = fashion_mnist.load_split("train", source)
    assert images.shape == (12, 28, 28) and labels.tolist() == [i % 10 for i in range(12)]
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04rest"))
    with pytest.raises(DatasetError, match="not an IDX"):
        fashion_mnist.read_idx(tmp_path / "bad.gz")
    with pytest.raises(DatasetError, match="apt-get"):
        fashion_mnist.load_split("test", tmp_path / "nowhere")


def test_export_folders_writes_a_presplit_tree_the_loader_reads(tmp_path):
    source = fake_fashion_source(tmp_path / "src")
    out = fashion_mnist.export_folders(tmp_path / "fm", source)
    index = index_dataset(out, val_split=0.0, test_split=0.0)
    assert index.classes == tuple(sorted(fashion_mnist.CLASSES))
    assert index.split_sizes() == {"train": 12, "val": 0, "test": 5}
    loaded = load_split(out, index.splits["test"], (28, 28), "grayscale")
    expected, _ = fashion_mnist.load_split("test", source)
    order = [int(Path(p).stem) for p in loaded.relpaths]
    assert np.array_equal(loaded.images[..., 0], expected[order])
    shutil.rmtree(out / "train")
    assert fashion_mnist.export_folders(out, source) == out  # marker: not exported twice
    assert not (out / "train").exists()


def test_training_walks_a_tree_as_classify_does(tiny_tree):
    """Hidden folders (caches, thumbnails) are skipped by every walker, not trained on."""
    from classify_job.walk import iter_files

    root = tiny_tree(per_class=2)
    write_image(root / "red" / ".cache" / "thumb.jpg", (220, 30, 30))
    write_image(root / "red" / "nested" / "deep.png", (220, 30, 30))
    trained = all_relpaths(index_dataset(root, val_split=0.0, test_split=0.0))
    classified = sorted(e.relpath for e in iter_files(root))
    assert trained == classified and "red/nested/deep.png" in trained


def test_names_that_are_not_utf8_train_and_check_like_any_other(tmp_path):
    import os

    from classify_job.train.checkdata import check_data

    root = tmp_path / "data"
    for name, color in (("red", (220, 30, 30)), ("blue", (30, 40, 220))):
        for i in range(3):
            write_image(root / name / f"{i}.png", color)
    os.rename(root / "blue", os.fsdecode(os.fsencode(root) + b"/bl\xe4u"))
    os.rename(root / "red" / "0.png", os.fsdecode(os.fsencode(root / "red") + b"/r\xf6t.png"))
    os.mkfifo(root / "red" / "pipe.png")  # must not hang any walker
    index = index_dataset(root, val_split=0.0, test_split=0.0)
    assert index.classes == ("bl\\xe4u", "red")
    assert "red/r\\xf6t.png" in all_relpaths(index) and len(all_relpaths(index)) == 6
    loaded = load_split(root, index.splits["train"], (8, 8))
    assert len(loaded) == 6 and not loaded.bad_files
    report = check_data(root)
    assert report.class_counts == {"bl\\xe4u": 3, "red": 3}
    assert [b.reason for b in report.corrupt] == ["not a regular file"]
