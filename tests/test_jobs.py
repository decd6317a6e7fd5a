"""The scheduled forms of the job: the cron wrapper in cron's bare environment, and the Airflow
DAG loaded and run by Airflow itself (installed in its own environment by `make install-airflow`)."""

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from classify_job.classify.config import ClassifyConfig
from classify_job.train.architectures import configure
from classify_job.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_PY = ROOT / ".venv-airflow" / "bin" / "python"
AIRFLOW = ROOT / ".venv-airflow" / "bin" / "airflow"
CLASSIFY_JOB = ROOT / ".venv" / "bin" / "classify-job"
DAG_FILE = ROOT / "jobs" / "airflow" / "classify_catalog_dag.py"
needs_airflow = pytest.mark.skipif(
    not AIRFLOW.exists(), reason="Airflow env missing: run `make install-airflow`"
)


def rows(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(
        out / "predictions", columns=["relpath", "status", "label", "confidence", "model_id"]
    )
    return df.sort_values("relpath").reset_index(drop=True)


def local_reference(tree: Path, bundle: Path, tmp_path: Path) -> pd.DataFrame:
    out = tmp_path / "reference"
    subprocess.run(
        [CLASSIFY_JOB, "classify", tree, "--model", bundle, "--out", out], check=True, capture_output=True
    )
    return rows(out)


def test_shipped_job_files_are_valid():
    config = ClassifyConfig.resolve(ROOT / "jobs" / "nightly-catalog.toml")
    assert config.max_error_rate == 0.05
    retrain = configure(TrainConfig.resolve(ROOT / "jobs" / "weekly-retrain.toml"))
    assert retrain.arch == "efficientnet_lite0" and retrain.image_size == (224, 224)
    crontab = (ROOT / "jobs" / "cron" / "crontab").read_text()
    assert "run-job.sh classify jobs/nightly-catalog.toml" in crontab
    assert "run-job.sh train jobs/weekly-retrain.toml" in crontab


def test_cron_wrapper_runs_in_crons_bare_environment(tiny_tree, color_bundle, tmp_path):
    tree = tiny_tree()
    job = tmp_path / "nightly.toml"
    job.write_text(
        f'[classify]\ninput_dir = "{tree}"\nmodel = "{color_bundle}"\nout = "{tmp_path / "out"}"\n'
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CLASSIFY_JOB_LOG_DIR": str(tmp_path / "logs")}
    wrapper = ROOT / "jobs" / "cron" / "run-job.sh"
    proc = subprocess.run([wrapper, "classify", job], env=env, cwd="/", capture_output=True, text=True)
    assert proc.returncode == 0, (tmp_path / "logs" / "nightly.jsonl").read_text()
    events = [json.loads(line) for line in (tmp_path / "logs" / "nightly.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "run_done" and e["classified"] == 12 for e in events)
    pd.testing.assert_frame_equal(rows(tmp_path / "out"), local_reference(tree, color_bundle, tmp_path))


def airflow_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True, exist_ok=True)
    (home / "dags" / DAG_FILE.name).write_text(DAG_FILE.read_text())
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        **settings,
    }


@needs_airflow
def test_airflow_loads_the_dag_with_mapped_shards_then_merge(tmp_path):
    script = (
        "import json; from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag({str(tmp_path / 'airflow' / 'dags')!r})\n"
        "dag = bag.dags.get('classify_catalog')\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()},\n"
        "  'tasks': {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks} if dag else None,\n"
        "  'retries': dag.get_task('classify_shard').retries if dag else None}))\n"
    )
    env = airflow_env(tmp_path)
    proc = subprocess.run([AIRFLOW_PY, "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["tasks"] == {
        "shard_commands": ["classify_shard"],
        "classify_shard": ["merge_and_report"],
        "merge_and_report": [],
    }
    assert result["retries"] == 3


@needs_airflow
def test_airflow_dag_run_classifies_the_tree_like_a_local_run(tiny_tree, color_bundle, tmp_path):
    tree, out_root = tiny_tree(per_class=5), tmp_path / "af-out"
    env = airflow_env(
        tmp_path, CLASSIFY_JOB_BIN=str(CLASSIFY_JOB), CLASSIFY_INPUT_DIR=str(tree),
        CLASSIFY_MODEL=str(color_bundle), CLASSIFY_OUT_ROOT=str(out_root), CLASSIFY_SHARDS="3",
    )  # fmt: skip
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", "classify_catalog"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "state=success" in proc.stdout + proc.stderr
    assert sorted(p.name for p in (out_root / "shards").iterdir()) == ["0-of-3", "1-of-3", "2-of-3"]
    pd.testing.assert_frame_equal(rows(out_root / "merged"), local_reference(tree, color_bundle, tmp_path))
