import dataclasses
import json
import os
import threading
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from classify_job.bundle import read_spec
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.lock import output_lock
from classify_job.classify.pipeline import run_classify
from classify_job.classify.scan import Shard
from classify_job.errors import ErrorRateExceeded, Interrupted, LockHeldError
from classify_job.predictions import list_parts

CONTRACT = ["path", "relpath", "status", "error", "label", "confidence", "bytes", "mtime", "width",
            "height", "model_id", "run_id", "classified_at"]  # fmt: skip


def read(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "predictions")


@pytest.fixture
def tree(tiny_tree, tmp_path):
    root = tiny_tree(per_class=5)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "empty.png").write_bytes(b"")
    (root / "readme.txt").write_text("not an image, filtered by extension")
    return root


@pytest.fixture
def config(tree, color_bundle, tmp_path):
    return ClassifyConfig(input_dir=tree, model=color_bundle, out=tmp_path / "out", batch_size=4)


def test_every_file_gets_one_row_with_the_contract_columns(config, tree):
    result = run_classify(config)
    df = read(config.out)
    assert set(CONTRACT) <= set(df.columns)
    assert {"prob_red", "prob_green", "prob_blue", "top_labels", "top_probs"} <= set(df.columns)
    assert sorted(df.relpath) == sorted(
        str(p.relative_to(tree)) for p in tree.rglob("*.*") if p.suffix != ".txt"
    )
    assert df.relpath.is_unique and len(df) == 17
    ok = df[df.status == "ok"]
    assert (ok.label == ok.relpath.str.split("/").str[0]).all()  # the colour model gets colours right
    assert ok[["prob_red", "prob_green", "prob_blue"]].sum(axis=1).round(4).eq(1).all()
    assert (ok.width == 24).all() and (ok.path.map(os.path.isabs)).all()
    errors = df[df.status == "error"].set_index("relpath").error
    assert errors["empty.png"] == "empty file" and "broken.jpg" in errors.index
    assert result.summary["files"] == 17 and result.summary["errors"] == 2


def test_summary_files_are_written_and_rebuilt_from_parquet_alone(config):
    result = run_classify(config)
    summary = json.loads((config.out / "summary.json").read_text())
    assert summary["labels"] == {"blue": 5, "green": 5, "red": 5}
    assert (summary["files"], summary["ok"], summary["errors"], summary["skipped"]) == (17, 15, 2, 0)
    assert summary["model_id"] == read_spec(config.model).model_id and summary["run_id"] == result.run_id
    assert summary["elapsed_s"] > 0 and summary["images_per_second"] > 0
    assert "| red | 5 |" in (config.out / "summary.md").read_text()


def test_rerun_on_unchanged_tree_does_no_inference(config):
    first = run_classify(config)
    second = run_classify(config)
    assert second.progress.classified == 0 and second.progress.skipped == 17
    assert len(read(config.out)) == 17
    assert second.summary["run_id"] == first.run_id  # the dataset still describes the run that wrote it


def test_resume_after_crash_redoes_only_missing_files(config):
    run_classify(dataclasses.replace(config, rows_per_part=4))
    parts = list_parts(config.out)
    parts[-1].unlink()  # as if the run died before committing its last part
    (config.out / "predictions" / ".part-x-00009.parquet.tmp").write_bytes(b"half written")
    result = run_classify(config)
    assert 0 < result.progress.classified <= 4
    df = read(config.out)
    assert len(df) == 17 and df.relpath.is_unique
    assert not list((config.out / "predictions").glob(".*.tmp"))


def test_changed_file_is_reclassified_and_supersedes_its_old_row(config, tree):
    run_classify(config)
    target = tree / "red" / "red_0.jpg"
    os.utime(target, ns=(0, 10**18))
    result = run_classify(config)
    assert result.progress.classified == 1 and result.superseded_rows_removed == 1
    df = read(config.out)
    assert len(df) == 17 and df.relpath.is_unique
    assert df.set_index("relpath").loc["red/red_0.jpg", "run_id"] == result.run_id


def test_new_model_reclassifies_everything_without_duplicates(config, tmp_path):
    import keras

    from classify_job.bundle import load_bundle, save_bundle

    bundle = load_bundle(config.model)
    model = keras.models.clone_model(bundle.model)
    model.set_weights([w * 2 for w in bundle.model.get_weights()])
    other = tmp_path / "other-model"
    save_bundle(other, model, bundle.spec)
    run_classify(config)
    result = run_classify(dataclasses.replace(config, model=other))
    assert result.progress.classified == 17
    df = read(config.out)
    assert len(df) == 17 and df.model_id.nunique() == 1 and df.model_id[0] != bundle.spec.model_id


def test_fresh_ignores_earlier_output(config):
    run_classify(config)
    result = run_classify(dataclasses.replace(config, fresh=True))
    assert result.progress.classified == 17 and len(read(config.out)) == 17


def test_second_run_on_a_locked_output_fails_fast(config):
    config.out.mkdir(parents=True)
    with output_lock(config.out), pytest.raises(LockHeldError, match="another run"):
        run_classify(config)


def test_error_rate_over_the_limit_raises_after_writing(config):
    with pytest.raises(ErrorRateExceeded, match="2 of 17"):
        run_classify(dataclasses.replace(config, max_error_rate=0.05))
    assert len(read(config.out)) == 17
    run_classify(dataclasses.replace(config, max_error_rate=0.2))


def test_stop_request_keeps_finished_rows_and_next_run_resumes(config):
    stop = threading.Event()
    batches = []

    def on_progress(progress):
        batches.append(progress.classified)
        stop.set()

    with pytest.raises(Interrupted, match="rerun to resume"):
        run_classify(config, on_progress, stop)
    kept = len(read(config.out))  # whole batches: those predicted before the stop was seen
    assert kept % 4 == 0 and 4 <= kept < 17
    result = run_classify(config)
    assert result.progress.skipped == kept and len(read(config.out)) == 17


def test_shards_cover_the_tree_once_and_parts_are_valid_parquet(config, tmp_path):
    frames = []
    for k in range(3):
        out = tmp_path / f"shard{k}"
        run_classify(dataclasses.replace(config, shard=Shard(k, 3), out=out))
        frames.append(read(out))
        for part in list_parts(out):
            assert pq.ParquetFile(part).metadata.num_rows > 0
    merged = pd.concat(frames)
    assert len(merged) == 17 and merged.relpath.is_unique


def test_output_inside_the_input_tree_is_not_classified(config, tree):
    inside = dataclasses.replace(config, out=tree / "results")
    run_classify(inside)
    run_classify(inside)
    assert len(read(inside.out)) == 17
