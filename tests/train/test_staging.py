"""A trained bundle appears whole or not at all: a train killed while it writes the bundle leaves
the old bundle or none (never one without calibration or exports), and the next train cleans up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from classify_job.bundle import SPEC_FILE, read_spec
from classify_job.cli import app
from classify_job.train.pipeline import train
from classify_job.train.staging import STAGING_PREFIX

from .test_run import tiny_config

KILLED_TRAIN = """
import os, sys
from pathlib import Path
import classify_job.train.pipeline as run
sys.path.insert(0, sys.argv[3])
from test_run import tiny_config

def killed(*args, **kwargs):  # the model and reports are staged; calibration and exports are not
    os._exit(9)

run._with_decision_rule = killed
run.train(tiny_config(Path(sys.argv[1]), Path(sys.argv[2]), overwrite=True))
"""


def killed_train(data: Path, out: Path) -> None:
    here = str(Path(__file__).parent)
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_TRAIN, str(data), str(out), here], capture_output=True
    )
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]


def test_a_killed_first_train_leaves_no_bundle_and_the_next_cleans_up(tiny_tree, tmp_path):
    data, out = tiny_tree(per_class=8), tmp_path / "model"
    killed_train(data, out)
    assert not (out / SPEC_FILE).exists() and list(out.glob(f"{STAGING_PREFIX}*"))
    refused = CliRunner().invoke(
        app, ["classify", str(data), "--model", str(out), "--out", str(tmp_path / "o")]
    )
    assert refused.exit_code == 3, refused.output
    train(tiny_config(data, out))
    assert not list(out.glob(f"{STAGING_PREFIX}*"))
    assert read_spec(out).calibration is not None


def test_a_train_killed_while_overwriting_keeps_the_old_bundle(tiny_tree, tmp_path):
    data, out = tiny_tree(per_class=8), tmp_path / "model"
    first = train(tiny_config(data, out)).spec
    killed_train(data, out)
    assert read_spec(out).to_json() == first.to_json()
    assert (out / "model.keras").is_file()
