"""keras-tuner over the fine-tuning recipe: head trials on cached features, expensive trials charged
to the budget, the best settings trained into a bundle with its trials table and plot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from classify_job.bundle import read_spec
from classify_job.errors import InputError
from classify_job.train.augment import AugmentConfig
from classify_job.train.config import TrainConfig
from classify_job.train.tune import TuneConfig, scaled, trial_config, tune

SIZE = (32, 32)


@pytest.fixture(autouse=True)
def _use_cache(lite0_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSIFY_JOB_CACHE", str(lite0_weights))


def base_config(data: Path, out: Path) -> TrainConfig:
    augment = AugmentConfig(rotation=0.0, zoom=0.0)  # no resampling: compiles in a second
    return TrainConfig(data, out, arch="efficientnet_lite0", epochs=2, batch_size=8, image_size=SIZE,
                       val_split=0.25, test_split=0.2, augment=augment, seed=1,
                       arch_options={"fine_tune_epochs": 1})  # fmt: skip


def test_trials_run_within_the_budget_and_the_best_settings_make_the_bundle(tiny_tree, tmp_path):
    data = tiny_tree(per_class=12)
    result = tune(TuneConfig(base_config(data, tmp_path / "tuned"), trials=5, budget_minutes=10))
    table = pd.read_csv(tmp_path / "tuned" / "trials.csv")
    assert len(table) == len(result.trials) == 5 and set(table.status) == {"ok"}
    assert {"head", "features", "fine-tune"} >= set(table.kind) and table.seconds.notna().all()
    assert result.best["val_loss"] == table.val_loss.min()
    spec = read_spec(tmp_path / "tuned")
    tuning = spec.extra["tuning"]
    assert tuning["trials_run"] == 5 and tuning["best"]["trial"] == str(result.best["trial"])
    options = spec.extra["training"]["arch_options"]
    assert options["head_width"] == result.best["head_width"]
    assert options["fine_tune_blocks"] == result.best["fine_tune_blocks"]
    assert spec.extra["training"]["learning_rate"] == pytest.approx(result.best["learning_rate"])
    with Image.open(tmp_path / "tuned" / "trials.png") as plot:
        assert plot.size[0] > 400
    assert result.search_s < 10 * 60


def test_a_spent_budget_stops_the_search_and_expensive_trials_are_not_started(tiny_tree, tmp_path):
    data = tiny_tree(per_class=12)
    result = tune(TuneConfig(base_config(data, tmp_path / "m"), trials=30, budget_minutes=0.5))
    statuses = [t["status"] for t in result.trials]
    assert len(result.trials) < 30 and "ok" in statuses
    started = [t for t in result.trials if t["status"] == "ok"]
    assert max(t["started_at_s"] for t in started) < 30  # no trial starts after the budget is spent
    skipped = [t for t in result.trials if t["status"] == "over budget"]
    assert all(t["estimated_s"] > 0 for t in skipped)


def test_settings_and_limits_are_checked(tmp_path):
    base = base_config(tmp_path, tmp_path / "m")
    with pytest.raises(InputError, match="trials must be >= 1"):
        TuneConfig(base, trials=0)
    with pytest.raises(InputError, match="efficientnet_lite0"):
        TuneConfig(TrainConfig(tmp_path, tmp_path / "m", arch="cnn"))
    job = tmp_path / "job.toml"
    job.write_text("[train]\n[tune]\ntrials = 7\nbudget_minutes = 2.5\n")
    assert TuneConfig.resolve(job, base, trials=None, budget_minutes=None).trials == 7
    assert TuneConfig.resolve(job, base, trials=3, budget_minutes=None).trials == 3
    job.write_text("[tune]\ntrails = 7\n")
    with pytest.raises(InputError, match="unknown keys"):
        TuneConfig.resolve(job, base)
    values = {"learning_rate": 0.003, "dropout": 0.3, "head_width": 128, "augmented_views": 2,
              "fine_tune_blocks": 1, "augment_strength": 1.5}  # fmt: skip
    config = trial_config(base, values)
    assert config.arch_options["head_width"] == 128 and config.learning_rate == 0.003
    assert config.augment.translate == pytest.approx(scaled(base.augment, 1.5).translate)
    assert config.augment.translate == pytest.approx(base.augment.translate * 1.5)


def test_the_command_line_names_what_is_wrong(tiny_tree, tmp_path):
    from typer.testing import CliRunner

    from classify_job.cli import app

    data = tiny_tree(per_class=2)
    result = CliRunner().invoke(app, ["tune", str(data)])
    assert result.exit_code == 2 and "--out" in result.output
    result = CliRunner().invoke(app, ["tune", str(data), "--out", str(tmp_path / "m"), "--trials", "0"])
    assert result.exit_code == 2 and "trials must be >= 1" in result.output
