"""``OUT/predictions`` is a dataset every common reader takes whole: pandas, DuckDB, Polars and
pyarrow datasets see every row once and the newest columns, after a bundle with other labels and
after an upgrade from an OUT written by earlier code. And what a run writes beside the rows comes
back when it is missing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pytest
from test_compat import copy_v1

from classify_job.classify.config import ClassifyConfig
from classify_job.classify.index import INDEX_DIR
from classify_job.classify.pipeline import run_classify
from classify_job.predictions import PREDICTIONS_DIR, list_parts


def read_everywhere(out: Path) -> dict[str, tuple[list[str], list[str]]]:
    """(relpaths, column names) as each reader sees ``OUT/predictions``."""
    folder, glob = out / PREDICTIONS_DIR, str(out / PREDICTIONS_DIR / "*.parquet")
    frames = {
        "pandas": pd.read_parquet(folder),
        "duckdb": duckdb.sql(f"SELECT * FROM read_parquet('{glob}')").df(),
        "polars-scan": pl.scan_parquet(glob).collect().to_pandas(),
        "polars-dir": pl.read_parquet(folder).to_pandas(),
        "pyarrow-dataset": ds.dataset(folder).to_table().to_pandas(),
    }
    return {name: (list(frame.relpath), list(frame.columns)) for name, frame in frames.items()}


def assert_all_readers(out: Path, relpaths: set[str], columns: set[str], absent: set[str] = frozenset()):
    for reader, (seen, names) in read_everywhere(out).items():
        assert len(seen) == len(relpaths) and set(seen) == relpaths, reader
        assert columns <= set(names), (reader, columns - set(names))
        assert not absent & set(names), (reader, absent & set(names))


@pytest.fixture
def french_bundle(color_bundle, tmp_path) -> Path:
    """The colour model, sharper, under other labels: a new model id and new prob_<label> columns."""
    import keras

    from classify_job.bundle import load_bundle, save_bundle

    bundle = load_bundle(color_bundle)
    model = keras.models.clone_model(bundle.model)
    model.set_weights([w * 2 for w in bundle.model.get_weights()])
    spec = dataclasses.replace(bundle.spec, labels=("rouge", "vert", "bleu"))
    save_bundle(tmp_path / "french", model, spec)
    return tmp_path / "french"


def test_every_reader_sees_each_row_once_with_the_new_columns_after_a_bundle_of_other_labels(
    tiny_tree, color_bundle, french_bundle, tmp_path
):
    tree, out = tiny_tree(per_class=4), tmp_path / "out"
    run_classify(ClassifyConfig(tree, color_bundle, out, batch_size=4, rows_per_part=4))
    first_parts = set(list_parts(out))
    result = run_classify(ClassifyConfig(tree, french_bundle, out, batch_size=4, rows_per_part=4))
    assert result.progress.classified == 12
    assert not first_parts & set(list_parts(out))  # emptied by superseding, then deleted
    assert {p.name for p in (out / PREDICTIONS_DIR).iterdir()} == {p.name for p in list_parts(out)}
    relpaths = {p.relative_to(tree).as_posix() for p in tree.rglob("*.*")}
    new, old = {"prob_rouge", "prob_vert", "prob_bleu"}, {"prob_red", "prob_green", "prob_blue"}
    assert_all_readers(out, relpaths, new, absent=old)
    assert len(list((out / INDEX_DIR).glob("*.npy"))) == len(list_parts(out))


def test_every_reader_takes_an_output_written_by_earlier_code_once_classify_ran_on_it(tmp_path):
    """The v1 fixture, plus what the previous release left inside predictions/: its index
    folder and a half-written part. Both go; the index is rebuilt beside predictions/."""
    images, bundle, out = copy_v1(tmp_path)
    old_index = out / PREDICTIONS_DIR / ".index-v1"
    old_index.mkdir()
    (old_index / "part-x.1.2.npy").write_bytes(b"\x93NUMPY")
    (out / PREDICTIONS_DIR / ".part-x-00003.parquet.tmp").write_bytes(b"half")
    result = run_classify(ClassifyConfig(images, bundle, out))
    assert result.progress.classified == 0
    assert {p.name for p in (out / PREDICTIONS_DIR).iterdir()} == {p.name for p in list_parts(out)}
    relpaths = {p.relative_to(images).as_posix() for p in images.rglob("*.*")}
    assert_all_readers(out, relpaths, {"relpath_bytes", "decision", "unfamiliar_score"})
    assert len(list((out / INDEX_DIR).glob("*.npy"))) == len(list_parts(out))


@pytest.mark.parametrize("name", ["report.html", "summary.md", "summary.json"])
def test_a_no_op_rerun_rebuilds_what_is_missing_beside_the_rows(tiny_tree, color_bundle, tmp_path, name):
    config = ClassifyConfig(tiny_tree(per_class=2), color_bundle, tmp_path / "out")
    run_classify(config)
    (config.out / name).unlink()
    result = run_classify(config)
    assert result.progress.classified == 0
    assert (config.out / name).is_file() and (config.out / name).stat().st_size > 0


def test_fresh_starts_over_without_the_old_index(tiny_tree, color_bundle, tmp_path):
    config = ClassifyConfig(tiny_tree(per_class=2), color_bundle, tmp_path / "out")
    run_classify(config)
    stale = {p.name for p in (config.out / INDEX_DIR).iterdir()}
    result = run_classify(dataclasses.replace(config, fresh=True))
    assert result.progress.classified == 6
    assert not stale & {p.name for p in (config.out / INDEX_DIR).iterdir()}
