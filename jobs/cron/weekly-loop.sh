#!/bin/sh
# The weekly learning loop from cron: each step of a job file in order, stopping at the first that
# fails (a refused promotion exits 7, so classify and tag never run with a worse model):
#   jobs/cron/weekly-loop.sh jobs/weekly-retrain.toml
# Logs as run-job.sh writes them: <log dir>/<job>.jsonl and <job>.out. Exits with the failing step's code.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
job=$1
for step in train evaluate promote classify tag; do
  "$here/run-job.sh" "$step" "$job"
done
