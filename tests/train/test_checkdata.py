"""check_data finds unreadable files, duplicates, near duplicates, misnamed formats and imbalance."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import write_image
from PIL import Image
from typer.testing import CliRunner

from classify_job.cli import app
from classify_job.errors import DatasetError
from classify_job.train.checkdata import check_data
from classify_job.train.nearduplicates import (
    NEAR_DUPLICATE_DISTANCE,
    SIGNATURE_BYTES,
    near_pairs,
    signature_vectors,
)


def test_clean_tree_has_no_problems(tiny_tree):
    report = check_data(tiny_tree(per_class=4))
    assert report.problems == ()
    assert report.classes == ("blue", "green", "red") and report.num_files == 12
    assert report.class_counts == {"blue": 4, "green": 4, "red": 4} and report.imbalance_ratio == 1.0
    assert report.formats == {"JPEG": 6, "PNG": 6} and report.modes == {"RGB": 12}
    assert (report.sizes.min_width, report.sizes.max_height, report.sizes.small_images) == (24, 20, 12)


def test_finds_corrupt_duplicate_misnamed_and_ignored_files(tiny_tree):
    root = tiny_tree(per_class=4)
    (root / "red" / "truncated.png").write_bytes((root / "red" / "red_1.png").read_bytes()[:60])
    (root / "red" / "empty.jpg").write_bytes(b"")
    shutil.copy(root / "green" / "green_1.png", root / "green" / "copy.png")
    shutil.copy(root / "blue" / "blue_1.png", root / "red" / "blue_in_red.png")
    write_image(root / "blue" / "really_png.jpg", (30, 40, 220), fmt="PNG")
    (root / "blue" / "notes.txt").write_text("hello")
    report = check_data(root, workers=2)
    assert sorted(b.relpath for b in report.corrupt) == ["red/empty.jpg", "red/truncated.png"]
    assert report.duplicates[0].conflicting and set(report.duplicates[0].labels) == {"blue", "red"}
    assert {g.relpaths for g in report.duplicates if not g.conflicting} == {
        ("green/copy.png", "green/green_1.png")
    }
    assert [(m.relpath, m.actual_format) for m in report.format_mismatches] == [
        ("blue/really_png.jpg", "PNG")
    ]
    assert report.ignored_files == ("blue/notes.txt",)
    assert report.class_counts["red"] == 5  # the two corrupt files do not count
    assert len(report.problems) == 4


def test_presplit_counts_and_imbalance(tiny_tree, tmp_path):
    root = tmp_path / "pre"
    tiny_tree(per_class=2, root=root / "train")
    for i in range(8):
        write_image(root / "train" / "red" / f"more_{i}.png", (220, 30, 30))
    tiny_tree(per_class=1, root=root / "test")
    report = check_data(root)
    assert report.layout == "presplit" and set(report.split_counts) == {"train", "test"}
    assert report.split_counts["train"]["red"] == 10 and report.split_counts["test"]["red"] == 1
    assert report.imbalance_ratio == pytest.approx(11 / 3)
    assert any("imbalanced" in p for p in report.problems)


def test_single_class_and_missing_folder(tmp_path):
    write_image(tmp_path / "one" / "only" / "a.png", (1, 2, 3))
    assert "at least 2" in check_data(tmp_path / "one").problems[0]
    with pytest.raises(DatasetError, match="not found"):
        check_data(tmp_path / "missing")


def write_pattern(path, seed: int, size: int = 64, quality: int = 90):
    """A smooth picture (4x4 random colours, upscaled to ``size``): unlike the noisy flat images of
    ``write_image``, a resized or re-encoded copy of it still looks the same."""
    blocks = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((size, size), Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **({"quality": quality} if path.suffix == ".jpg" else {}))
    return path


def test_finds_near_duplicates_across_and_within_labels(tiny_tree):
    root = tiny_tree(per_class=3)
    write_pattern(root / "red" / "pattern.png", seed=1)
    write_pattern(root / "blue" / "pattern_small.jpg", seed=1, size=48)  # resized and re-encoded
    write_pattern(root / "green" / "other.png", seed=2)
    write_pattern(root / "green" / "other_copy.jpg", seed=2, quality=70)
    shutil.copy(root / "red" / "pattern.png", root / "red" / "exact.png")
    report = check_data(root)
    near = report.near_duplicates
    assert [(g.relpaths, g.labels, g.conflicting) for g in near] == [
        (("blue/pattern_small.jpg", "red/exact.png"), ("blue", "red"), True),  # one file per content
        (("green/other.png", "green/other_copy.jpg"), ("green", "green"), False),
    ]
    assert all(len(g.links) == 1 and 0 < g.max_distance <= NEAR_DUPLICATE_DISTANCE for g in near)
    assert "1 groups of near-identical images under different labels" in report.problems
    assert "2 groups of near-duplicate images" in report.problems
    assert [g.relpaths for g in report.duplicates] == [("red/exact.png", "red/pattern.png")]


def test_near_pair_search_finds_exactly_the_close_pairs():
    """The grid search must agree with comparing every pair, on clustered and on spread-out rows."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (300, SIGNATURE_BYTES))
    copies = np.clip(base[:120] + rng.integers(-6, 7, (120, SIGNATURE_BYTES)), 0, 255)
    blank = np.array([[0], [128], [255]]) * np.ones((3, SIGNATURE_BYTES), int)
    signatures = np.concatenate([base, copies, blank]).astype(np.uint8)
    vectors = signature_vectors(signatures).astype(np.float64)
    squared = (vectors**2).sum(axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None] - 2 * vectors @ vectors.T, 0))
    for limit in (0.05, 0.09, 0.3):
        found = {(i, j) for i, j, _ in near_pairs(signatures, limit)}
        i, j = np.triu_indices(len(signatures), 1)
        close = distances[i, j] <= limit
        assert found == set(zip(i[close].tolist(), j[close].tolist(), strict=True)), limit
    assert {(420, 421), (420, 422), (421, 422)} <= found  # blank images are flagged together


def test_check_data_out_draws_the_sheets_and_lists_every_pair(tiny_tree, tmp_path):
    root = tiny_tree(per_class=4)
    write_pattern(root / "red" / "pattern.png", seed=1)
    write_pattern(root / "blue" / "pattern_small.jpg", seed=1, size=48)
    green = sorted((root / "green").iterdir())[0]
    shutil.copy(green, root / "red" / f"copy{green.suffix}")
    (root / "blue" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "checks"

    result = CliRunner().invoke(app, ["check-data", str(root), "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert "near_duplicates.csv (2 pairs)" in result.output and "suspects.png (3 rows)" in result.output
    for name in ("samples.png", "class_balance.png", "suspects.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300, name
    pairs = pd.read_csv(out / "near_duplicates.csv")
    assert pairs["kind"].tolist() == ["exact_duplicate", "near_duplicate"]
    assert pairs["different_classes"].tolist() == [True, True]
    near = pairs.iloc[1]
    assert {near.file_a, near.file_b} == {"blue/pattern_small.jpg", "red/pattern.png"}
    assert 0 < near.distance <= NEAR_DUPLICATE_DISTANCE


def test_check_data_out_refuses_a_folder_inside_the_dataset(tiny_tree):
    root = tiny_tree(per_class=2)
    result = CliRunner().invoke(app, ["check-data", str(root), "--out", str(root / "report")])
    assert result.exit_code == 2 and "inside the dataset" in result.output
    assert not (root / "report").exists()
    clean = CliRunner().invoke(app, ["check-data", str(root), "--out", str(root / ".checks")])
    assert clean.exit_code == 0, clean.output
    with Image.open(root / ".checks" / "suspects.png") as image:  # "nothing flagged", not absent
        assert image.format == "PNG"
