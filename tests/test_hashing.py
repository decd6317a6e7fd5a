"""The hashes are part of the on-disk contract: these values must never change."""

import hashlib

import numpy as np

from classify_job import hashing


def test_each_hash_keeps_its_published_value(tmp_path):
    assert hashing.path_hash("a/b.jpg") == int.from_bytes(
        hashlib.blake2b(b"a/b.jpg", digest_size=8).digest(), "little"
    )
    assert hashing.shard_of("d3/img17.jpg", 4) == 0
    keys = hashing.resume_keys(
        hashing.path_hashes(["a.jpg", "a.jpg", "b.jpg"]),
        np.array([3, 4, 3]),
        np.array([1_700_000_000_000_000] * 3),
        np.full(3, hashing.model_hash("cnn-1"), np.uint64),
    )
    assert keys.dtype == np.uint64 and len(set(keys.tolist())) == 3  # size and path both count
    assert hashing.split_position("red/red_0.png") == (
        int.from_bytes(hashlib.sha256(b"red/red_0.png").digest()[:8], "big") / 2**64
    )
    (tmp_path / "f").write_bytes(b"abc")
    assert hashing.content_hash(tmp_path / "f") == hashing.content_hash_bytes(b"abc")
    assert hashing.content_hash_bytes(b"abc").startswith("ba7816bf")


def test_vectorised_path_hashes_equal_the_scalar_ones():
    names = ["a.jpg", "caf\u00e9/x.png", ""]
    assert hashing.path_hashes(names).tolist() == [hashing.path_hash(n) for n in names]


def test_dataset_fingerprint_ignores_order():
    files = [("a.jpg", 3), ("b.jpg", 4)]
    assert hashing.dataset_fingerprint(files) == hashing.dataset_fingerprint(files[::-1])
    assert hashing.dataset_fingerprint(files) != hashing.dataset_fingerprint([("a.jpg", 3)])
