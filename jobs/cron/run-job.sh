#!/bin/sh
# Run one classify-job command with a job file, the way cron needs it:
#   jobs/cron/run-job.sh classify jobs/nightly-catalog.toml
# - works from cron's bare environment (no PATH, no terminal): uses the project's own .venv;
# - JSON log lines (stderr) are appended to $CLASSIFY_JOB_LOG_DIR/<job>.jsonl, the human summary
#   (stdout) to <job>.out; default log dir: <project>/logs;
# - exits with classify-job's code (see README: 5 = an earlier run still holds the lock, so an
#   overlapping cron start fails fast instead of piling up; the next start resumes the work).
set -eu
project=$(cd "$(dirname "$0")/../.." && pwd)
command=$1
job=$2
name=$(basename "$job" .toml)
logs=${CLASSIFY_JOB_LOG_DIR:-$project/logs}
mkdir -p "$logs"
cd "$project"
exec "$project/.venv/bin/classify-job" "$command" --config "$job" >>"$logs/$name.out" 2>>"$logs/$name.jsonl"
