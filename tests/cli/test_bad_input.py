"""Bad settings end as exit 2 and one line naming the key, where it came from and the value, the
same rules for a job file and for a flag (issue 19); a SIGTERM before the loop exits 75."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from classify_job.classify.config import MAX_THREADS
from classify_job.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def job_file(tmp_path: Path, line: str) -> Path:
    """A [classify] table with input_dir, model and out, and ``line`` (which may replace one)."""
    keys = {name: f'"{tmp_path / name}"' for name in ("input_dir", "model", "out")}
    key, value = (part.strip() for part in line.split("=", 1))
    keys[key] = value
    path = tmp_path / "job.toml"
    path.write_text("[classify]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()))
    return path


def assert_one_line_exit_2(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('fresh = "no"', "fresh must be true or false. Received: fresh='no'"),
        ("fresh = 1", "fresh must be true or false. Received: fresh=1"),
        ('prune = "yes"', "prune must be true or false"),
        ("batch_size = 2.5", "batch_size must be a whole number. Received: batch_size=2.5"),
        ("batch_size = true", "batch_size must be a whole number. Received: batch_size=True"),
        ("batch_size = 1e11", "batch_size must be a whole number"),
        ("batch_size = 100000000000", "batch_size must be at least 1 and at most 4,096"),
        ('batch_size = "32"', "batch_size must be a whole number. Received: batch_size='32'"),
        ("batch_size = 0", "batch_size must be at least 1"),
        ("commit_every_s = -10", "commit_every_s must be at least 0 (seconds). Received: commit_every_s=-10"),
        ("commit_every_s = nan", "commit_every_s must be a finite number"),
        ('commit_every_s = "10"', "commit_every_s must be a finite number"),
        ("log_every_s = -1", "log_every_s must be at least 0 (seconds). Received: log_every_s=-1"),
        ("max_error_rate = 2", "max_error_rate must be between 0 and 1"),
        ("max_error_rate = true", "max_error_rate must be a finite number"),
        ("runtime_threads = 100000", f"runtime_threads must be at least 1 and at most {MAX_THREADS}"),
        ("workers = 100000", f"workers must be at least 1 and at most {MAX_THREADS}"),
        ("workers = false", "workers must be a whole number"),
        ("top_k = 1.5", "top_k must be a whole number"),
        ('shard = "1/99999999999999999999"', "shard must be K/N"),
        ("shard = 3", "shard must be K/N"),
        ("extensions = [1, 2]", "extensions must be a list of strings"),
        ("engine = 1", "engine must be a string"),
        ("model = 5", "model must be a path"),
        ('out = ""', "out must be a path"),
    ],
)
def test_a_bad_job_file_value_is_exit_2_naming_key_file_and_value(tmp_path, line, expected):
    path = job_file(tmp_path, line)
    result = invoke("classify", "--config", path)
    assert_one_line_exit_2(result, f"job file {path} [classify]: ", expected)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--runtime-threads", "100000"],
            f"option --runtime-threads: runtime_threads must be at least 1 and at most {MAX_THREADS}",
        ),
        (
            ["--workers", str(MAX_THREADS + 1)],
            f"option --workers: workers must be at least 1 and at most {MAX_THREADS}",
        ),
        (
            ["--batch-size", "99999999999999999999"],
            "option --batch-size: batch_size must be at least 1 and at most",
        ),
        (["--shard", "1/99999999999999999999"], "option --shard: shard must be K/N"),
        (["--shard", "99999999999999999999/3"], "option --shard: shard must be K/N"),
        (["--shard", "1/0"], "option --shard"),
        (["--shard", "-1/4"], "option --shard"),
        (["--shard", "\u0661/\u0664"], "option --shard"),
        (["--shard", "1" * 5000 + "/2"], "option --shard"),
        (["--max-error-rate", "nan"], "option --max-error-rate"),
        (["--max-error-rate", "inf"], "option --max-error-rate"),
        (["--ray-actors", "99999999999999999999"], "option --ray-actors: ray_actors must be at least 1"),
        (["--rows-per-part", "0"], "option --rows-per-part"),
    ],
)
def test_a_bad_flag_is_exit_2_with_the_same_rules(tmp_path, args, expected):
    result = invoke("classify", tmp_path / "in", "--model", tmp_path / "m", "--out", tmp_path / "o", *args)
    assert_one_line_exit_2(result, expected)


def test_a_flag_overrides_a_bad_job_file_value_and_is_named_itself(tmp_path):
    path = job_file(tmp_path, "batch_size = 2.5")
    result = invoke("classify", "--config", path, "--batch-size", "0")
    assert_one_line_exit_2(result, "option --batch-size: batch_size must be at least 1 and at most")


def test_fresh_as_a_string_deletes_nothing(tiny_tree, color_bundle, tmp_path):
    tree, out = tiny_tree(per_class=2), tmp_path / "out"
    assert invoke("classify", tree, "--model", color_bundle, "--out", out).exit_code == 0
    before = pd.read_parquet(out / "predictions")
    path = tmp_path / "job.toml"
    path.write_text(
        f'[classify]\ninput_dir = "{tree}"\nmodel = "{color_bundle}"\nout = "{out}"\nfresh = "no"\n'
    )
    assert_one_line_exit_2(invoke("classify", "--config", path), "fresh must be true or false")
    after = pd.read_parquet(out / "predictions")
    assert len(after) == len(before) == 6 and (out / "summary.json").is_file()


def test_a_bad_job_file_value_in_a_real_process_is_one_line_on_stderr(tmp_path):
    path = job_file(tmp_path, "runtime_threads = 100000")
    proc = subprocess.run(
        [sys.executable, "-m", "classify_job", "classify", "--config", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: job file {path} [classify]: runtime_threads must be at least 1 and at most {MAX_THREADS} "
        f"(4 x {os.cpu_count()} CPUs). Received: runtime_threads=100000"
    ]


# --- SIGTERM before the loop: exit 75, one line, nothing half done -------------------------------


def sigterm_then(call):
    def wrapped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return call(*args, **kwargs)

    return wrapped


def test_sigterm_while_settings_are_read_exits_75(tiny_tree, color_bundle, tmp_path, monkeypatch):
    from classify_job.classify.config import ClassifyConfig

    monkeypatch.setattr(ClassifyConfig, "resolve", sigterm_then(ClassifyConfig.resolve))
    out = tmp_path / "out"
    result = invoke("classify", tiny_tree(per_class=1), "--model", color_bundle, "--out", out)
    assert result.exit_code == 75, result.output
    assert "Traceback" not in result.output and "nothing was written" in result.output
    assert not out.exists()


def test_sigterm_while_the_bundle_is_read_exits_75(tiny_tree, color_bundle, tmp_path, monkeypatch):
    from classify_job.classify import pipeline

    monkeypatch.setattr(pipeline, "read_spec", sigterm_then(pipeline.read_spec))
    out = tmp_path / "out"
    result = invoke(
        "classify", tiny_tree(per_class=2), "--model", color_bundle, "--out", out, "--batch-size", "2"
    )
    assert result.exit_code == 75, result.output
    assert "Traceback" not in result.output and "rerun to resume" in result.output
    monkeypatch.undo()
    assert invoke("classify", tiny_tree(per_class=2), "--model", color_bundle, "--out", out).exit_code == 0
    assert len(pd.read_parquet(out / "predictions")) == 6


@pytest.mark.parametrize("args", [["--augmented-views", "1"], ["--fine-tune-blocks", "2"]])
def test_a_lite0_option_with_the_cnn_is_exit_2_naming_it(tiny_tree, tmp_path, args):
    result = invoke("train", tiny_tree(per_class=2), "--out", tmp_path / "m", "--arch", "cnn", *args)
    assert_one_line_exit_2(result, "arch cnn takes arch_options")
    assert args[0].lstrip("-").replace("-", "_") in result.output and not (tmp_path / "m").exists()
