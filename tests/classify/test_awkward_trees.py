"""No file name, file kind or disappearance stops a run: every name the OS returns gets one row,
and a rerun over the same tree classifies nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import write_image

from classify_job.classify.config import ClassifyConfig
from classify_job.classify.merge import merge_outputs
from classify_job.classify.pipeline import run_classify
from classify_job.classify.scan import Shard
from classify_job.runrecords import read_runs

LATIN1 = b"caf\xe9.jpg"  # a name copied from an old Windows share: not UTF-8


def awkward_tree(root: Path) -> dict[str, Path]:
    """A tree holding every awkward case; returns the files by what they test."""
    root.mkdir()
    raw_root = os.fsencode(root)
    files = {
        "plain": write_image(root / "red" / "plain.png", (220, 30, 30)),
        "newline": write_image(root / "red" / "two\nlines.png", (220, 30, 30)),
        # A UTF-8 name spelled like the escape of the Latin-1 name beside it.
        "lookalike": write_image(root / "caf\\xe9.jpg", (220, 30, 30)),
    }
    write_image(root / "tmp.jpg", (30, 200, 40))
    os.rename(root / "tmp.jpg", os.fsdecode(raw_root + b"/" + LATIN1))
    files["latin1"] = Path(os.fsdecode(raw_root + b"/" + LATIN1))
    bad_dir = os.fsdecode(raw_root + b"/gr\xfcn")
    os.mkdir(bad_dir)
    write_image(Path(bad_dir) / "leaf.png", (30, 200, 40))
    files["in_bad_dir"] = Path(bad_dir) / "leaf.png"
    os.mkfifo(root / "fifo.jpg")
    files["fifo"] = root / "fifo.jpg"
    deep = root / "deep"
    while len(str(deep)) < 3850:
        deep = deep / ("d" * 200)
    deep.mkdir(parents=True)
    write_image(deep / "x.png", (30, 40, 220))
    name = "f" * 240 + ".png"
    fd = os.open(deep, os.O_RDONLY)
    os.rename("x.png", name, src_dir_fd=fd, dst_dir_fd=fd)
    os.close(fd)
    files["long"] = Path(f"{deep}/{name}")
    files["gone"] = write_image(root / "blue" / "gone.png", (30, 40, 220))
    return files


@pytest.fixture
def tree(tmp_path):
    return tmp_path / "tree", awkward_tree(tmp_path / "tree")


def config_for(root: Path, bundle: Path, out: Path, **options) -> ClassifyConfig:
    return ClassifyConfig(root, bundle, out, batch_size=4, **options)


def test_every_name_gets_exactly_one_row_and_a_rerun_classifies_nothing(tree, color_bundle, tmp_path):
    root, files = tree
    first = run_classify(config_for(root, color_bundle, tmp_path / "out"))
    rows = pd.read_parquet(tmp_path / "out" / "predictions")
    assert len(rows) == len(files) and rows.relpath.is_unique
    by_name = rows.set_index("relpath")
    latin1 = "\\x63\\x61\\x66\\xe9\\x2e\\x6a\\x70\\x67"  # every byte: the short form is taken
    assert by_name.loc[latin1, "relpath_bytes"] == LATIN1 and by_name.loc[latin1, "label"] == "green"
    assert (
        by_name.loc["caf\\xe9.jpg", "label"] == "red" and by_name.loc["caf\\xe9.jpg", "relpath_bytes"] is None
    )
    assert by_name.loc["gr\\xfcn/leaf.png", "relpath_bytes"] == b"gr\xfcn/leaf.png"
    assert by_name.loc["gr\\xfcn/leaf.png", "label"] == "green"
    assert by_name.loc["red/two\nlines.png", "label"] == "red"
    assert by_name.loc["fifo.jpg", "error"] == "not a regular file"
    long_row = rows[rows.relpath.str.endswith("f" * 240 + ".png")].iloc[0]
    assert long_row.status == "ok" and long_row.label == "blue"
    assert first.progress.classified == len(files)
    files["gone"].unlink()
    second = run_classify(config_for(root, color_bundle, tmp_path / "out"))
    assert second.progress.classified == 0 and second.progress.skipped == len(files) - 1
    assert second.record["missing"] == 1 and second.summary["missing"] == 1
    again = pd.read_parquet(tmp_path / "out" / "predictions")
    assert set(again.run_id) == {first.run_id}  # the FIFO's error row was not rewritten either


def test_prune_removes_the_rows_of_deleted_files(tree, color_bundle, tmp_path):
    root, files = tree
    run_classify(config_for(root, color_bundle, tmp_path / "out"))
    files["gone"].unlink()
    pruned = run_classify(config_for(root, color_bundle, tmp_path / "out", prune=True))
    assert pruned.record["pruned"] == 1 and pruned.record["missing"] == 0
    rows = pd.read_parquet(tmp_path / "out" / "predictions")
    assert "blue/gone.png" not in set(rows.relpath) and len(rows) == len(files) - 1
    assert pruned.summary["files"] == len(files) - 1


def test_a_file_that_became_a_directory_is_missing_then_pruned(tree, color_bundle, tmp_path):
    root, files = tree
    run_classify(config_for(root, color_bundle, tmp_path / "out"))
    files["gone"].unlink()
    files["gone"].mkdir()  # a folder named like the file: the file is gone all the same
    kept = run_classify(config_for(root, color_bundle, tmp_path / "out"))
    assert kept.record["missing"] == 1 and kept.record["pruned"] == 0
    pruned = run_classify(config_for(root, color_bundle, tmp_path / "out", prune=True))
    assert pruned.record["pruned"] == 1 and pruned.record["missing"] == 0
    assert "blue/gone.png" not in set(pd.read_parquet(tmp_path / "out" / "predictions").relpath)


def test_shards_and_merge_cover_awkward_names_exactly_once(tree, color_bundle, tmp_path):
    root, files = tree
    outs = [tmp_path / f"shard{k}" for k in range(3)]
    for k, out in enumerate(outs):
        run_classify(config_for(root, color_bundle, out, shard=Shard(k, 3)))
    merge_outputs(outs, tmp_path / "merged")
    rows = pd.read_parquet(tmp_path / "merged" / "predictions")
    assert len(rows) == len(files) and rows.relpath.is_unique


def test_skipped_extensions_and_unlisted_directories_reach_the_summary(tmp_path, color_bundle):
    root = tmp_path / "tree"
    write_image(root / "a.png", (220, 30, 30))
    for i in range(3):
        (root / "phone").mkdir(parents=True, exist_ok=True)
        (root / "phone" / f"IMG_{i}.heic").write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    result = run_classify(config_for(root, color_bundle, tmp_path / "out", extensions=("png",)))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ignored_extensions"] == {".heic": 3, ".txt": 1} == result.record["ignored_extensions"]
    assert "3 .heic files ignored" in (tmp_path / "out" / "summary.md").read_text()
    (record,) = read_runs(tmp_path / "out")
    assert record["found"] == 1 and record["complete"] and record["classified"] == 1
    timings = record["timings"]  # start-up, then the loop from model load to the last row, within the run
    assert isinstance(timings["startup_s"], float) and 0 < timings["startup_s"] < record["elapsed_s"]
    assert 0 < timings["first_batch_s"] <= timings["loop_s"]
    assert timings["startup_s"] + timings["loop_s"] <= record["elapsed_s"] + 0.002  # each is rounded to 1 ms


NO_OP_RUN = """
import sys
from pathlib import Path
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
result = run_classify(ClassifyConfig(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
heavy = sorted(m for m in ("keras", "jax", "sklearn", "scipy", "pandas") if m in sys.modules)
print(result.progress.classified, result.progress.skipped, ",".join(heavy) or "-")
"""


def test_a_rerun_with_nothing_new_imports_no_keras_and_loads_no_model(tiny_tree, color_bundle, tmp_path):
    root = tiny_tree(per_class=2)
    run_classify(config_for(root, color_bundle, tmp_path / "out"))
    report = (tmp_path / "out" / "report.html").stat().st_mtime_ns
    args = [sys.executable, "-c", NO_OP_RUN, str(root), str(color_bundle), str(tmp_path / "out")]
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["0", "6", "-"], proc.stderr
    assert (tmp_path / "out" / "report.html").stat().st_mtime_ns == report  # not rebuilt


def test_output_of_an_awkward_tree_can_move_and_still_resume(tree, color_bundle, tmp_path):
    root, _ = tree
    run_classify(config_for(root, color_bundle, tmp_path / "out"))
    shutil.copytree(tmp_path / "out", tmp_path / "moved")
    result = run_classify(config_for(root, color_bundle, tmp_path / "moved"))
    assert result.progress.classified == 0
