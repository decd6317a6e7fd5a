from pathlib import Path

import numpy as np
import pytest

from classify_job.classify.scan import Shard, TreeScan
from classify_job.errors import InputError
from classify_job.walk import DEFAULT_EXTENSIONS


def scan(root: Path, shard: Shard = Shard(), done=lambda keys: np.zeros(len(keys), bool)) -> TreeScan:
    return TreeScan(root, DEFAULT_EXTENSIONS, False, shard, (), "model-1", done)


def relpaths(root: Path, shard: Shard) -> list[str]:
    return [e.relpath for e in scan(root, shard).todo()]


def test_shards_partition_the_tree_exactly_once(tmp_path):
    for i in range(200):
        path = tmp_path / f"d{i % 7}" / f"img{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    everything = relpaths(tmp_path, Shard())
    shards = [relpaths(tmp_path, Shard(k, 4)) for k in range(4)]
    assert sorted(r for shard in shards for r in shard) == sorted(everything)
    assert all(30 < len(s) < 70 for s in shards)  # hashing spreads files evenly enough


@pytest.mark.parametrize(
    ("relpath", "count", "owner"), [("d3/img17.jpg", 4, 0), ("caf\u00e9/\u00e9t\u00e9.png", 3, 1)]
)
def test_shard_assignment_is_fixed_by_the_relpath(tmp_path, relpath, count, owner):
    # Existing shard outputs depend on these: the hash must never change. Pinned through the walk's
    # own cut to a shard, the one a run uses.
    (tmp_path / relpath).parent.mkdir()
    (tmp_path / relpath).write_bytes(b"x")
    assert [relpaths(tmp_path, Shard(k, count)) for k in range(count)] == [
        [relpath] if k == owner else [] for k in range(count)
    ]


@pytest.mark.parametrize("text", ["3", "4/4", "-1/2", "a/b", "1/0"])
def test_bad_shard_spec_is_an_input_error(text):
    with pytest.raises(InputError, match="shard"):
        Shard.parse(text)


def test_missing_input_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="input directory not found"):
        list(scan(tmp_path / "nope").todo())


def test_done_files_are_counted_not_yielded_and_the_walk_completes(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    first = scan(tmp_path)
    assert [e.relpath for e in first.todo()] == ["a.jpg", "b.jpg", "c.jpg"] and first.complete
    keys_seen = []

    def done(keys):
        keys_seen.append(keys)
        return np.array([True, False, True])

    second = scan(tmp_path, done=done)
    assert [e.relpath for e in second.todo()] == ["b.jpg"]
    assert (second.found, second.skipped, second.complete) == (3, 2, True)
    assert len(keys_seen[0]) == 3 and keys_seen[0].dtype == np.uint64
