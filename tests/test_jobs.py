"""The scheduled forms of the job: the cron wrapper in cron's bare environment, and the Airflow
DAG loaded and run by Airflow itself (installed in its own environment by `make install-airflow`)."""

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from helpers import COLORS, write_image

from classify_job.classify.config import ClassifyConfig
from classify_job.loop.gate import PromoteConfig
from classify_job.report.tagging import TagJob
from classify_job.train.architectures import configure
from classify_job.train.config import TrainConfig
from classify_job.train.evaluate import EvaluateJob

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_PY = ROOT / ".venv-airflow" / "bin" / "python"
AIRFLOW = ROOT / ".venv-airflow" / "bin" / "airflow"
CLASSIFY_JOB = ROOT / ".venv" / "bin" / "classify-job"
DAG_FILE = ROOT / "jobs" / "airflow" / "classify_catalog_dag.py"
WEEKLY_DAG = ROOT / "jobs" / "airflow" / "weekly_retrain_dag.py"
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
    weekly = ROOT / "jobs" / "weekly-retrain.toml"
    retrain = configure(TrainConfig.resolve(weekly))
    assert retrain.arch == "efficientnet_lite0" and retrain.image_size == (224, 224)
    promote = PromoteConfig.resolve(weekly)
    assert EvaluateJob.resolve(weekly).bundle == promote.bundle == retrain.out_dir
    assert ClassifyConfig.resolve(weekly).model == promote.registry / "current"
    assert TagJob.resolve(weekly).out == ClassifyConfig.resolve(weekly).out
    scratch = configure(TrainConfig.resolve(ROOT / "jobs" / "fashion-mnist-cnn.toml"))
    assert (scratch.arch, scratch.image_size, scratch.lr_schedule) == ("cnn", (28, 28), "cosine")
    crontab = (ROOT / "jobs" / "cron" / "crontab").read_text()
    assert "run-job.sh classify jobs/nightly-catalog.toml" in crontab
    assert "weekly-loop.sh jobs/weekly-retrain.toml" in crontab


def loop_job(tmp_path: Path, holdout: Path) -> Path:
    """A tiny weekly job: a CNN on colour images, the gate on a 30-per-class holdout, a catalog."""
    data, tree = tmp_path / "labelled", tmp_path / "catalog-tree"
    for name, color in COLORS.items():
        for i in range(12):
            write_image(data / name / f"{name}_{i}.png", color)
            write_image(tree / name / f"c{i}_{name}.png", color)
        for i in range(30):
            write_image(holdout / name / f"{holdout.name}_{name}_{i}.png", color)  # names seed the pixels
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("sku\n" + "\n".join(f"c{i}_{n}" for n in COLORS for i in range(12)) + "\n")
    job, work = tmp_path / "weekly.toml", tmp_path / "work"  # absolute: run-job.sh starts in the checkout
    job.write_text(
        f'[train]\ndata_dir = "{data}"\nout_dir = "{work}/candidate"\narch = "cnn"\nepochs = 3\n'
        "image_size = [16, 16]\nbatch_size = 8\nval_split = 0.25\ntest_split = 0.2\noverwrite = true\n"
        f'[evaluate]\nbundle = "{work}/candidate"\ndata = "{holdout}"\nsplit = "all"\n'
        f'[promote]\nbundle = "{work}/candidate"\nregistry = "{work}/models"\nholdout = "{holdout}"\n'
        f'[classify]\ninput_dir = "{tree}"\nmodel = "{work}/models/current"\nout = "{work}/out"\n'
        f'[tag]\nout = "{work}/out"\ncatalog = "{catalog}"\nkey_column = "sku"\n'
        "key_from = '(?P<key>c\\d+_[a-z]+)'\n"
    )
    return job


@pytest.mark.slow
def test_the_weekly_loop_runs_its_steps_in_order_and_stops_at_a_refused_promotion(tmp_path):
    job, work = loop_job(tmp_path, tmp_path / "holdout"), tmp_path / "work"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CLASSIFY_JOB_LOG_DIR": str(tmp_path / "logs")}
    loop = ROOT / "jobs" / "cron" / "weekly-loop.sh"
    proc = subprocess.run([loop, job], env=env, cwd="/", capture_output=True, text=True)
    assert proc.returncode == 0, (tmp_path / "logs" / "weekly.jsonl").read_text()[-3000:]
    current = (work / "models" / "current").resolve()
    tagged = pd.read_csv(work / "out" / "catalog.tagged.csv")
    assert len(tagged) == 36 and tagged.label.notna().all()
    assert json.loads(max((work / "out" / "runs").glob("*.json")).read_text())["model_path"] == str(current)
    loop_job(tmp_path, tmp_path / "other-holdout")  # a different holdout: the gate refuses it
    tagged_before = (work / "out" / "catalog.tagged.csv").stat().st_mtime_ns
    proc = subprocess.run([loop, job], env=env, cwd="/", capture_output=True, text=True)
    assert proc.returncode == 7
    assert (work / "models" / "current").resolve() == current
    assert (work / "out" / "catalog.tagged.csv").stat().st_mtime_ns == tagged_before  # tag never ran
    history = json.loads((work / "models" / "registry.json").read_text())["history"]
    assert [h["event"] for h in history] == ["promoted", "refused"]


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
def test_airflow_loads_the_weekly_loop_as_five_steps_in_order(tmp_path):
    env = airflow_env(tmp_path)
    (tmp_path / "airflow" / "dags" / WEEKLY_DAG.name).write_text(WEEKLY_DAG.read_text())
    script = (
        "import json; from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag({str(tmp_path / 'airflow' / 'dags')!r})\n"
        "dag = bag.dags['weekly_retrain']\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()},\n"
        "  'tasks': {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},\n"
        "  'retries': {t.task_id: t.retries for t in dag.tasks}}))\n"
    )
    proc = subprocess.run([AIRFLOW_PY, "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    steps = ["train", "evaluate", "promote", "classify", "tag"]
    assert result["tasks"] == {step: steps[i + 1 : i + 2] for i, step in enumerate(steps)}
    assert result["retries"]["promote"] == 0  # a refusal is a verdict, not a glitch


@pytest.mark.slow
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


@pytest.mark.slow
@needs_airflow
def test_airflow_runs_the_weekly_loop_in_order_and_a_refused_promotion_fails_the_run(tmp_path):
    job, work = loop_job(tmp_path, tmp_path / "holdout"), tmp_path / "work"
    first = [CLASSIFY_JOB, "train", "--config", job]
    subprocess.run(first, check=True, capture_output=True)
    subprocess.run([CLASSIFY_JOB, "promote", "--config", job], check=True, capture_output=True)
    current = (work / "models" / "current").resolve()
    loop_job(tmp_path, tmp_path / "other-holdout")  # the gate will refuse a different holdout
    env = airflow_env(tmp_path, CLASSIFY_JOB_BIN=str(CLASSIFY_JOB), RETRAIN_JOB_FILE=str(job),
                      RETRAIN_WORKDIR=str(tmp_path))  # fmt: skip
    (tmp_path / "airflow" / "dags" / WEEKLY_DAG.name).write_text(WEEKLY_DAG.read_text())
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", "weekly_retrain"], env=env, capture_output=True, text=True
    )
    log = proc.stdout + proc.stderr
    assert "state=failed" in log or proc.returncode != 0, log[-3000:]
    assert (work / "models" / "current").resolve() == current
    assert not (work / "out").exists()  # classify and tag never ran
    history = json.loads((work / "models" / "registry.json").read_text())["history"]
    assert [h["event"] for h in history] == ["promoted", "refused"]
