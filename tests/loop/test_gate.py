"""The promotion gate without models: the paired bootstrap and its verdict on synthetic predictions,
the holdout's fingerprint and checks, and the [promote] job-file table."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import COLORS, write_image

from classify_job.bundle import BundleSpec
from classify_job.decisions.calibration import calibration_figures
from classify_job.errors import DatasetError, InputError
from classify_job.hashing import content_prefixes
from classify_job.loop.gate import (
    Holdout,
    PromoteConfig,
    Scored,
    measure,
    paired_bootstrap,
    read_holdout,
    refusals,
    training_overlap,
)
from classify_job.train.artifacts import TRAINING_HASHES
from classify_job.train.dataset import LabelledFile
from classify_job.train.metrics import report_from_probs

LABELS = ("blue", "green", "red")


def predictions(y_true: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """``y_true`` with the images in ``wrong`` given the next class instead."""
    predicted = y_true.copy()
    predicted[wrong] = (predicted[wrong] + 1) % 4
    return predicted


@pytest.fixture
def truth() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 4, size=1000)


def test_a_clearly_worse_candidate_is_refused_on_both_figures(truth):
    current = predictions(truth, np.arange(0, 1000, 10))  # 90% right
    candidate = predictions(truth, np.arange(0, 1000, 5))  # 80% right: 100 more mistakes
    boot = paired_bootstrap(truth, candidate, current, 4, resamples=2000, seed=0)
    assert boot.accuracy_diff == pytest.approx(-0.1)
    assert boot.accuracy_lower < -0.1 + 0.02 and boot.accuracy_lower < -0.01
    reasons = refusals(boot, 0.01, 0.01)
    assert [r.split(":")[0] for r in reasons] == ["accuracy", "macro F1"]


def test_a_better_or_identical_candidate_passes(truth):
    current = predictions(truth, np.arange(0, 1000, 5))
    better = predictions(truth, np.arange(0, 1000, 10))
    boot = paired_bootstrap(truth, better, current, 4, resamples=2000, seed=0)
    assert boot.accuracy_lower > 0.05 and boot.macro_f1_lower > 0.05 and refusals(boot, 0.01, 0.01) == ()
    same = paired_bootstrap(truth, current, current, 4, resamples=500, seed=0)
    assert (same.accuracy_diff, same.accuracy_lower, same.macro_f1_lower) == (0.0, 0.0, 0.0)
    assert refusals(same, 0.0, 0.0) == ()


def test_pairing_lets_a_tiny_loss_on_shared_mistakes_pass_and_a_margin_of_zero_refuse_it(truth):
    """Both models miss the same 200 images; the candidate misses 4 more. Unpaired, 80% accuracy
    on 1000 images has a standard error of 1.3 points; paired, only the 4 differences vary."""
    current = predictions(truth, np.arange(0, 1000, 5))
    candidate = predictions(truth, np.r_[np.arange(0, 1000, 5), [1, 2, 3, 4]])
    boot = paired_bootstrap(truth, candidate, current, 4, resamples=2000, seed=3)
    assert boot.accuracy_diff == pytest.approx(-0.004)
    assert -0.01 <= boot.accuracy_lower < -0.004 and -0.01 <= boot.macro_f1_lower < 0
    assert refusals(boot, 0.01, 0.01) == ()
    assert [r.split(":")[0] for r in refusals(boot, 0.0, 0.0)] == ["accuracy", "macro F1"]


def test_bootstrap_is_seeded_and_its_macro_f1_is_the_metrics_one(truth):
    current = predictions(truth, np.arange(0, 1000, 3))
    candidate = predictions(truth, np.arange(1, 1000, 7))
    first = paired_bootstrap(truth, candidate, current, 4, resamples=300, seed=11)
    assert paired_bootstrap(truth, candidate, current, 4, resamples=300, seed=11) == first
    assert paired_bootstrap(truth, candidate, current, 4, resamples=300, seed=12) != first
    names = ("a", "b", "c", "d")
    f1 = [report_from_probs(names, truth, np.eye(4)[p], [""] * 1000).macro_f1 for p in (candidate, current)]
    assert first.macro_f1_diff == pytest.approx(f1[0] - f1[1], abs=1e-5)


def spec(**extra) -> BundleSpec:
    return BundleSpec(labels=LABELS, image_size=(16, 16), color_mode="rgb", architecture="cnn", extra=extra)


def write_holdout(root, per_class=3, prefix="h"):
    for name, color in COLORS.items():
        for i in range(per_class):
            write_image(root / name / f"{prefix}_{name}_{i}.png", color, size=(16, 16))
    return root


def test_holdout_fingerprint_follows_contents_and_classes_not_names(tmp_path):
    holdout = read_holdout(write_holdout(tmp_path / "a"), spec())
    assert holdout.per_class() == {"blue": 3, "green": 3, "red": 3} and len(set(holdout.digests)) == 9
    renamed = tmp_path / "b"
    shutil.copytree(tmp_path / "a", renamed)
    (renamed / "red" / "h_red_0.png").rename(renamed / "red" / "renamed.png")
    assert read_holdout(renamed, spec()).fingerprint() == holdout.fingerprint()
    (renamed / "red" / "renamed.png").rename(renamed / "green" / "renamed.png")  # now labelled green
    assert read_holdout(renamed, spec()).fingerprint() != holdout.fingerprint()
    (renamed / "green" / "renamed.png").unlink()
    assert read_holdout(renamed, spec()).fingerprint() != holdout.fingerprint()


def test_holdout_classes_must_be_the_bundles_labels(tmp_path):
    root = write_holdout(tmp_path / "h")
    shutil.rmtree(root / "blue")
    with pytest.raises(DatasetError, match=r"missing \['blue'\]"):
        read_holdout(root, spec())
    write_image(root / "blue" / "x.png", COLORS["blue"])
    write_image(root / "purple" / "x.png", COLORS["blue"])
    with pytest.raises(DatasetError, match=r"not labels \['purple'\]"):
        read_holdout(root, spec())
    with pytest.raises(InputError, match="holdout folder not found"):
        read_holdout(tmp_path / "nowhere", spec())


def test_overlap_with_training_data_from_the_record_or_the_training_folder(tmp_path):
    data = write_holdout(tmp_path / "data", per_class=12, prefix="t")
    holdout_dir = write_holdout(tmp_path / "holdout")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    holdout = read_holdout(holdout_dir, spec())
    assert "trained by an older version" in training_overlap(holdout, bundle, spec())
    old = spec(training={"data_dir": str(data), "val_split": 0.0, "test_split": 0.0})
    assert training_overlap(holdout, bundle, old) is None
    shutil.copy(data / "red" / "t_red_3.png", holdout_dir / "red" / "copied.png")
    holdout = read_holdout(holdout_dir, spec())
    assert "1 holdout images are also in the candidate's training data" in training_overlap(
        holdout, bundle, old
    )
    assert "red/copied.png" in training_overlap(holdout, bundle, old)
    np.save(bundle / TRAINING_HASHES, content_prefixes(holdout.digests[:2]))
    recorded = spec(training_hashes={"file": TRAINING_HASHES})
    assert "2 holdout images" in training_overlap(holdout, bundle, recorded)
    shutil.rmtree(data)
    assert f"training folder {data} is gone" in training_overlap(holdout, tmp_path / "elsewhere", old)


def test_measure_reports_precision_at_the_accept_thresholds_in_the_holdouts_label_order(tmp_path):
    """Six images; the model lists its labels in another order than the holdout. Accepted: image 0
    (blue, right), 1 (called red, wrong) and 4 (red, right); green has no threshold."""
    y_true = [0, 0, 1, 1, 2, 2]  # blue, blue, green, green, red, red
    order = ("red", "blue", "green")
    calls = [("blue", 0.95), ("red", 0.85), ("green", 0.99), ("blue", 0.7), ("red", 0.9), ("red", 0.6)]
    probs = np.full((6, 3), 0.0)
    for i, (label, confidence) in enumerate(calls):
        probs[i] = (1 - confidence) / 2
        probs[i, order.index(label)] = confidence
    decision = np.array(["accept", "accept", "review", "review", "accept", "review"], dtype=object)
    samples = tuple(LabelledFile(f"{i}.png", y, 0) for i, y in enumerate(y_true))
    holdout = Holdout(tmp_path, LABELS, samples, ("0" * 64,) * 6)
    thresholds = {"blue": {"threshold": 0.9}, "green": {"threshold": None}, "red": {"threshold": 0.8}}
    bundle = BundleSpec(LABELS, (16, 16), "rgb", "cnn", model_id="m", accept_thresholds=thresholds)
    scored = Scored(order, tuple(s.relpath for s in samples), probs, decision, ())
    figures = measure(bundle, holdout, scored)
    assert figures.accuracy == pytest.approx(4 / 6, abs=1e-5) and figures.model_id == "m"
    assert figures.accepted == {
        "blue": {"threshold": 0.9, "accepted": 1, "correct": 1, "precision": 1.0},
        "green": {"threshold": None, "accepted": 0, "correct": 0, "precision": None},
        "red": {"threshold": 0.8, "accepted": 2, "correct": 1, "precision": 0.5},
    }
    in_holdout_order = probs[:, [order.index(label) for label in LABELS]]
    assert figures.ece == calibration_figures(in_holdout_order, np.array(y_true))["ece"]
    assert figures.f1["green"] == pytest.approx(2 / 3, abs=1e-4)  # 1 of 2 found, 1 of 1 right
    assert measure(spec(), holdout, scored).accepted is None  # a bundle without thresholds


def test_promote_settings_from_a_job_file_flags_win(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(
        '[promote]\nbundle = "models/weekly"\nregistry = "models"\nholdout = "data/holdout"\n'
        "margin_accuracy = 0.02\nresamples = 500\nseed = 4\n"
    )
    config = PromoteConfig.resolve(job, seed=9, margin_macro_f1=None)
    assert (config.margin_accuracy, config.margin_macro_f1, config.resamples, config.seed) == (
        0.02,
        0.01,
        500,
        9,
    )
    assert config.registry.name == "models" and config.shadow is None and config.shadow_limit == 2000
    with pytest.raises(InputError, match=r"margin_accuracy=1\.5"):
        PromoteConfig.resolve(job, margin_accuracy=1.5)
    with pytest.raises(InputError, match="--holdout"):
        PromoteConfig.resolve(None, bundle="b", registry="r")
    job.write_text('[promote]\nbundle = "b"\nregistry = "r"\nholdout = "h"\nmargin = 0.1\n')
    with pytest.raises(InputError, match="unknown keys"):
        PromoteConfig.resolve(job)
