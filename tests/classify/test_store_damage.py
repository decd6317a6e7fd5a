"""Damage to committed files is found cheaply on start-up and costs nothing: an unreadable part is
quarantined and its files are classified again, a truncated or wrong index is rebuilt from its
part, the counts say so, and no relpath ever appears twice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from classify_job.classify.config import ClassifyConfig
from classify_job.classify.index import INDEX_DIR
from classify_job.classify.pipeline import run_classify
from classify_job.cli import app
from classify_job.predictions import QUARANTINE_DIR, list_parts

FILES = 24  # six parts of four rows


@pytest.fixture
def tree(tiny_tree):
    return tiny_tree(per_class=FILES // 3)


@pytest.fixture
def config(tree, color_bundle, tmp_path):
    return ClassifyConfig(tree, color_bundle, tmp_path / "out", batch_size=4, rows_per_part=4)


def index_file(out: Path, part: Path) -> Path:
    (path,) = (out / INDEX_DIR).glob(f"{part.stem}.*.npy")
    return path


def facts(out: Path, run_id: str) -> dict:
    return json.loads((out / "runs" / f"{run_id}.json").read_text())


def assert_every_file_once(out: Path, tree: Path) -> pd.DataFrame:
    frame = pd.read_parquet(out / "predictions")
    assert frame.relpath.is_unique
    assert set(frame.relpath) == {p.relative_to(tree).as_posix() for p in tree.rglob("*.*")}
    return frame


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_part_is_quarantined_and_its_files_classified_again(config, tree):
    run_classify(config)
    damaged = list_parts(config.out)[2]
    truncate(damaged)
    result = run_classify(config)
    assert result.progress.classified == 4 and result.progress.skipped == FILES - 4
    assert (config.out / QUARANTINE_DIR / damaged.name).is_file() and not damaged.exists()
    run = facts(config.out, result.run_id)
    assert run["quarantined"] == 1
    assert run["quarantined_parts"][0]["part"] == damaged.name and run["quarantined_parts"][0]["rows"] == 4
    summary = json.loads((config.out / "summary.json").read_text())
    assert summary["files"] == FILES and summary["quarantined"] == 1 and summary["quarantined_total"] == 1
    assert summary["last_run"]["quarantined"] == 1
    assert "unreadable part" in (config.out / "summary.md").read_text()
    assert_every_file_once(config.out, tree)
    again = run_classify(config)  # nothing more to do; the quarantined file stays for a person
    assert again.progress.classified == 0 and again.summary["quarantined"] == 0
    assert again.summary["quarantined_total"] == 1


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[:-8] + b"\0" * 8),  # footer length and magic gone
        lambda p: p.write_bytes(b"XXXX" + p.read_bytes()[4:]),  # leading magic
        lambda p: p.write_bytes(p.read_bytes()[:-200] + b"\0" * 192 + p.read_bytes()[-8:]),  # footer
        lambda p: p.write_bytes(b""),
    ],
    ids=["tail", "head-magic", "footer-bytes", "empty"],
)
def test_every_kind_of_unreadable_part_is_quarantined(config, tree, damage):
    run_classify(config)
    damaged = list_parts(config.out)[0]
    damage(damaged)
    result = run_classify(config)
    assert result.record["quarantined"] == 1 and result.progress.classified == 4
    assert_every_file_once(config.out, tree)


def test_a_part_damaged_inside_its_rows_is_quarantined_when_the_run_reads_them(config, tree):
    """The footer parses, so start-up keeps the part; the summary (rebuilt because a new file
    came) cannot read it: it is quarantined and the run goes again, redoing its files now."""
    run_classify(config)
    damaged = list_parts(config.out)[1]
    data = bytearray(damaged.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    data[4 : len(data) - footer - 8] = b"\xff" * (len(data) - footer - 12)
    damaged.write_bytes(bytes(data))
    shutil.copy(tree / "red" / "red_0.jpg", tree / "red" / "red_new.jpg")
    result = run_classify(config)
    assert (config.out / QUARANTINE_DIR / damaged.name).is_file()
    assert result.record["quarantined"] == 1 and result.summary["quarantined"] == 1
    assert result.summary["files"] == FILES + 1
    assert_every_file_once(config.out, tree)


def test_a_truncated_index_is_rebuilt_from_its_part(config, tree):
    run_classify(config)
    part = list_parts(config.out)[3]
    truncate(index_file(config.out, part))
    result = run_classify(config)
    assert result.progress.classified == 0 and result.record["quarantined"] == 0
    assert len(np.load(index_file(config.out, part))) == 4
    assert not (config.out / QUARANTINE_DIR).exists()
    assert_every_file_once(config.out, tree)


def test_an_index_with_the_right_length_but_wrong_rows_is_rebuilt(config, tree):
    """Another part's rows in this part's index file would make its files look undone and their
    new rows unsupersedable (duplicate relpaths); the checksum catches it."""
    run_classify(config)
    first, second = list_parts(config.out)[:2]
    index_file(config.out, first).write_bytes(index_file(config.out, second).read_bytes())
    result = run_classify(config)
    assert result.progress.classified == 0 and result.summary["files"] == FILES
    assert_every_file_once(config.out, tree)


def test_an_index_whose_rows_were_flipped_is_rebuilt(config, tree):
    run_classify(config)
    path = index_file(config.out, list_parts(config.out)[0])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last byte of the last resume key
    path.write_bytes(bytes(data))
    result = run_classify(config)
    assert result.progress.classified == 0
    assert_every_file_once(config.out, tree)


def test_an_empty_part_left_by_earlier_code_is_deleted(config, tree):
    run_classify(config)
    old = pa.schema([("relpath", pa.string()), ("prob_cat", pa.float32())])
    empty = config.out / "predictions" / "part-00000000T000000000000Z-000000-00000.parquet"
    pq.write_table(old.empty_table(), empty)
    result = run_classify(config)
    assert not empty.exists() and result.progress.classified == 0
    assert "prob_cat" not in pd.read_parquet(config.out / "predictions")


def test_report_on_a_damaged_output_says_to_rerun_classify_with_exit_2(config, tree):
    run_classify(config)
    truncate(list_parts(config.out)[0])
    result = CliRunner().invoke(app, ["report", str(config.out)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "unreadable" in message and "classify-job classify" in message and "quarantine" in message
    run_classify(config)
    assert CliRunner().invoke(app, ["report", str(config.out)]).exit_code == 0
