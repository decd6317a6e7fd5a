"""``promote`` end to end with real tiny Keras models: the registry, its history and ``current``
link, the holdout checks, the shadow comparison, and classify following ``models/current``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import COLORS, write_image
from typer.testing import CliRunner

from classify_job.cli import app
from classify_job.loop.gate import PromoteConfig
from classify_job.loop.registry import promote, read_registry
from classify_job.predictions import list_parts, read_part_metadata
from classify_job.train.config import AugmentConfig, TrainConfig
from classify_job.train.dataset import index_dataset
from classify_job.train.pipeline import train

NAMES = list(COLORS)  # red, green, blue
# The degraded model learns from folders that each hold the next colour's images, so it calls an
# image of colour NAMES[k] by NAMES[k - 1]: the flips it would cause are these.
SWAPPED_FLIPS = {(NAMES[k], NAMES[k - 1]) for k in range(3)}


def colour_tree(root: Path, per_class: int, prefix: str, shift: int = 0) -> Path:
    for k, name in enumerate(NAMES):
        colour = NAMES[(k + shift) % 3]
        for i in range(per_class):
            write_image(root / name / f"{prefix}_{colour}_{i}.png", COLORS[colour], size=(16, 16))
    return root


def tiny_train(data: Path, out: Path) -> Path:
    config = TrainConfig(
        data, out, epochs=4, batch_size=8, image_size=(16, 16), val_split=0.2, test_split=0.2,
        learning_rate=3e-3, augment=AugmentConfig("none", 0, 0, 0, 0, 0),
    )  # fmt: skip
    return train(config).bundle_dir


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    base = tmp_path_factory.mktemp("loop")
    return SimpleNamespace(
        data=colour_tree(base / "data", 12, "t"),
        holdout=colour_tree(base / "holdout", 30, "h"),
        tree=colour_tree(base / "tree", 4, "c"),
        base=base,
    )


@pytest.fixture(scope="module")
def good(world) -> Path:
    return tiny_train(world.data, world.base / "good")


@pytest.fixture(scope="module")
def degraded(world) -> Path:
    return tiny_train(colour_tree(world.base / "swapped", 12, "s", shift=1), world.base / "degraded")


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def gate(candidate, registry, holdout, *flags):
    return cli("promote", candidate, "--registry", registry, "--holdout", holdout, "--resamples", 500, *flags)


def history(registry: Path) -> list[dict]:
    return json.loads((registry / "registry.json").read_text())["history"]


def test_empty_registry_promotes_and_the_holdout_is_checked_and_frozen(world, good, tmp_path):
    registry = tmp_path / "models"
    small = shutil.copytree(world.holdout, tmp_path / "small")
    (small / "blue" / "h_blue_0.png").unlink()
    outcome = gate(good, registry, small)
    assert outcome.exit_code == 7, outcome.output
    assert "at least 30 images per class" in outcome.output and "'blue': 29" in outcome.output
    assert not (registry / "current").exists() and history(registry)[-1]["event"] == "refused"

    outcome = gate(good, registry, world.holdout)
    assert outcome.exit_code == 0, outcome.output
    reg = read_registry(registry)
    copy = (registry / "current").resolve()
    assert copy.parent == (registry / "bundles").resolve() and (copy / "model.keras").is_file()
    assert reg.current["model_id"] == json.loads((good / "bundle.json").read_text())["model_id"]
    promoted = reg.history[-1]
    assert promoted["event"] == "promoted" and promoted["bootstrap"] is None and promoted["previous"] is None
    assert promoted["figures"]["candidate"]["accuracy"] >= 0.9 and promoted["holdout"]["images"] == 90
    assert reg.holdout["fingerprint"] == promoted["holdout"]["fingerprint"]
    record = json.loads((good / "bundle.json").read_text())["extra"]["training_hashes"]
    sizes = index_dataset(world.data, 0.2, 0.2).split_sizes()
    assert record["images"] == sizes["train"] + sizes["val"] == len(np.load(copy / record["file"]))

    other = shutil.copytree(world.holdout, tmp_path / "other")
    write_image(other / "red" / "extra.png", COLORS["red"], size=(16, 16))
    outcome = gate(good, registry, other)
    assert outcome.exit_code == 7 and "--accept-new-holdout" in outcome.output
    assert (registry / "current").resolve() == copy

    train_image = index_dataset(world.data, 0.2, 0.2).splits["train"][0].relpath
    shutil.copy(world.data / train_image, other / train_image.split("/")[0] / "leaked.png")
    outcome = gate(good, registry, other, "--accept-new-holdout")
    assert outcome.exit_code == 7 and "also in the candidate's training data" in outcome.output

    (other / train_image.split("/")[0] / "leaked.png").unlink()
    outcome = gate(good, registry, other, "--accept-new-holdout")  # the same model again: not worse
    assert outcome.exit_code == 0, outcome.output
    reg = read_registry(registry)
    assert reg.holdout["images"] == 91 and reg.history[-1]["bootstrap"]["accuracy_lower"] >= -0.01
    assert [e["event"] for e in reg.history] == ["refused", "promoted", "refused", "refused", "promoted"]


def test_a_degraded_candidate_is_refused_against_a_good_current_model(world, good, degraded, tmp_path):
    registry = tmp_path / "models"
    promote(PromoteConfig(good, registry, world.holdout, resamples=500))
    link = os.readlink(registry / "current")
    outcome = gate(degraded, registry, world.holdout)
    assert outcome.exit_code == 7, outcome.output
    assert "promotion refused" in outcome.output and "95% lower bound" in outcome.output
    assert os.readlink(registry / "current") == link
    reg = read_registry(registry)
    refused = reg.history[-1]
    assert refused["event"] == "refused" and reg.current["bundle"] == f"bundles/{Path(link).name}"
    assert refused["bootstrap"]["accuracy_lower"] < -0.5 and refused["bootstrap"]["macro_f1_lower"] < -0.5
    assert refused["figures"]["current"]["accuracy"] > refused["figures"]["candidate"]["accuracy"]
    assert len(refused["reasons"]) == 2 and refused["margins"] == {"accuracy": 0.01, "macro_f1": 0.01}
    assert [p.name for p in (registry / "bundles").iterdir()] == [Path(link).name]  # nothing copied


def test_a_better_candidate_is_promoted_and_classify_follows_current(world, good, degraded, tmp_path):
    registry = tmp_path / "models"
    promote(PromoteConfig(degraded, registry, world.holdout, resamples=500))
    candidate = shutil.copytree(good, tmp_path / "candidate")
    outcome = gate(candidate, registry, world.holdout)
    assert outcome.exit_code == 0, outcome.output
    assert "promoted" in outcome.output and "ECE" in outcome.output
    reg = read_registry(registry)
    assert [e["event"] for e in reg.history] == ["promoted", "promoted"]
    assert reg.history[-1]["bootstrap"]["accuracy_lower"] > 0.5
    assert reg.history[-1]["previous"] == reg.history[0]["model_id"]
    shutil.rmtree(candidate)  # next week's training may overwrite it: the registry keeps its copy

    resolved = (registry / "current").resolve()
    out = tmp_path / "out"
    outcome = cli("classify", world.tree, "--model", registry / "current", "--out", out)
    assert outcome.exit_code == 0, outcome.output
    facts = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert facts["model_path"] == str(resolved) and facts["model_id"] == reg.current["model_id"]
    assert facts["model_requested"] == str((registry / "current").absolute())
    part = read_part_metadata(list_parts(out)[0])
    assert part["model_path"] == str(resolved) and part["model_requested"] == facts["model_requested"]


def test_shadow_counts_the_labels_a_candidate_would_flip(world, good, degraded, tmp_path):
    registry, out = tmp_path / "models", tmp_path / "out"
    promote(PromoteConfig(good, registry, world.holdout, resamples=500))
    assert cli("classify", world.tree, "--model", registry / "current", "--out", out).exit_code == 0
    outcome = gate(degraded, registry, world.holdout, "--shadow", out, "--shadow-limit", 9)
    assert outcome.exit_code == 7, outcome.output
    assert "Shadow run: 9 of 9" in outcome.output  # the table of flips per class pair
    shadow = history(registry)[-1]["shadow"]
    assert shadow["sampled"] == 9 and shadow["compared"] == 9 and shadow["flipped"] == 9
    assert shadow["share"] == 1.0 and shadow["baseline"].startswith("the current model")
    assert {(f["from"], f["to"]) for f in shadow["flips"]} <= SWAPPED_FLIPS
    assert sum(f["count"] for f in shadow["flips"]) == 9

    same = gate(good, registry, world.holdout, "--shadow", out)
    assert same.exit_code == 0, same.output
    assert (
        history(registry)[-1]["shadow"]["compared"] == 12 and history(registry)[-1]["shadow"]["flips"] == []
    )
