"""Write-then-rename: a file appears whole or not at all, and a failed write names the file."""

import json

import pytest

from classify_job import atomic
from classify_job.errors import OutputError


def test_writes_replace_the_file_whole_and_leave_no_temporary(tmp_path):
    target = tmp_path / "sub" / "data.json"
    atomic.write_json(target, {"a": 1})
    atomic.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["data.json"]


def test_a_failed_writer_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "report.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer crashed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.csv"]


def test_temporary_names_are_hidden_and_keep_the_suffix(tmp_path):
    tmp = atomic.temporary_name(tmp_path / "model.keras")
    assert tmp.name.startswith(".model.tmp-") and tmp.suffix == ".keras"


def test_an_unwritable_place_is_an_output_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        atomic.write_text(tmp_path / "file" / "below.txt", "y")
