"""`review import` lets nothing in from outside the review folder (symbolic links, symlinked class
folders, bytes that are not the manifest's), and a kill at any point followed by a rerun imports
each image exactly once, with its one log line."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import COLORS, write_image
from typer.testing import CliRunner

from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.cli import app
from classify_job.hashing import content_hash
from classify_job.loop.review_export import export_review, read_manifest
from classify_job.loop.review_files import partial_name
from classify_job.loop.review_import import import_review
from classify_job.loop.review_log import LOG_NAME

AMBIGUOUS = [(128, 128, 128), (200, 30, 200), (150, 150, 40), (30, 150, 150)]


@pytest.fixture(scope="module")
def classified(color_bundle, tmp_path_factory) -> Path:
    """OUT of a classify run with four images to review."""
    root = tmp_path_factory.mktemp("safety")
    for i, color in enumerate(AMBIGUOUS):
        write_image(root / "tree" / "odd" / f"odd_{i}.png", color)
    write_image(root / "tree" / "red" / "red_0.png", COLORS["red"])
    run_classify(ClassifyConfig(root / "tree", color_bundle, root / "out"))
    return root / "out"


def hashes(folder: Path) -> dict[str, str]:
    """relpath -> SHA-256 of every file under ``folder``, hidden ones too (partial copies)."""
    found = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = Path(dirpath) / name
            if name not in (LOG_NAME, ".lock"):
                found[path.relative_to(folder).as_posix()] = content_hash(path)
    return found


def log_rows(data: Path) -> list[dict[str, str]]:
    with open(data / LOG_NAME, newline="") as fh:
        return list(csv.DictReader(fh))


def make_data(folder: Path) -> Path:
    for name, color in COLORS.items():
        write_image(folder / name / f"seed_{name}.png", color)
    return folder


def expected(entries: list[dict[str, str]]) -> dict[str, str]:
    return {
        f"{e['predicted_label']}/{e['sha256'][:16]}{Path(e['entry']).suffix}": e["sha256"] for e in entries
    }


def added(data: Path, before: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in hashes(data).items() if k not in before}


def secret(tmp_path: Path) -> Path:
    """A file outside the review folder, with an image's name and bytes (so only the link gives it away)."""
    return write_image(tmp_path / "outside" / "secret.png", (1, 2, 3))


def test_a_symlinked_entry_is_refused_and_nothing_of_it_is_copied(classified, tmp_path):
    review = export_review(classified, tmp_path / "review").folder
    first, *rest = read_manifest(review)
    target = secret(tmp_path)
    (review / first["entry"]).unlink()
    os.symlink(target, review / first["entry"])
    other = rest[0]
    (review / other["entry"]).unlink()
    os.symlink("/etc/passwd", review / other["entry"])
    data = make_data(tmp_path / "data")
    before = hashes(data)

    result = import_review(review, data)

    assert added(data, before) == expected(rest[1:])
    assert content_hash(target) not in hashes(data).values()
    assert result.counts["refused"] == 2 and result.counts["added"] == len(rest) - 1
    refusals = [p for p in result.problems if p.endswith("refused")]
    assert len(refusals) == 2 and all("symbolic link" in p for p in refusals)
    assert not any("not found" in p for p in result.problems)  # refused, not also "left out"
    assert {r["entry"] for r in log_rows(data)} == {e["entry"] for e in rest[1:]}


def test_a_symlinked_class_folder_is_refused(classified, tmp_path):
    review = export_review(classified, tmp_path / "review").folder
    entries = read_manifest(review)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(review / entries[0]["entry"], outside / Path(entries[0]["entry"]).name)  # their bytes, too
    write_image(outside / "another.png", (9, 9, 9))
    os.symlink(outside, review / "green2")
    data = make_data(tmp_path / "data")
    before = hashes(data)

    result = import_review(review, data, allow_new_classes=True)

    assert added(data, before) == expected(entries[1:]) and not (data / "green2").exists()
    assert result.counts["refused"] == 1
    assert any(p.startswith("green2/: a symbolic link to a folder") for p in result.problems)


def test_a_symlinked_subfolder_and_a_wrong_hash_are_refused(classified, tmp_path):
    review = export_review(classified, tmp_path / "review").folder
    first, second, *rest = read_manifest(review)
    os.symlink(secret(tmp_path).parent, review / first["predicted_label"] / "sub")
    write_image(review / first["entry"], (7, 7, 7))  # the reviewer's tool rewrote the file
    os.rename(review / second["entry"], review / second["predicted_label"] / "renamed.png")
    data = make_data(tmp_path / "data")
    before = hashes(data)

    result = import_review(review, data)

    assert added(data, before) == expected([second, *rest])  # a renamed entry is found by content
    assert content_hash(review / first["entry"]) not in hashes(data).values()
    assert result.counts["refused"] == 2
    assert any(f"{first['entry']}: its bytes are not the manifest's" in p for p in result.problems)
    assert any(p.startswith(f"{first['predicted_label']}/sub/: a symbolic link") for p in result.problems)


def test_a_link_export_still_imports_and_a_retargeted_link_is_refused(classified, tmp_path):
    review = export_review(classified, tmp_path / "review", link=True).folder
    first, *rest = read_manifest(review)
    (review / first["entry"]).unlink()
    os.symlink(secret(tmp_path), review / first["entry"])
    data = make_data(tmp_path / "data")
    before = hashes(data)

    result = import_review(review, data)

    assert added(data, before) == expected(rest) and result.counts["refused"] == 1


def test_the_cli_counts_and_names_the_refused(classified, tmp_path):
    review = export_review(classified, tmp_path / "review").folder
    first = read_manifest(review)[0]
    (review / first["entry"]).unlink()
    os.symlink(secret(tmp_path), review / first["entry"])
    data = make_data(tmp_path / "data")
    result = CliRunner().invoke(app, ["review", "import", str(review), "--into", str(data)])
    assert result.exit_code == 0, result.output
    assert "refused 1" in result.output and f"{first['entry']}: a symbolic link" in result.output


KILLER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from classify_job.loop import review_import as ri
    from classify_job.loop.review_log import ReviewLog

    point, n = sys.argv[3], int(sys.argv[4])
    calls = 0
    real_replace, real_write = os.replace, ReviewLog.write

    def replace(src, dst):
        global calls
        if point != "before_log" and Path(dst).parent.name in ("red", "green", "blue"):
            calls += 1
            if calls == n and point == "before_rename":
                os._exit(9)
            real_replace(src, dst)
            if calls == n and point == "after_rename":
                os._exit(9)
        else:
            real_replace(src, dst)

    def write(self, *args, **kwargs):
        global calls
        if point == "before_log":
            calls += 1
            if calls == n:
                os._exit(9)
        real_write(self, *args, **kwargs)

    os.replace, ReviewLog.write = replace, write
    ri.import_review(Path(sys.argv[1]), Path(sys.argv[2]))
    os._exit(0)
    """
)


@pytest.mark.parametrize("point", ["before_log", "before_rename", "after_rename"])
def test_a_killed_import_and_a_rerun_give_each_file_once_with_its_log_line(classified, tmp_path, point):
    review = export_review(classified, tmp_path / "review").folder
    entries = read_manifest(review)
    data = make_data(tmp_path / "data")
    before = hashes(data)
    stale = partial_name(data / "red" / "0123456789abcdef.png")
    stale.write_bytes(b"left by a kill long ago, with no log line")

    killed = subprocess.run([sys.executable, "-c", KILLER, review, data, point, "2"], check=False)
    assert killed.returncode == 9
    assert len(log_rows(data)) == (1 if point == "before_log" else 2)

    result = import_review(review, data)

    assert added(data, before) == expected(entries)  # no partial copy left, the stale one gone
    rows = log_rows(data)
    assert sorted(r["entry"] for r in rows) == sorted(e["entry"] for e in entries)
    assert all(r["action"] == "add" for r in rows)
    assert result.counts["added"] == len(entries) - (1 if point == "before_log" else 2)
    again = import_review(review, data)
    assert again.counts["unchanged"] == len(entries) and len(log_rows(data)) == len(entries)


def test_a_relabel_killed_before_its_move_is_finished_and_logged_once(classified, tmp_path):
    review = export_review(classified, tmp_path / "review").folder
    entry = read_manifest(review)[0]
    target = next(c for c in COLORS if c != entry["predicted_label"])
    os.rename(review / entry["entry"], review / target / Path(entry["entry"]).name)
    data = make_data(tmp_path / "data")
    held = data / entry["predicted_label"] / "held.png"
    held.write_bytes((review / target / Path(entry["entry"]).name).read_bytes())

    killed = subprocess.run([sys.executable, "-c", KILLER, review, data, "before_rename", "1"], check=False)
    assert killed.returncode == 9 and held.exists()

    import_review(review, data)

    relabels = [r for r in log_rows(data) if r["action"] == "relabel"]
    assert len(relabels) == 1 and not held.exists()
    assert (data / target / f"{entry['sha256'][:16]}.png").is_file()
