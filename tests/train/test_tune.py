"""keras-tuner over the fine-tuning recipe: head trials on cached features, expensive trials charged
to the budget, the best settings trained into a bundle with its trials table and plot."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from PIL import Image

from classify_job.bundle import read_spec
from classify_job.errors import InputError
from classify_job.train import tune as tune_module
from classify_job.train.config import AugmentConfig, TrainConfig, TuneConfig
from classify_job.train.tune import scaled, trial_config, tune

SIZE = (32, 32)


@pytest.fixture(autouse=True)
def _use_cache(lite0_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSIFY_JOB_CACHE", str(lite0_weights))


def base_config(data: Path, out: Path) -> TrainConfig:
    augment = AugmentConfig(rotation=0.0, zoom=0.0)  # no resampling: compiles in a second
    return TrainConfig(data, out, arch="efficientnet_lite0", epochs=2, batch_size=8, image_size=SIZE,
                       val_split=0.25, test_split=0.2, augment=augment, seed=1,
                       arch_options={"fine_tune_epochs": 1})  # fmt: skip


# What each kind of trial costs on the search's clock. The clock is tune's own (``time.perf_counter``
# in tune.py) replaced by one that moves only when a trial fits, so what the budget lets run is the
# same on any machine and the test asserts on what tune records, never on how long it took.
TRIAL_COST_S = {"head": 4.0, "features": 8.0, "fine-tune": 16.0}


@pytest.fixture
def search_clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(tune_module, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    fit = tune_module.TrialRunner._fit

    def charged_fit(runner, values):
        kind = tune_module.trial_kind(values, runner.views)
        history = fit(runner, values)
        clock.now += TRIAL_COST_S[kind]
        return history

    monkeypatch.setattr(tune_module.TrialRunner, "_fit", charged_fit)
    return clock


@pytest.mark.slow
def test_trials_run_within_the_budget_and_the_best_settings_make_the_bundle(
    tiny_tree, tmp_path, search_clock
):
    data = tiny_tree(per_class=12)
    result = tune(TuneConfig(base_config(data, tmp_path / "tuned"), trials=5, budget_minutes=10))
    table = pd.read_csv(tmp_path / "tuned" / "trials.csv")
    assert len(table) == len(result.trials) == 5 and set(table.status) == {"ok"}
    assert {"head", "features", "fine-tune"} >= set(table.kind)
    assert table.seconds.tolist() == [TRIAL_COST_S[kind] for kind in table.kind]
    assert result.best["val_loss"] == table.val_loss.min()
    spec = read_spec(tmp_path / "tuned")
    tuning = spec.extra["tuning"]
    assert tuning["trials_run"] == 5 and tuning["over_budget"] == 0 and tuning["budget_minutes"] == 10
    assert tuning["best"]["trial"] == str(result.best["trial"])
    assert tuning["search_s"] == pytest.approx(table.seconds.sum())  # the search's clock, not the wall's
    options = spec.extra["training"]["arch_options"]
    assert options["head_width"] == result.best["head_width"]
    assert options["fine_tune_blocks"] == result.best["fine_tune_blocks"]
    assert spec.extra["training"]["learning_rate"] == pytest.approx(result.best["learning_rate"])
    with Image.open(tmp_path / "tuned" / "trials.png") as plot:
        assert plot.size[0] > 400


@pytest.mark.slow
def test_a_spent_budget_stops_the_search_and_expensive_trials_are_not_started(
    tiny_tree, tmp_path, search_clock
):
    data = tiny_tree(per_class=12)
    budget_s = 30.0
    result = tune(TuneConfig(base_config(data, tmp_path / "m"), trials=30, budget_minutes=budget_s / 60))
    started = [t for t in result.trials if t["status"] == "ok"]
    skipped = [t for t in result.trials if t["status"] == "over budget"]
    assert len(started) + len(skipped) == len(result.trials) < 30  # the budget, not --trials, ended it
    assert started and skipped  # with this seed the tuner proposes trials that no longer fit
    spent = sum(TRIAL_COST_S[t["kind"]] for t in started)
    assert spent >= budget_s - TRIAL_COST_S["head"]  # it stopped once not even a head trial fits
    assert max(t["started_at_s"] for t in started) < budget_s  # none starts after the budget is spent
    for trial in started:  # a trial starts only when its estimate fits in what is left
        assert trial["started_at_s"] + trial["estimated_s"] <= budget_s
    for trial in skipped:  # and one that would not fit is recorded, never started
        assert trial["started_at_s"] + trial["estimated_s"] > budget_s and pd.isna(trial.get("seconds"))
    tuning = read_spec(tmp_path / "m").extra["tuning"]
    assert (tuning["trials_asked"], tuning["trials_run"], tuning["over_budget"]) == (
        30,
        len(started),
        len(skipped),
    )


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
