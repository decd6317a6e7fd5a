import dataclasses
import shutil

import pandas as pd
import pytest

from classify_job.classify.config import ClassifyConfig
from classify_job.classify.merge import merge_outputs
from classify_job.classify.pipeline import run_classify
from classify_job.classify.scan import Shard
from classify_job.errors import InputError


@pytest.fixture
def shard_outputs(tiny_tree, color_bundle, tmp_path):
    base = ClassifyConfig(input_dir=tiny_tree(per_class=6), model=color_bundle, out=tmp_path, batch_size=4)
    outs = []
    for k in range(3):
        out = tmp_path / f"shard{k}"
        run_classify(dataclasses.replace(base, out=out, shard=Shard(k, 3)))
        outs.append(out)
    return base, outs


def test_merge_combines_every_file_exactly_once(shard_outputs, tmp_path):
    _, outs = shard_outputs
    result = merge_outputs(outs, tmp_path / "merged")
    df = pd.read_parquet(tmp_path / "merged" / "predictions")
    assert len(df) == 18 and df.relpath.is_unique
    assert result.summary["files"] == 18 and result.summary["labels"] == {"blue": 6, "green": 6, "red": 6}
    merge_outputs(outs, tmp_path / "merged")  # idempotent: merging again replaces, never appends
    assert len(pd.read_parquet(tmp_path / "merged" / "predictions")) == 18


def test_missing_or_repeated_shards_are_reported(shard_outputs, tmp_path):
    _, outs = shard_outputs
    with pytest.raises(InputError, match="missing shard"):
        merge_outputs(outs[:2], tmp_path / "m")
    assert len(merge_outputs(outs[:2], tmp_path / "m", allow_missing_shards=True).shards) == 2
    shutil.copytree(outs[0], tmp_path / "copy-of-shard0")
    with pytest.raises(InputError, match="more than once"):
        merge_outputs([*outs, tmp_path / "copy-of-shard0"], tmp_path / "m2")


def test_overlapping_or_foreign_outputs_are_refused(shard_outputs, tmp_path, tiny_tree):
    base, outs = shard_outputs
    whole = tmp_path / "whole"
    run_classify(dataclasses.replace(base, out=whole))
    with pytest.raises(InputError, match="shard counts"):
        merge_outputs([*outs, whole], tmp_path / "m")
    other_tree = dataclasses.replace(
        base, input_dir=tiny_tree(per_class=1, root=tmp_path / "t2"), out=tmp_path / "o"
    )
    run_classify(other_tree)
    with pytest.raises(InputError, match="input directory"):
        merge_outputs([whole, other_tree.out], tmp_path / "m")
