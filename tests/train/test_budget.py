"""``train --budget-minutes``: the epochs sized to the time left after the first ones are timed,
the cosine schedule sized to them, a stop on time with the best epoch's weights, and the facts
recorded. The clock is a fake that moves only when an epoch starts, so what the budget allows is
the same on any machine."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from classify_job.cli import app
from classify_job.errors import InputError
from classify_job.nets.cnn import build_cnn
from classify_job.train.config import AugmentConfig, TrainConfig
from classify_job.train.dataset import LoadedSplit, TrainingData
from classify_job.train.fit import cosine_rate, fit_with_facts

EPOCH_S = 60.0  # what every epoch costs on the fake clock


class EpochClock(keras.callbacks.Callback):
    """A clock that advances ``EPOCH_S`` as each epoch begins; it also keeps each epoch's weights
    and, at the end of ``scramble_at`` (0-based), zeroes the weights, which a restore must undo."""

    def __init__(self, scramble_at: int | None = None, first_epochs_s: tuple[float, ...] = ()) -> None:
        super().__init__()
        self.now, self.scramble_at, self.weights = 0.0, scramble_at, []
        self.first_epochs_s = first_epochs_s  # slower first epochs (compilation), then EPOCH_S each

    def __call__(self) -> float:
        return self.now

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.now += self.first_epochs_s[epoch] if epoch < len(self.first_epochs_s) else EPOCH_S

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.weights.append([w.copy() for w in self.model.get_weights()])
        if epoch == self.scramble_at:
            self.model.set_weights([np.zeros_like(w) for w in self.model.get_weights()])


def tiny_data(n: int = 24) -> TrainingData:
    """Three classes of flat 16x16 colours, train and val (no files: fit needs only the arrays)."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    images = np.zeros((n, 16, 16, 3), np.uint8)
    images[np.arange(n), :, :, labels] = 200
    images = np.clip(images + rng.integers(0, 40, images.shape), 0, 255).astype(np.uint8)
    split = LoadedSplit(images, labels, [f"{i}.png" for i in range(n)])
    empty = LoadedSplit(images[:0], labels[:0], [])
    return TrainingData(SimpleNamespace(classes=("r", "g", "b")), split, split, empty)


def config(data: Path, **kwargs) -> TrainConfig:
    options = dict(
        epochs=10, batch_size=8, image_size=(16, 16), augment=AugmentConfig("none", 0, 0, 0, 0, 0),
        val_split=0.25, test_split=0.25, lr_schedule="cosine", warmup_epochs=1, patience=10,
        learning_rate=3e-3,
    )  # fmt: skip
    paths = {"data_dir": data, "out_dir": data / "out"}  # fitting alone writes nothing there
    return TrainConfig(**{**paths, **options, **kwargs})


def test_epochs_are_sized_to_the_budget_and_the_best_weights_are_kept(tmp_path):
    clock = EpochClock(scramble_at=2)  # the last epoch the budget allows ends with its weights zeroed
    net = build_cnn(3, (16, 16), 3, top_width=32)
    fitted = fit_with_facts(
        net, tiny_data(), config(tmp_path, budget_minutes=3.5), None, callbacks=[clock], clock=clock
    )
    budget = fitted.facts["budget"]
    assert budget["epochs_planned"] == 3 and budget["epochs_run"] == 3  # 3.5 minutes of 1-minute epochs
    assert budget["stopped_because"] == "budget: the next epoch would not fit"
    assert budget["timed_epochs_s"] == [EPOCH_S, EPOCH_S] and budget["max_epochs"] == 10
    best = int(np.argmin([row["val_loss"] for row in fitted.history]))
    for kept, at_best in zip(net.get_weights(), clock.weights[best], strict=False):
        np.testing.assert_array_equal(kept, at_best)
    assert any(np.any(w != 0) for w in net.get_weights())  # the zeroed weights were not what stayed


def test_the_cosine_rate_follows_the_planned_epochs(tmp_path):
    clock = EpochClock()
    fitted = fit_with_facts(
        build_cnn(3, (16, 16), 3, top_width=32), tiny_data(), config(tmp_path, budget_minutes=4.5), None,
        callbacks=[clock], clock=clock,
    )  # fmt: skip
    cfg = config(tmp_path)
    rates = [row["learning_rate"] for row in fitted.history]
    assert len(rates) == fitted.facts["budget"]["epochs_planned"] == 4
    np.testing.assert_allclose(rates, [cosine_rate(cfg, e, 4) for e in range(4)], rtol=1e-5)
    assert rates[0] == pytest.approx(1.5e-3) and rates[-1] < 0.1 * cfg.learning_rate


def test_the_plan_is_remade_as_the_epochs_settle_and_uses_the_whole_budget(tmp_path):
    """Epochs of 120 s (compiling), 90 s, then 60 s in a 40-minute budget: a plan made after the
    second alone would stop at 26 epochs and 27.5 minutes; re-planned, fitting ends at the budget."""
    clock = EpochClock(first_epochs_s=(120.0, 90.0))
    fitted = fit_with_facts(
        build_cnn(3, (16, 16), 3, top_width=32), tiny_data(),
        config(tmp_path, epochs=60, budget_minutes=40, patience=60),
        None, callbacks=[clock], clock=clock,
    )  # fmt: skip
    budget = fitted.facts["budget"]
    assert budget["epochs_planned"] == budget["epochs_run"] == 38  # 120 + 90 + 36 x 60 s = 2,370 s
    assert 2_340 <= budget["fit_s"] <= 2_400
    late = [row["learning_rate"] for row in fitted.history][-10:]  # the schedule of the final plan
    np.testing.assert_allclose(late, [cosine_rate(config(tmp_path), e, 38) for e in range(28, 38)], rtol=1e-5)


def test_a_budget_larger_than_the_epochs_runs_them_all(tmp_path):
    clock = EpochClock()
    fitted = fit_with_facts(
        build_cnn(3, (16, 16), 3, top_width=32), tiny_data(), config(tmp_path, epochs=3, budget_minutes=60),
        None, callbacks=[clock], clock=clock,
    )  # fmt: skip
    assert fitted.facts["budget"] | {"fit_s": None} == {
        "budget_minutes": 60,
        "max_epochs": 3,
        "epochs_planned": 3,
        "epochs_run": 3,
        "stopped_because": "all epochs run",
        "fit_s": None,
        "timed_epochs_s": [EPOCH_S, EPOCH_S],
    }


def test_a_spent_budget_stops_within_the_first_epoch(tmp_path):
    """The real clock and a budget smaller than compiling one step: fit stops after one batch."""
    fitted = fit_with_facts(
        build_cnn(3, (16, 16), 3, top_width=32), tiny_data(), config(tmp_path, budget_minutes=1e-6), None
    )
    assert fitted.facts["budget"]["epochs_run"] == 1
    assert fitted.facts["budget"]["stopped_because"] == "budget spent within an epoch"


def test_without_a_budget_there_are_no_budget_facts(tmp_path):
    net = build_cnn(3, (16, 16), 3, top_width=32)
    fitted = fit_with_facts(net, tiny_data(), config(tmp_path, epochs=1, warmup_epochs=0), None)
    assert fitted.facts == {} and len(fitted.history) == 1


def test_cosine_rate_warms_up_then_decays_to_near_zero(tmp_path):
    cfg = config(tmp_path, learning_rate=1.0, warmup_epochs=2)
    rates = [cosine_rate(cfg, e, 10) for e in range(10)]
    assert rates[:2] == [0.25, 0.75]
    assert all(a > b for a, b in itertools.pairwise(rates[2:]))
    assert rates[2] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5 / 8)))
    assert cosine_rate(cfg, 0, 1) == pytest.approx(0.5)  # one epoch planned: no room for a warm-up


@pytest.mark.parametrize("minutes", [0, -1])
def test_budget_minutes_must_be_positive(tmp_path, minutes):
    with pytest.raises(InputError, match=f"budget_minutes=.*{minutes}"):
        config(tmp_path, budget_minutes=minutes)


def test_budget_minutes_comes_from_the_train_table_of_a_job_file(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(f'[train]\ndata_dir = "{tmp_path}"\nout_dir = "{tmp_path / "m"}"\nbudget_minutes = 25\n')
    assert TrainConfig.resolve(job).budget_minutes == 25
    assert TrainConfig.resolve(job, budget_minutes=5.0).budget_minutes == 5.0  # the flag wins


def test_cli_rejects_a_negative_budget_with_exit_2(tiny_tree, tmp_path):
    result = CliRunner().invoke(
        app, ["train", str(tiny_tree()), "--out", str(tmp_path / "m"), "--budget-minutes", "-1"]
    )
    assert result.exit_code == 2, result.output
    assert "budget_minutes" in result.output


def test_the_bundle_records_the_budget_and_the_xla_settings(tiny_tree, tmp_path):
    """Through ``train``: a budget spent before the first batch ends leaves one epoch, recorded."""
    from classify_job.bundle import read_spec
    from classify_job.runtime import xla_settings
    from classify_job.train.pipeline import train

    cfg = config(tiny_tree(per_class=6), out_dir=tmp_path / "model", epochs=3, budget_minutes=1e-6)
    result = train(cfg)
    extra = read_spec(result.bundle_dir).extra
    assert extra["budget"]["epochs_run"] == 1 == len(result.history)
    assert extra["budget"]["stopped_because"] == "budget spent within an epoch"
    assert extra["xla"] == xla_settings() and extra["xla"]["jaxlib"] == extra["versions"]["jaxlib"]
