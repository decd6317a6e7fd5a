import os
from pathlib import Path

import pytest

from classify_job.errors import InputError
from classify_job.scan import Shard, iter_image_files


def touch(root: Path, *relpaths: str) -> None:
    for rel in relpaths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 3)


def relpaths(root: Path, **options) -> list[str]:
    return [e.relpath for e in iter_image_files(root, **options)]


def test_walk_is_sorted_recursive_and_filters_extensions(tmp_path):
    touch(tmp_path, "b/2.JPG", "b/1.png", "a.jpeg", "c/d/e.webp", "notes.txt", "x.parquet")
    assert relpaths(tmp_path) == ["a.jpeg", "b/1.png", "b/2.JPG", "c/d/e.webp"]
    assert relpaths(tmp_path, extensions=["png"]) == ["b/1.png"]


def test_entries_carry_absolute_path_size_and_mtime(tmp_path):
    touch(tmp_path, "a.jpg")
    (entry,) = iter_image_files(tmp_path)
    assert entry.path == str(tmp_path / "a.jpg")
    assert entry.size == 3
    assert entry.mtime_ns == os.stat(tmp_path / "a.jpg").st_mtime_ns


def test_hidden_files_and_excluded_folders_are_skipped(tmp_path):
    touch(tmp_path, ".hidden.jpg", ".cache/a.jpg", "out/thumb.jpg", "keep.jpg")
    assert relpaths(tmp_path, exclude=[tmp_path / "out"]) == ["keep.jpg"]


def test_symlinks_followed_only_on_request_and_cycles_visited_once(tmp_path):
    touch(tmp_path, "real/a.jpg")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "real")
    assert relpaths(tmp_path) == ["real/a.jpg"]
    # Each physical directory is visited once, under the first name in sorted order ("link"),
    # so one file never gets two rows and the loop is not re-entered.
    assert relpaths(tmp_path, follow_symlinks=True) == ["link/a.jpg"]


def test_broken_symlink_becomes_an_entry_with_a_stat_error(tmp_path):
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (entry,) = iter_image_files(tmp_path, follow_symlinks=True)
    assert entry.stat_error and "cannot stat" in entry.stat_error


def test_shards_partition_the_tree_exactly_once(tmp_path):
    touch(tmp_path, *(f"d{i % 7}/img{i}.jpg" for i in range(200)))
    everything = relpaths(tmp_path)
    shards = [relpaths(tmp_path, shard=Shard(k, 4)) for k in range(4)]
    assert sorted(r for shard in shards for r in shard) == sorted(everything)
    assert all(30 < len(s) < 70 for s in shards)  # hashing spreads files evenly enough


@pytest.mark.parametrize("text", ["3", "4/4", "-1/2", "a/b", "1/0"])
def test_bad_shard_spec_is_an_input_error(text):
    with pytest.raises(InputError, match="shard"):
        Shard.parse(text)


def test_missing_root_and_empty_extension_filter_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        list(iter_image_files(tmp_path / "nope"))
    with pytest.raises(InputError, match="extension"):
        list(iter_image_files(tmp_path, extensions=[" "]))
