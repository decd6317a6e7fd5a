"""A part and its index are committed whole or not at all: a full disk (a real small tmpfs, and an
injected ENOSPC) fails the run with exit 4, what it committed reads, and a rerun once there is
space gives every file exactly once. A read-only OUT is exit 4 for merge too."""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from classify_job.classify.config import ClassifyConfig
from classify_job.classify.index import INDEX_DIR
from classify_job.classify.pipeline import run_classify
from classify_job.classify.scan import Shard
from classify_job.cli import app
from classify_job.errors import OutputError
from classify_job.predictions import TMP_DIR, list_parts

FILES = 36  # 12 per class


@pytest.fixture
def tree(tiny_tree):
    return tiny_tree(per_class=FILES // 3)


@pytest.fixture
def config(tree, color_bundle, tmp_path):
    return ClassifyConfig(tree, color_bundle, tmp_path / "out", batch_size=4, rows_per_part=4)


def relpaths(tree: Path) -> set[str]:
    return {p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()}


def assert_committed_rows_read(out: Path) -> pd.DataFrame:
    """What a failed run left reads with pandas, once per relpath; predictions/ holds parts only."""
    names = {p.name for p in (out / "predictions").iterdir()}
    assert names == {p.name for p in list_parts(out)}
    frame = pd.read_parquet(out / "predictions") if names else pd.DataFrame({"relpath": []})
    assert frame.relpath.is_unique
    return frame


def assert_every_file_once(out: Path, tree: Path) -> None:
    frame = pd.read_parquet(out / "predictions")
    assert frame.relpath.is_unique and set(frame.relpath) == relpaths(tree)
    assert not any((out / TMP_DIR).iterdir())


def fail_after(monkeypatch, owner, name: str, calls: int) -> None:
    """``owner.name`` raises ENOSPC from its ``calls + 1``-th call on, as a full disk would."""
    real, count = getattr(owner, name), [0]

    def failing(*args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


@pytest.mark.parametrize(
    ("owner", "name", "calls"),
    [(pq.ParquetWriter, "write_table", 3), (os, "fsync", 5), (os, "replace", 2)],
    ids=["row-group-write", "fsync", "rename"],
)
def test_injected_enospc_fails_with_exit_4_keeps_what_was_committed_and_rerun_completes(
    config, tree, monkeypatch, owner, name, calls
):
    with monkeypatch.context() as patch:
        fail_after(patch, owner, name, calls)
        result = CliRunner().invoke(
            app, ["classify", str(tree), "--model", str(config.model), "--out", str(config.out),
                  "--batch-size", "4", "--rows-per-part", "4"],
        )  # fmt: skip
    assert result.exit_code == 4, result.output
    assert "No space left on device" in " ".join(result.output.split())  # the console wraps lines
    kept = assert_committed_rows_read(config.out)
    assert len(kept) < FILES
    rerun = run_classify(config)
    assert rerun.progress.skipped == len(kept) and rerun.progress.classified == FILES - len(kept)
    assert_every_file_once(config.out, tree)
    assert rerun.summary["files"] == FILES


def test_enospc_while_indexing_leaves_a_part_that_the_next_run_indexes(config, tree, monkeypatch):
    """The part is the commit; its index is derived, so a part whose index write failed is
    indexed from its rows by the next run, not classified again."""
    import numpy as np

    with monkeypatch.context() as patch:
        fail_after(patch, np, "save", 2)
        with pytest.raises(OutputError, match="No space left"):
            run_classify(config)
    kept = assert_committed_rows_read(config.out)
    assert len(kept) == 12  # three parts of four rows; the third lacks its index
    assert len(list((config.out / INDEX_DIR).glob("*.npy"))) == 2
    rerun = run_classify(config)
    assert rerun.progress.skipped == 12 and rerun.progress.classified == FILES - 12
    assert_every_file_once(config.out, tree)


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at tmp_path/disk (needs root and mount(8): skipped otherwise)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (root and mount(8) needed): {mounted.stderr.decode().strip()}"
        )
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_a_really_full_disk_fails_with_exit_4_and_a_rerun_after_freeing_space_completes(
    tmpfs, tree, color_bundle
):
    """A classify process on a tmpfs with room for a few parts; then the filler file is deleted."""
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * (free_bytes(tmpfs) - 96 * 1024))  # room for a few 9 kB parts and indexes
    out = tmpfs / "out"
    command = [sys.executable, "-m", "classify_job", "classify", str(tree), "--model", str(color_bundle),
               "--out", str(out), "--batch-size", "4", "--rows-per-part", "4"]  # fmt: skip
    failed = subprocess.run(command, capture_output=True, text=True)
    assert failed.returncode == 4, failed.stderr
    stderr = " ".join(failed.stderr.split())
    assert "No space left on device" in stderr and "internal error" not in stderr
    kept = assert_committed_rows_read(out)
    assert 0 < len(kept) < FILES
    filler.unlink()
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert_every_file_once(out, tree)


def test_merge_into_a_read_only_output_is_exit_4(config, tree, tmp_path):
    for k in range(2):
        run_classify(dataclasses.replace(config, shard=Shard(k, 2), out=tmp_path / f"s{k}"))
    target = tmp_path / "merged"
    target.mkdir()
    (target / ".lock").touch()
    read_only = _make_read_only(target)
    try:
        result = CliRunner().invoke(
            app, ["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(target)]
        )
    finally:
        read_only()
    assert result.exit_code == 4, result.output
    assert "internal error" not in result.output


def _make_read_only(directory: Path):
    """Make ``directory`` unwritable even for root (a read-only bind mount); returns the undo."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return lambda: directory.chmod(0o755)
    bind = subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bind.stderr.decode().strip()}")
    subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
    return lambda: subprocess.run(["umount", "-l", str(directory)], check=False)


def test_merge_that_cannot_write_its_copies_is_exit_4_and_leaves_the_old_merge(
    config, tree, tmp_path, monkeypatch
):
    """A folder the lock file can be written in but nothing else (chmod 555 with an old .lock)."""
    import shutil

    for k in range(2):
        run_classify(dataclasses.replace(config, shard=Shard(k, 2), out=tmp_path / f"s{k}"))
    target = tmp_path / "merged"
    args = ["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(target)]
    assert CliRunner().invoke(app, args).exit_code == 0
    before = sorted(p.name for p in list_parts(target))

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(shutil, "copy2", denied)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 4, result.output
    assert "Permission denied" in " ".join(result.output.split())
    assert sorted(p.name for p in list_parts(target)) == before
    assert len(pd.read_parquet(target / "predictions")) == FILES
    assert not list(target.glob(".predictions.*"))


def test_what_a_kill_9_leaves_is_cleaned_or_reindexed_by_the_next_run(config, tree):
    """A kill can leave an open part in OUT/.tmp, a committed part whose index was not yet
    written, a temporary index file and the superseding marker: the next run deletes the first,
    indexes the second from its rows (no file redone), and every file has one row."""
    run_classify(config)
    (config.out / TMP_DIR / "part-20990101T000000000000Z-abcdef-00000.parquet").write_bytes(b"PAR1 half")
    part = list_parts(config.out)[-1]
    for path in (config.out / INDEX_DIR).glob(f"{part.stem}.*.npy"):
        path.unlink()
    (config.out / INDEX_DIR / f".{part.stem}.tmp-999.npy").write_bytes(b"\x93NUMPY half")
    (config.out / ".superseding").touch()
    result = run_classify(config)
    assert result.progress.classified == 0 and result.progress.skipped == FILES
    assert len(list((config.out / INDEX_DIR).iterdir())) == len(list_parts(config.out))
    assert not (config.out / ".superseding").exists()
    assert_every_file_once(config.out, tree)


@pytest.mark.parametrize("then", ["classify", "merge"])
def test_a_merge_killed_between_its_two_renames_is_undone_by_the_next_run(config, tree, tmp_path, then):
    """A kill after ``predictions`` became ``.predictions.old`` and before the merged folder took its
    place: the next classify or merge puts the old parts back; nothing is lost or doubled."""
    for k in range(2):
        run_classify(dataclasses.replace(config, shard=Shard(k, 2), out=tmp_path / f"s{k}"))
    target = tmp_path / "merged"
    args = ["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(target)]
    assert CliRunner().invoke(app, args).exit_code == 0
    os.replace(target / "predictions", target / ".predictions.old")  # where the kill struck
    if then == "merge":
        assert CliRunner().invoke(app, args).exit_code == 0
    else:
        rerun = run_classify(dataclasses.replace(config, out=target))
        assert rerun.record["skipped"] == FILES
    frame = pd.read_parquet(target / "predictions")
    assert frame.relpath.is_unique and set(frame.relpath) == relpaths(tree)
    assert not (target / ".predictions.old").exists()
