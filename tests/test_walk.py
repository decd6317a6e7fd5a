"""The one walker: order, filters, hidden names, symlinks, and what it counts as skipped."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from deeptree import deep_tree, remove_tree

from classify_job.errors import InputError
from classify_job.walk import WalkStats, iter_files


def touch(root: Path, *relpaths: str) -> None:
    for rel in relpaths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 3)


def relpaths(root: Path, **options) -> list[str]:
    return [e.relpath for e in iter_files(root, **options)]


def test_walk_is_sorted_recursive_and_filters_extensions(tmp_path):
    touch(tmp_path, "b/2.JPG", "b/1.png", "a.jpeg", "c/d/e.webp", "notes.txt", "x.parquet")
    assert relpaths(tmp_path) == ["a.jpeg", "b/1.png", "b/2.JPG", "c/d/e.webp"]
    assert relpaths(tmp_path, extensions=["png"]) == ["b/1.png"]
    assert relpaths(tmp_path / "b", extensions=["png"], prefix="train/b/") == ["train/b/1.png"]


def test_entries_carry_absolute_path_size_and_mtime(tmp_path):
    touch(tmp_path, "a.jpg")
    (entry,) = iter_files(tmp_path)
    assert entry.path == str(tmp_path / "a.jpg")
    assert entry.size == 3
    assert entry.mtime_ns == os.stat(tmp_path / "a.jpg").st_mtime_ns


def test_hidden_files_and_excluded_folders_are_skipped(tmp_path):
    touch(tmp_path, ".hidden.jpg", ".cache/a.jpg", "out/thumb.jpg", "keep.jpg")
    assert relpaths(tmp_path, exclude=[tmp_path / "out"]) == ["keep.jpg"]


def test_skipped_extensions_and_unlisted_directories_are_counted(tmp_path):
    touch(tmp_path, "a.jpg", "b.cr2", "c/d.cr2", "notes.txt", "locked/e.jpg")
    (tmp_path / "locked").chmod(0)
    stats = WalkStats(ignored_paths=[])
    try:
        found = [e.relpath for e in iter_files(tmp_path, stats=stats)]
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert stats.ignored == {".cr2": 2, ".txt": 1}
    assert stats.ignored_paths == ["b.cr2", "c/d.cr2", "notes.txt"]
    if os.geteuid() != 0:  # root lists any directory
        assert found == ["a.jpg"] and set(stats.unlisted) == {"locked"}


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
    (entry,) = iter_files(tmp_path, follow_symlinks=True)
    assert entry.stat_error and "cannot stat" in entry.stat_error


def test_missing_root_and_empty_extension_filter_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        list(iter_files(tmp_path / "nope"))
    with pytest.raises(InputError, match="extension"):
        list(iter_files(tmp_path, extensions=[" "]))


@pytest.fixture
def deep(tmp_path):
    """A folder for deep trees, removed without recursion (pytest's own clean-up would fail)."""
    yield tmp_path / "deep"
    if (tmp_path / "deep").exists():
        remove_tree(tmp_path / "deep")


def deep_order(depth: int) -> list[str]:
    """The walk's order of :func:`deep_tree`: ``a.jpg`` going down, ``z.jpg`` coming back up."""
    return [("d/" * i) + "a.jpg" for i in range(depth)] + [
        ("d/" * i) + "z.jpg" for i in reversed(range(depth))
    ]


def test_a_tree_1500_directories_deep_is_walked_in_order(deep):
    deep_tree(deep, 1500)
    stats = WalkStats()
    assert relpaths(deep, stats=stats) == deep_order(1500)
    assert not stats.unlisted


DEEP_WALK = """
import resource, sys
from classify_job.walk import WalkStats, iter_files
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
stats = WalkStats()
print(sum(1 for _ in iter_files(sys.argv[1], stats=stats)), len(stats.unlisted))
"""


def test_a_deep_tree_holds_a_bounded_number_of_descriptors(deep):
    """With 128 descriptors allowed, 1500 levels are still all listed (one per level would fail)."""
    deep_tree(deep, 1500)
    proc = subprocess.run([sys.executable, "-c", DEEP_WALK, str(deep)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3000", "0"]


def test_a_followed_link_deep_in_a_tree_returns_to_its_own_parent(deep):
    """Past the open-descriptor bound a parent is reopened as the child's ``..``; under a followed
    link that is the link target's parent, so it is reopened by name instead."""
    deep_tree(deep / "a", 100)
    touch(deep, "real/sub/f.jpg")
    (deep / "a" / ("d/" * 80) / "l").symlink_to(deep / "real")
    expected = ["a/" + e for e in deep_order(100)]
    at = expected.index("a/" + "d/" * 80 + "z.jpg")  # after level 80's "d", before its "z.jpg"
    expected.insert(at, "a/" + "d/" * 80 + "l/sub/f.jpg")
    assert relpaths(deep, follow_symlinks=True) == expected


def test_a_closed_directory_replaced_meanwhile_is_reported_unlisted(deep):
    """A directory closed while a followed link in it is walked, and replaced meanwhile, is not
    listed under a name that now means another directory: the rest of it is counted unlisted."""
    deep_tree(deep / "a", 100)
    touch(deep, "real/f.jpg")
    level = deep / "a" / ("d/" * 79)
    (level / "d" / "l").symlink_to(deep / "real")
    stats = WalkStats()
    walk = iter_files(deep, follow_symlinks=True, stats=stats)
    linked = "a/" + "d/" * 80 + "l/f.jpg"
    while next(walk).relpath != linked:
        pass
    os.rename(level / "d", level / "moved")
    (level / "d").mkdir()
    assert [e.relpath for e in walk] == ["a/" + "d/" * i + "z.jpg" for i in reversed(range(80))]
    assert stats.unlisted == {"a/" + "d/" * 79 + "d": "changed while it was being walked"}
