"""check_data finds unreadable files, duplicates, misnamed formats and imbalance."""

from __future__ import annotations

import shutil

import pytest
from helpers import write_image

from classify_job.errors import DatasetError
from classify_job.train.checkdata import check_data


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
