from pathlib import Path

import pytest

from classify_job.classify.scan import Shard, scan_tree
from classify_job.errors import InputError
from classify_job.walk import DEFAULT_EXTENSIONS


def relpaths(root: Path, shard: Shard) -> list[str]:
    return [e.relpath for e in scan_tree(root, DEFAULT_EXTENSIONS, False, shard)]


def test_shards_partition_the_tree_exactly_once(tmp_path):
    for i in range(200):
        path = tmp_path / f"d{i % 7}" / f"img{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    everything = relpaths(tmp_path, Shard())
    shards = [relpaths(tmp_path, Shard(k, 4)) for k in range(4)]
    assert sorted(r for shard in shards for r in shard) == sorted(everything)
    assert all(30 < len(s) < 70 for s in shards)  # hashing spreads files evenly enough


def test_shard_assignment_is_fixed_by_the_relpath():
    # Existing shard outputs depend on these: the hash must never change.
    assert [Shard(k, 4).contains("d3/img17.jpg") for k in range(4)] == [True, False, False, False]
    assert [Shard(k, 3).contains("caf\u00e9/\u00e9t\u00e9.png") for k in range(3)] == [False, True, False]


@pytest.mark.parametrize("text", ["3", "4/4", "-1/2", "a/b", "1/0"])
def test_bad_shard_spec_is_an_input_error(text):
    with pytest.raises(InputError, match="shard"):
        Shard.parse(text)


def test_missing_input_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="input directory not found"):
        list(scan_tree(tmp_path / "nope", DEFAULT_EXTENSIONS, False, Shard()))
