"""A rerun with a calibrated bundle reads no Parquet beyond the index load's footer check, one small
read a part: which calibration decided a part comes from that footer, not from a second read."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import colour_folder

from classify_job.bundle import read_spec
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.decisions.fitting import RuleChoice
from classify_job.predictions import list_parts
from classify_job.train.recalibrate import recalibrate_bundle

READERS = ("read_metadata", "read_schema", "read_table", "ParquetFile")


@pytest.fixture(scope="module")
def calibrated(color_bundle, tmp_path_factory) -> tuple[Path, Path]:
    """The colour bundle calibrated on 70 labelled images per class, and that labelled folder."""
    tmp = tmp_path_factory.mktemp("calibrated")
    data = colour_folder(tmp / "data", 70)
    recalibrate_bundle(color_bundle, data, tmp / "bundle", RuleChoice(0.95))
    return tmp / "bundle", data


@pytest.fixture
def parquet_reads(monkeypatch) -> Counter:
    """Counts each call of pyarrow.parquet's readers, by reader and file name."""
    reads: Counter = Counter()

    def counted(name, reader):
        def read(source, *args, **kwargs):
            reads[name, Path(getattr(source, "name", source)).name] += 1
            return reader(source, *args, **kwargs)

        return read

    for name in READERS:
        monkeypatch.setattr(pq, name, counted(name, getattr(pq, name)))
    return reads


def only_footer_checks(out: Path) -> Counter:
    return Counter({("read_metadata", part.name): 1 for part in list_parts(out)})


def test_a_rerun_with_a_calibrated_bundle_reads_each_footer_once_and_nothing_else(
    calibrated, tmp_path, parquet_reads
):
    bundle, _ = calibrated
    assert read_spec(bundle).calibration["calibration_id"]
    config = ClassifyConfig(
        colour_folder(tmp_path / "tree", 4), bundle, tmp_path / "out", batch_size=4, rows_per_part=4
    )
    run_classify(config)
    assert len(list_parts(config.out)) == 3
    parquet_reads.clear()
    again = run_classify(config)
    assert again.progress.classified == 0 and again.record["redecided"] == 0
    assert parquet_reads == only_footer_checks(config.out)


def test_a_new_calibration_redecides_once_and_the_next_rerun_reads_only_footers(
    calibrated, tmp_path, parquet_reads
):
    bundle, data = calibrated
    config = ClassifyConfig(
        colour_folder(tmp_path / "tree", 4), bundle, tmp_path / "out", batch_size=4, rows_per_part=4
    )
    run_classify(config)
    stricter = recalibrate_bundle(bundle, data, tmp_path / "stricter", RuleChoice(0.999))
    config = dataclasses.replace(config, model=tmp_path / "stricter")
    parquet_reads.clear()
    result = run_classify(config)
    assert result.progress.classified == 0 and result.record["redecided"] == 12
    rows = pd.read_parquet(config.out / "predictions")
    assert (rows.calibration_id == stricter.calibration["calibration_id"]).all()
    assert (rows.decision == "review").all()  # 0.999 needs thousands of correct predictions a class
    for part in list_parts(config.out):  # each part: its footer checked, its rows read to re-decide
        assert parquet_reads["read_metadata", part.name] == 1 and parquet_reads["read_table", part.name] == 1
    parquet_reads.clear()
    again = run_classify(config)  # the rewritten footers say the parts are decided: nothing to redo
    assert again.record["redecided"] == 0 and parquet_reads == only_footer_checks(config.out)
