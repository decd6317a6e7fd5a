import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from classify_job import errors
from classify_job.classify.lock import output_lock
from classify_job.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_classify_then_report_through_cli_runner(tiny_tree, color_bundle, tmp_path):
    tree, out = tiny_tree(), tmp_path / "out"
    result = invoke("classify", tree, "--model", color_bundle, "--out", out, "--top-k", "2")
    assert result.exit_code == 0, result.output
    assert "Predictions:" in result.output
    assert pd.read_parquet(out / "predictions").top_labels.map(len).eq(2).all()
    (out / "summary.json").unlink()
    result = invoke("report", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["files"] == 12
    again = invoke("classify", tree, "--model", color_bundle, "--out", out)
    assert "Nothing to classify" in again.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["classify", "{tmp}/missing", "--model", "{bundle}", "--out", "{tmp}/o"],
            2,
            "input directory not found",
        ),
        (["classify", "{tree}", "--model", "{tmp}/nomodel", "--out", "{tmp}/o"], 3, "model bundle not found"),
        (["classify", "{tree}", "--model", "{bundle}", "--out", "{tmp}/o", "--shard", "5/2"], 2, "--shard"),
        (
            ["classify", "{tree}", "--model", "{bundle}", "--out", "{tmp}/o", "--batch-size", "0"],
            2,
            "at least 1",
        ),
        (["classify", "{tree}", "--out", "{tmp}/o"], 2, "missing --model"),
        (["classify", "{tree}", "--model", "{bundle}", "--out", "/proc/forbidden"], 4, "cannot create"),
        (["report", "{tmp}/nothing"], 2, "no predictions"),
    ],
)
def test_bad_input_is_one_line_and_a_documented_exit_code(
    tiny_tree, color_bundle, tmp_path, args, code, message
):
    values = {"tmp": tmp_path, "bundle": color_bundle, "tree": tiny_tree(per_class=1)}
    result = invoke(*(a.format(**values) for a in args))
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_locked_output_exits_5(tiny_tree, color_bundle, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out):
        result = invoke("classify", tiny_tree(), "--model", color_bundle, "--out", out)
    assert result.exit_code == 5 and "another run" in result.output


def test_job_file_with_cli_overrides(tiny_tree, color_bundle, tmp_path):
    job = tmp_path / "job.toml"
    values = {"input_dir": tiny_tree(), "model": color_bundle, "out": tmp_path / "o", "shard": "0/2"}
    job.write_text("[classify]\ntop_k = 1\n" + "".join(f'{k} = "{v}"\n' for k, v in values.items()))
    result = invoke("classify", "--config", job, "--out", tmp_path / "override")
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(tmp_path / "override" / "predictions")
    assert 0 < len(df) < 12 and df.top_labels.map(len).eq(1).all()
    job.write_text("[classify]\nbogus = 1\n")
    assert invoke("classify", "--config", job).exit_code == 2


# --- real processes: the console script, kill -9 and SIGTERM ----------------------------------


def big_tree(tiny_tree, tmp_path, per_class=60) -> Path:
    return tiny_tree(per_class=per_class, root=tmp_path / "big")


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "classify_job", "classify", *map(str, args)]


def assert_complete(out: Path, expected: int) -> None:
    df = pd.read_parquet(out / "predictions")
    assert len(df) == expected and df.relpath.is_unique


PIPE_BYTES = 4096  # the smallest pipe Linux makes: about 12 of the run's JSON progress lines fill it,
# while the 180-file tree logs about 45 after its first part, so the run cannot finish unread


class HeldRun:
    """A classify subprocess that logs a JSON progress line per batch into a 4 KiB stderr pipe.

    :meth:`wait_for_committed` reads lines until one says a part holds ``rows`` rows, then stops
    reading: the run blocks on its next few log lines, so it is still mid-tree, whatever the
    machine's speed, when the test signals it. :meth:`finish` reads the rest and waits for the exit.
    """

    def __init__(self, args: tuple, tmp_path: Path) -> None:
        job = tmp_path / "progress.toml"
        job.write_text("[classify]\nlog_every_s = 0\n")  # a line per batch: far more than the pipe holds
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.proc = subprocess.Popen(cli(*args, "--config", job), stderr=write_end, stdout=subprocess.DEVNULL)
        os.close(write_end)
        self.stderr = os.fdopen(read_end, encoding="utf-8")
        self.lines: list[str] = []

    def wait_for_committed(self, rows: int) -> None:
        for line in self.stderr:  # a line at a time, as the run writes them; EOF if it dies
            self.lines.append(line)
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("event") == "progress" and event["classified"] >= rows:
                return
        raise AssertionError(f"the run ended before committing {rows} rows:\n{''.join(self.lines)}")

    def finish(self, timeout: float = 120) -> str:
        reader = threading.Thread(target=lambda: self.lines.extend(self.stderr), daemon=True)
        reader.start()
        self.proc.wait(timeout=timeout)
        reader.join(timeout=timeout)
        self.stderr.close()
        return "".join(self.lines)


def test_module_entry_point_runs_with_plain_log_lines(tiny_tree, color_bundle, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        cli(tiny_tree(), "--model", color_bundle, "--out", out), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "progress 12/12 files" in proc.stderr  # not a terminal: log lines, no progress bar
    assert_complete(out, 12)


def test_kill_9_midway_then_rerun_loses_and_duplicates_nothing(tiny_tree, color_bundle, tmp_path):
    tree, out = big_tree(tiny_tree, tmp_path), tmp_path / "out"
    args = (tree, "--model", color_bundle, "--out", out, "--batch-size", "4", "--rows-per-part", "8")
    run = HeldRun(args, tmp_path)
    run.wait_for_committed(8)
    run.proc.send_signal(signal.SIGKILL)
    assert run.finish() and run.proc.returncode == -signal.SIGKILL
    done_before = len(pd.read_parquet(out / "predictions"))
    assert 8 <= done_before < 180
    rerun = subprocess.run(cli(*args), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done_before} already done" in rerun.stderr
    assert_complete(out, 180)


def test_sigterm_stops_at_a_batch_boundary_with_exit_75(tiny_tree, color_bundle, tmp_path):
    tree, out = big_tree(tiny_tree, tmp_path), tmp_path / "out"
    args = (tree, "--model", color_bundle, "--out", out, "--batch-size", "4", "--rows-per-part", "8")
    run = HeldRun(args, tmp_path)
    run.wait_for_committed(8)
    os.kill(run.proc.pid, signal.SIGTERM)
    stderr = run.finish()
    assert run.proc.returncode == 75, stderr
    assert "SIGTERM received" in stderr and "rerun to resume" in stderr
    kept = len(pd.read_parquet(out / "predictions"))
    assert kept % 4 == 0 and 8 <= kept < 180  # whole batches only
    assert subprocess.run(cli(*args), capture_output=True).returncode == 0
    assert_complete(out, 180)


def test_json_log_lines_carry_run_id_and_counts(tiny_tree, color_bundle, tmp_path):
    proc = subprocess.run(
        cli(tiny_tree(), "--model", color_bundle, "--out", tmp_path / "o"), capture_output=True, text=True
    )
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    done = next(e for e in events if e.get("event") == "run_done")
    assert done["classified"] == 12 and done["run_id"] and done["level"] == "info"
    assert {e.get("event") for e in events} >= {"run_start", "progress", "run_done"}


def test_merge_command(tiny_tree, color_bundle, tmp_path):
    tree = tiny_tree()
    for k in range(2):
        result = invoke("classify", tree, "-m", color_bundle, "-o", tmp_path / f"s{k}", "--shard", f"{k}/2")
        assert result.exit_code == 0, result.output
    result = invoke("merge", tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "all")
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(tmp_path / "all" / "predictions")) == 12
    result = invoke("merge", tmp_path / "s0", "--out", tmp_path / "part")
    assert result.exit_code == 2 and "missing shard(s) 1/2" in result.output


def test_pretrained_import_caches_verified_weights(tmp_path):
    result = invoke("pretrained", "import", "--cache-dir", tmp_path)
    assert result.exit_code == 0, result.output
    (cached,) = tmp_path.glob("*.npz")
    assert str(cached) in result.output.replace("\n", "")
    cached.write_bytes(b"damaged")
    assert invoke("pretrained", "import", "--cache-dir", tmp_path, "--force").exit_code == 0


def test_classify_writes_html_report_and_tag_joins_a_catalog(tiny_tree, color_bundle, tmp_path):
    tree, out = tiny_tree(per_class=2), tmp_path / "out"
    assert invoke("classify", tree, "-m", color_bundle, "-o", out).exit_code == 0
    assert "<img" in (out / "report.html").read_text()
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("sku,title\nred_0,Red thing\nblue_1,Blue thing\nnone_9,No photo\n")
    result = invoke("tag", out, "--catalog", catalog, "--key-column", "sku", "--key-from", r"/(\w+)\.\w+$")
    assert result.exit_code == 0, result.output
    tagged = pd.read_csv(out / "catalog.tagged.csv").set_index("sku")
    assert tagged.loc["red_0", "label"] == "red" and tagged.loc["blue_1", "label"] == "blue"
    bad = invoke("tag", out, "--catalog", catalog, "--key-column", "nope", "--key-from", r"(\w+)")
    assert bad.exit_code == 2 and "nope" in bad.output


def test_train_evaluate_check_data_then_classify_with_the_new_bundle(tiny_tree, tmp_path):
    data, bundle = tiny_tree(per_class=10), tmp_path / "models" / "tiny"
    (data / "red" / "broken.png").write_bytes(b"not a png")
    args = [
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--image-size",
        "16",
        "--val-split",
        "0.2",
        "--test-split",
        "0.2",
    ]
    result = invoke("train", data, "--out", bundle, *args)
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "1 unreadable files skipped" in result.output.replace("\n", " ")
    for name in (
        "model.keras",
        "bundle.json",
        "metrics.json",
        "history.csv",
        "confusion_matrix.png",
        "README.md",
    ):
        assert (bundle / name).is_file(), name
    assert invoke("train", data, "--out", bundle, *args).exit_code == 4  # never overwrites silently

    result = invoke("evaluate", bundle, data, "--split", "all", "--out", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_images"] == 30

    (data / "red" / "notes.txt").write_text("not an image")
    result = invoke("check-data", data, "--strict")
    assert result.exit_code == 2 and "unreadable" in result.output
    output = result.output.replace("\n", " ")
    assert "width 24/24/24" in output and "(min/median/max)" in output and "1 files ignored" in output

    result = invoke("classify", data, "--model", bundle, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(tmp_path / "out" / "predictions")) == 31

    recal = tmp_path / "recal"
    result = invoke("calibrate", bundle, data, "--out", recal, "--target-precision", "0.9")
    assert result.exit_code == 0, result.output
    assert "Recalibrated bundle" in result.output and "## Decisions" in (recal / "README.md").read_text()
    spec = json.loads((recal / "bundle.json").read_text())
    assert spec["model_id"] == json.loads((bundle / "bundle.json").read_text())["model_id"]
    assert {t["target_precision"] for t in spec["accept_thresholds"].values()} == {0.9}
    assert invoke("calibrate", bundle, data, "--out", recal).exit_code == 4  # never overwrites
    assert (
        invoke("calibrate", bundle, data, "--out", tmp_path / "r2", "--target-precision", "1").exit_code == 2
    )


def test_train_without_data_or_with_a_bad_arch_is_one_line(tmp_path):
    assert "missing DATA, --out" in invoke("train").output
    result = invoke("train", tmp_path, "--out", tmp_path / "m", "--arch", "resnet9000")
    assert result.exit_code == 2 and "arch must be one of" in result.output


def test_sample_data_command(tmp_path):
    result = invoke("sample-data", tmp_path / "s", "--per-class", "2", "--image-size", "96", "--messy")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "s" / "male_jeans").glob("img_*.jpg"))) == 2
    assert invoke("sample-data", tmp_path / "t", "--per-class", "-1").exit_code == 2
    result = invoke("sample-data", tmp_path / "u", "--per-class", "0", "--other", "1", "--image-size", "96")
    assert result.exit_code == 0 and "u-other: 1 each of skirt, shirt, shoe" in result.output
    assert len(list((tmp_path / "u-other").rglob("*.jpg"))) == 3


def test_train_flags_merge_into_the_job_files_arch_options(tiny_tree, tmp_path, monkeypatch):
    import classify_job.train.pipeline as training

    received = []

    def record_instead_of_training(config, on_epoch):
        received.append(config)
        raise errors.DatasetError("stop here")

    monkeypatch.setattr(training, "train", record_instead_of_training)
    job = tmp_path / "job.toml"
    lines = [f'data_dir = "{tiny_tree()}"', f'out_dir = "{tmp_path / "m"}"', 'arch = "efficientnet_lite0"']
    job.write_text("[train]\n" + "\n".join(lines) + "\n[train.arch_options]\ndropout = 0.5\n")
    assert invoke("train", "--config", job, "--fine-tune-blocks", "2").exit_code == 2
    assert received[0].arch_options == {"dropout": 0.5, "fine_tune_blocks": 2}


def test_version_prints_the_package_version():
    from classify_job import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"classify-job {__version__}"
