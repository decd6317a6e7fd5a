"""Airflow 3 DAG: the weekly learning loop, one task per step of a classify-job job file.

    train -> evaluate -> promote -> classify -> tag

Each task runs `classify-job <step> --config <job file>` (jobs/weekly-retrain.toml has one table
per step). The promotion gate exits 7 when the candidate is refused: that task fails, the run is
marked failed, classify and tag never run, and models/current keeps the old model. The gate is
never retried (a refusal is a verdict, not a glitch); the other steps resume safely on retry.

Install: copy or symlink this file into $AIRFLOW_HOME/dags/. Settings are DAG params whose
defaults come from environment variables on the workers: CLASSIFY_JOB_BIN (the classify-job
script), RETRAIN_JOB_FILE (the job file), RETRAIN_WORKDIR (where its relative paths start),
RETRAIN_SCHEDULE (cron expression, default Sundays 03:30).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param, chain

STEPS = ("train", "evaluate", "promote", "classify", "tag")

with DAG(
    dag_id="weekly_retrain",
    schedule=os.environ.get("RETRAIN_SCHEDULE", "30 3 * * 0"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    params={
        "bin": Param(os.environ.get("CLASSIFY_JOB_BIN", "classify-job"), type="string"),
        "job": Param(
            os.environ.get("RETRAIN_JOB_FILE", "/opt/classify-job/jobs/weekly-retrain.toml"), type="string"
        ),
        "workdir": Param(os.environ.get("RETRAIN_WORKDIR", "/opt/classify-job"), type="string"),
    },
    tags=["classify-job"],
) as dag:
    chain(
        *(
            BashOperator(
                task_id=step,
                bash_command=(
                    'cd "{{ params.workdir }}" && "{{ params.bin }}" ' + step + ' --config "{{ params.job }}"'
                ),
                retries=0 if step == "promote" else 1,
            )
            for step in STEPS
        )
    )
