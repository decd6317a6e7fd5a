"""The persistent XLA cache: a second Keras run in a fresh process compiles nothing."""

import json
import os
import subprocess
import sys


def classify(tree, bundle, out, cache, **env) -> dict:
    command = [sys.executable, "-m", "classify_job", "classify", tree, "--model", bundle, "--out", out]
    environment = {**os.environ, "CLASSIFY_JOB_CACHE": str(cache), **env}
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    subprocess.run(command, env=environment, check=True, capture_output=True)
    (facts,) = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    return facts


def test_a_second_run_compiles_nothing(tiny_tree, color_bundle, tmp_path):
    tree, cache = tiny_tree(per_class=2), tmp_path / "cache"
    first = classify(tree, color_bundle, tmp_path / "a", cache)
    second = classify(tree, color_bundle, tmp_path / "b", cache)
    assert first["runtime"] == "keras" and first["xla_cache"]["misses"] > 0
    assert second["xla_cache"] == {"hits": first["xla_cache"]["misses"], "misses": 0}
    assert any((cache / "xla").iterdir())


def test_the_cache_can_be_turned_off(tiny_tree, color_bundle, tmp_path):
    tree, cache = tiny_tree(per_class=2), tmp_path / "cache"
    facts = classify(tree, color_bundle, tmp_path / "a", cache, CLASSIFY_JOB_XLA_CACHE="0")
    assert facts["xla_cache"]["hits"] == 0 and not (cache / "xla").exists()
