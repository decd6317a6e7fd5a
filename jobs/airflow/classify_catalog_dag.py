"""Airflow 3 DAG: tag a catalog tree nightly with classify-job, one mapped task per shard.

    classify_shard[0..N-1]  (dynamic task mapping; `classify-job classify --shard K/N`)
            -> merge_and_report  (`classify-job merge` + `classify-job report`)

Retries are safe: each shard writes its own OUT and resumes where an earlier try stopped, and the
OUT lock turns an overlapping try into a clean failure (exit 5) that the next retry gets past.

Install: copy or symlink this file into $AIRFLOW_HOME/dags/. Settings come from DAG params
(override per run in the trigger form or with `airflow dags trigger --conf '{...}'`) whose
defaults are read from environment variables on the Airflow workers:
CLASSIFY_JOB_BIN (path to the classify-job script), CLASSIFY_INPUT_DIR, CLASSIFY_MODEL,
CLASSIFY_OUT_ROOT, CLASSIFY_SHARDS, CLASSIFY_SCHEDULE (cron expression, default 02:00 daily).
"""

from __future__ import annotations

import os
import shlex
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param, task

SHARDS = int(os.environ.get("CLASSIFY_SHARDS", "4"))

with DAG(
    dag_id="classify_catalog",
    schedule=os.environ.get("CLASSIFY_SCHEDULE", "0 2 * * *"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(minutes=2)},
    params={
        "bin": Param(os.environ.get("CLASSIFY_JOB_BIN", "classify-job"), type="string"),
        "input_dir": Param(os.environ.get("CLASSIFY_INPUT_DIR", "/data/catalog"), type="string"),
        "model": Param(os.environ.get("CLASSIFY_MODEL", "/opt/classify-job/models/sample"), type="string"),
        "out_root": Param(os.environ.get("CLASSIFY_OUT_ROOT", "/data/classify-out"), type="string"),
    },
    tags=["classify-job"],
) as dag:

    @task
    def shard_commands(params: dict | None = None) -> list[str]:
        """One shell command per shard; each shard has its own OUT so shards never contend."""
        p = {k: shlex.quote(str(v)) for k, v in (params or {}).items()}
        return [
            f"{p['bin']} classify {p['input_dir']} --model {p['model']} "
            f"--out {p['out_root']}/shards/{k}-of-{SHARDS} --shard {k}/{SHARDS}"
            for k in range(SHARDS)
        ]

    classify_shard = BashOperator.partial(task_id="classify_shard").expand(bash_command=shard_commands())

    merge_and_report = BashOperator(
        task_id="merge_and_report",
        bash_command=(
            "{{ params.bin }} merge "
            + " ".join(f"{{{{ params.out_root }}}}/shards/{k}-of-{SHARDS}" for k in range(SHARDS))
            + " --out {{ params.out_root }}/merged && {{ params.bin }} report {{ params.out_root }}/merged"
        ),
    )

    classify_shard >> merge_and_report
