"""XLA's CPU kernel flags: added before JAX starts only for a jaxlib that knows them, a user's own
XLA_FLAGS or CLASSIFY_JOB_CONV_KERNELS wins, and what was used is recorded. Every case runs on a
plain dict standing in for the environment, so no XLA ever starts with a flag it might not know."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from classify_job import runtime
from classify_job.runtime import (
    EIGEN_CONVOLUTIONS,
    KERNELS_ENV,
    use_xla_kernels,
    xla_settings,
)

KNOWN = sorted(runtime.JAXLIB_WITH_FLAG)[0]


@pytest.fixture
def jaxlib(monkeypatch: pytest.MonkeyPatch):
    """Pretend the installed jaxlib is the version given."""

    def pretend(installed: str | None) -> None:
        monkeypatch.setattr(runtime, "jaxlib_version", lambda: installed)

    return pretend


def test_a_jaxlib_known_to_have_the_flag_gets_it_and_it_is_recorded_as_ours(jaxlib):
    jaxlib(KNOWN)
    env: dict[str, str] = {}
    settings = use_xla_kernels(env)
    assert env["XLA_FLAGS"] == EIGEN_CONVOLUTIONS
    assert settings == {
        "flags": EIGEN_CONVOLUTIONS,
        "jaxlib": KNOWN,
        "user_set": False,
        "conv_kernels": "eigen",
        "switch": "auto",
    }


@pytest.mark.parametrize("installed", ["0.4.30", "0.10.1", "99.0.0", None])
def test_a_jaxlib_not_known_to_have_the_flag_runs_with_xla_defaults(jaxlib, installed):
    jaxlib(installed)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    settings = use_xla_kernels(env)
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    assert settings["conv_kernels"] == "xla-default" and settings["jaxlib"] == installed


def test_other_user_flags_are_kept_and_the_flag_is_added_once(jaxlib):
    jaxlib(KNOWN)
    env = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
    use_xla_kernels(env)
    use_xla_kernels(env)  # a second import path, or a child process inheriting the environment
    assert env["XLA_FLAGS"] == f"--xla_cpu_enable_fast_math=false {EIGEN_CONVOLUTIONS}"
    assert xla_settings(env)["user_set"] is False


def test_a_user_setting_the_flag_in_xla_flags_wins(jaxlib):
    jaxlib(KNOWN)
    mine = "--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution"
    env = {"XLA_FLAGS": mine}
    settings = use_xla_kernels(env)
    assert env["XLA_FLAGS"] == mine
    assert settings["user_set"] is True and settings["conv_kernels"] == "user"


def test_the_switch_turns_the_flag_off(jaxlib):
    jaxlib(KNOWN)
    env = {KERNELS_ENV: "xla-default"}
    settings = use_xla_kernels(env)
    assert "XLA_FLAGS" not in env
    assert settings["conv_kernels"] == "xla-default" and settings["switch"] == "xla-default"


def test_an_unknown_switch_value_warns_and_keeps_the_default(jaxlib):
    jaxlib(KNOWN)
    env = {KERNELS_ENV: "fastest"}
    with pytest.warns(UserWarning, match="Received: 'fastest'"):
        use_xla_kernels(env)
    assert env["XLA_FLAGS"] == EIGEN_CONVOLUTIONS


def test_importing_the_package_sets_the_flags_before_jax_starts():
    """A fresh interpreter: ``import classify_job`` alone chooses the kernels; JAX then runs with them."""
    code = (
        "import json, os, classify_job\n"
        "from classify_job.runtime import xla_settings\n"
        "import jax.numpy as jnp\n"
        "jnp.ones(1).block_until_ready()\n"
        "print(json.dumps([os.environ.get('XLA_FLAGS', ''), xla_settings()]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", KERNELS_ENV)}
    env.pop("CLASSIFY_JOB_XLA_FLAGS_ADDED", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    flags, settings = json.loads(done.stdout.strip().splitlines()[-1])
    expected = EIGEN_CONVOLUTIONS if runtime.jaxlib_version() in runtime.JAXLIB_WITH_FLAG else ""
    assert flags == expected == settings["flags"]


def test_a_keras_classify_run_records_the_xla_settings_it_ran_with(tiny_tree, color_bundle, tmp_path):
    from classify_job.classify.config import ClassifyConfig
    from classify_job.classify.pipeline import run_classify
    from classify_job.runrecords import read_runs

    out = tmp_path / "out"
    result = run_classify(
        ClassifyConfig(tiny_tree(per_class=2), color_bundle, out, batch_size=4, runtime="keras")
    )
    assert result.record["runtime"] == "keras"
    assert result.record["xla"] == xla_settings()
    assert result.record["xla"]["flags"] == os.environ.get("XLA_FLAGS", "")
    assert read_runs(out)[-1]["xla"] == xla_settings()
