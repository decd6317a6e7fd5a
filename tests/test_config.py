"""One job-file reader and one merge: file first, flags win, unknown keys named, nested tables built."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from classify_job.classify.config import ClassifyConfig
from classify_job.classify.scan import Shard
from classify_job.config import check, resolve
from classify_job.errors import InputError
from classify_job.train.config import AugmentConfig, TrainConfig


@dataclass(frozen=True)
class Inner:
    depth: int = 1


@dataclass(frozen=True)
class Outer:
    name: str
    size: int = 3
    inner: Inner = field(default_factory=Inner)
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        check(self, {"size": (self.size > 0, "> 0")})


def job(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def test_file_first_flags_win_and_dicts_merge_key_by_key(tmp_path):
    path = job(tmp_path, '[s]\nname = "a"\nsize = 5\n[s.inner]\ndepth = 4\n[s.options]\nx = 1\ny = 2\n')
    built = resolve(Outer, path, "s", size=None, options={"y": 9})
    assert built == Outer("a", 5, Inner(4), {"x": 1, "y": 9})
    assert resolve(Outer, path, "s", size=7).size == 7


def test_unknown_keys_missing_settings_and_bad_values_are_named(tmp_path):
    with pytest.raises(InputError, match=r"\[s\]: unknown keys \['nmae'\]"):
        resolve(Outer, job(tmp_path, '[s]\nnmae = "a"\n'), "s")
    with pytest.raises(InputError, match=r"\[s\]\.inner: unknown keys \['deep'\]"):
        resolve(Outer, job(tmp_path, '[s]\nname = "a"\n[s.inner]\ndeep = 1\n'), "s")
    with pytest.raises(InputError, match="missing NAME"):
        resolve(Outer, None, "s", required={"name": "NAME"})
    with pytest.raises(InputError, match="size=0"):
        resolve(Outer, None, "s", name="a", size=0)
    with pytest.raises(InputError, match=r"has no \[s\] table"):
        resolve(Outer, job(tmp_path, "[other]\n"), "s")
    with pytest.raises(InputError, match="not found"):
        resolve(Outer, tmp_path / "nope.toml", "s")


def test_classify_settings_from_text_as_files_and_flags_give_them(tmp_path):
    path = job(
        tmp_path, '[classify]\ninput_dir = "in"\nmodel = "m"\nout = "o"\nextensions = ["JPG", "png"]\n'
    )
    config = ClassifyConfig.resolve(path, shard="1/4", batch_size=None)
    assert config.input_dir == Path("in") and config.shard == Shard(1, 4) and config.batch_size == 32
    assert config.extensions == (".jpg", ".png")
    assert ClassifyConfig.resolve(path, extensions="webp,.GIF").extensions == (".gif", ".webp")
    with pytest.raises(InputError, match="engine"):
        ClassifyConfig.resolve(path, engine="spark")


def test_train_settings_build_their_augmentation_table(tmp_path):
    path = job(tmp_path, '[train]\ndata_dir = "d"\nout_dir = "o"\n[train.augment]\nflip = "none"\n')
    config = TrainConfig.resolve(path, arch_options={"dropout": 0.5})
    assert config.augment == AugmentConfig(flip="none") and config.arch_options == {"dropout": 0.5}
    with pytest.raises(InputError, match="flip"):
        TrainConfig.resolve(path, augment={"flip": "sideways"})
