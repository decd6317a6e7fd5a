"""Review export and import: the review queue out to a folder tree and Label Studio, corrections
back into a training folder by content hash, exactly once."""

from __future__ import annotations

import csv
import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from helpers import COLORS, write_image
from typer.testing import CliRunner

from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.cli import app
from classify_job.errors import InputError
from classify_job.hashing import content_hash
from classify_job.loop.review_export import MANIFEST_COLUMNS, export_review
from classify_job.loop.review_import import import_review
from classify_job.loop.review_log import LOG_COLUMNS, LOG_NAME

# Colours the red/green/blue model cannot tell apart: grey and two-colour mixes.
AMBIGUOUS = [(128, 128, 128), (200, 30, 200), (150, 150, 40), (30, 150, 150), (110, 100, 95)]
LATIN1_NAME = b"caf\xe9.png"  # not valid UTF-8: the row carries relpath_bytes


@pytest.fixture(scope="module")
def classified(color_bundle, tmp_path_factory) -> tuple[Path, Path]:
    """A classified tree: 2 clear images per class (accepted) and 6 ambiguous ones (review)."""
    root = tmp_path_factory.mktemp("review")
    tree = root / "tree"
    for name, color in COLORS.items():
        for i in range(2):
            write_image(tree / name / f"{name}_{i}.png", color)
    for i, color in enumerate(AMBIGUOUS):
        write_image(tree / "odd" / f"odd_{i}.jpg", color)
    latin1 = write_image(tree / "odd" / "latin1.png", (100, 100, 95))
    os.rename(latin1, os.path.join(os.fsencode(tree / "odd"), LATIN1_NAME))
    run_classify(ClassifyConfig(tree, color_bundle, root / "out"))
    return tree, root / "out"


def predictions(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "predictions")


def manifest(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def files(folder: Path) -> dict[str, str]:
    """relpath -> SHA-256 of every visible file under ``folder``."""
    found = {}
    for dirpath, dirnames, names in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                path = Path(dirpath) / name
                found[path.relative_to(folder).as_posix()] = content_hash(path)
    return found


def log_rows(data: Path) -> list[dict[str, str]]:
    path = data / LOG_NAME
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == LOG_COLUMNS
        return list(reader)


def make_data(folder: Path) -> Path:
    for name, color in COLORS.items():
        write_image(folder / name / f"seed_{name}.png", color)
    return folder


def test_export_writes_the_queue_lowest_confidence_first_with_entries_manifest_and_label_studio(
    classified, tmp_path
):
    tree, out = classified
    rows = predictions(out)
    review = export_review(out, tmp_path / "review", audit=2, seed=1)
    entries = manifest(review.folder)

    assert list(entries[0]) == list(MANIFEST_COLUMNS)
    queued = [e for e in entries if e["decision"] == "review"]
    expected = rows[rows.decision == "review"].sort_values(["confidence", "relpath"])
    assert [e["relpath"] for e in queued] == expected.relpath.tolist() and review.queue_total == 6
    assert [float(e["confidence"]) for e in queued] == sorted(float(e["confidence"]) for e in queued)
    audited = [e for e in entries if e["decision"] == "accept"]
    assert len(audited) == review.audit == 2
    assert {e["relpath"] for e in audited} <= set(rows[rows.decision == "accept"].relpath)
    for entry in entries:
        path = review.folder / entry["entry"]
        assert entry["entry"].split("/")[0] == entry["predicted_label"]
        assert path.suffix == Path(entry["relpath"]).suffix and content_hash(path) == entry["sha256"]
        assert entry["model_id"] and entry["run_id"] and entry["source_path"].endswith(entry["relpath"])
    assert len({e["entry"].split("/")[1] for e in entries}) == len(entries)  # unique file names
    latin1 = next(e for e in entries if e["relpath"] == "odd/caf\\xe9.png")
    raw_source = os.path.join(os.fsencode(tree / "odd"), LATIN1_NAME)
    assert content_hash(review.folder / latin1["entry"]) == content_hash(raw_source)
    assert (review.folder / "_reject").is_dir() and not any((review.folder / "_reject").iterdir())
    assert all((review.folder / label).is_dir() for label in ("red", "green", "blue"))

    tasks = json.loads((review.label_studio / "tasks.json").read_text())
    assert [t["data"]["entry"] for t in tasks] == [e["entry"] for e in entries]
    for task, entry in zip(tasks, entries, strict=True):
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == entry["model_id"]
        assert prediction["score"] == pytest.approx(float(entry["confidence"]))
        (result,) = prediction["result"]
        assert result["type"] == "choices" and result["value"] == {"choices": [entry["predicted_label"]]}
        assert task["data"]["image"] == f"/data/local-files/?d=review/{entry['entry']}"
    config = ET.parse(review.label_studio / "config.xml").getroot()
    choices = config.find("Choices")
    assert [c.get("value") for c in choices] == ["red", "green", "blue", "_reject"]
    assert choices.get("name") == result["from_name"] and choices.get("toName") == result["to_name"]
    assert config.find("Image").get("name") == result["to_name"]


def test_limit_keeps_the_least_confident_and_the_audit_draw_follows_its_seed(classified, tmp_path):
    _, out = classified
    rows = predictions(out)
    least = rows[rows.decision == "review"].sort_values("confidence").relpath.head(2).tolist()
    first = manifest(export_review(out, tmp_path / "a", limit=2, audit=3, seed=7).folder)
    again = manifest(export_review(out, tmp_path / "b", limit=2, audit=3, seed=7).folder)
    other = manifest(export_review(out, tmp_path / "c", limit=0, audit=3, seed=8).folder)
    assert [e["relpath"] for e in first if e["decision"] == "review"] == least
    assert first == again
    assert not [e for e in other if e["decision"] == "review"]
    assert {e["relpath"] for e in other} != {e["relpath"] for e in first if e["decision"] == "accept"}
    with pytest.raises(InputError, match="not empty"):
        export_review(out, tmp_path / "a")


def test_link_mode_points_entries_at_the_sources(classified, tmp_path):
    tree, out = classified
    review = export_review(out, tmp_path / "review", limit=2, link=True)
    for entry in manifest(review.folder):
        path = review.folder / entry["entry"]
        target = Path(os.readlink(path))  # the raw name, for the Latin-1 file too
        assert target.parent == tree / Path(entry["relpath"]).parent and target.exists()
        assert content_hash(path) == entry["sha256"] == content_hash(target)


def test_a_source_gone_since_classify_is_named_and_left_out(color_bundle, tmp_path):
    tree = tmp_path / "tree"
    for i, color in enumerate(AMBIGUOUS[:2]):
        write_image(tree / f"odd_{i}.png", color)
    run_classify(ClassifyConfig(tree, color_bundle, tmp_path / "out"))
    (tree / "odd_0.png").unlink()
    review = export_review(tmp_path / "out", tmp_path / "review")
    assert [e["relpath"] for e in manifest(review.folder)] == ["odd_1.png"]
    assert review.skipped == (("odd_0.png", "No such file or directory"),) and review.queue_total == 2


def test_export_import_and_import_again_give_exactly_one_new_file_per_reviewed_image(classified, tmp_path):
    tree, out = classified
    sources = files(tree)
    review = export_review(out, tmp_path / "review", audit=1, seed=2).folder
    entries = manifest(review)
    moved, rejected, known = entries[0], entries[1], entries[2]
    target = next(c for c in ("red", "green", "blue") if c != moved["predicted_label"])
    os.rename(review / moved["entry"], review / target / Path(moved["entry"]).name)
    os.rename(review / rejected["entry"], review / "_reject" / Path(rejected["entry"]).name)
    data = make_data(tmp_path / "data")
    wrong = next(c for c in ("red", "green", "blue") if c != known["predicted_label"])
    shutil.copy(review / known["entry"], data / wrong / "already_here.jpg")  # in DATA, another class
    before = files(data)

    result = import_review(review, data)

    labels = {e["entry"]: e["predicted_label"] for e in entries} | {moved["entry"]: target}
    expected = {
        f"{labels[e['entry']]}/{e['sha256'][:16]}{Path(e['entry']).suffix}": e["sha256"]
        for e in entries
        if e is not rejected
    }
    after = files(data)
    assert {k: v for k, v in after.items() if k not in before} == expected
    assert set(before) - set(after) == {f"{wrong}/already_here.jpg"}  # moved, not copied
    assert rejected["sha256"] not in after.values()
    counts = result.counts
    assert (counts["added"], counts["relabelled"], counts["rejected"]) == (len(entries) - 2, 1, 1)
    assert (counts["confirmed"], counts["corrected"]) == (len(entries) - 2, 1)
    balance = lambda tree: {c: sum(k.startswith(f"{c}/") for k in tree) for c in ("blue", "green", "red")}  # noqa: E731
    assert result.before == balance(before) and result.after == balance(after)
    assert sum(result.after.values()) == sum(result.before.values()) + len(entries) - 2
    log = log_rows(data)
    assert sorted(r["action"] for r in log) == sorted(["add"] * (len(entries) - 2) + ["relabel", "reject"])
    relabel = next(r for r in log if r["action"] == "relabel")
    assert (relabel["old_label"], relabel["new_label"]) == (wrong, known["predicted_label"])
    assert relabel["old_path"] == f"{wrong}/already_here.jpg" and relabel["source"] == known["source_path"]
    assert next(r for r in log if r["action"] == "reject")["sha256"] == rejected["sha256"]
    assert all(r["when"] and r["source"] for r in log)

    again = import_review(review, data)
    assert files(data) == after and len(log_rows(data)) == len(log)
    assert (again.counts["added"], again.counts["relabelled"]) == (0, 0)
    assert again.counts["unchanged"] == len(entries) - 1
    assert files(tree) == sources  # sources never moved, changed or deleted


def test_a_class_data_does_not_have_is_an_error_unless_allowed(classified, tmp_path):
    _, out = classified
    review = export_review(out, tmp_path / "review", limit=2).folder
    entry = manifest(review)[0]
    (review / "purple").mkdir()
    os.rename(review / entry["entry"], review / "purple" / Path(entry["entry"]).name)
    data = make_data(tmp_path / "data")
    before = files(data)
    with pytest.raises(InputError, match="purple"):
        import_review(review, data)
    assert files(data) == before and not log_rows(data)
    result = import_review(review, data, allow_new_classes=True)
    assert (data / "purple" / f"{entry['sha256'][:16]}{Path(entry['entry']).suffix}").is_file()
    assert result.after["purple"] == 1 and "purple" not in result.before
    with pytest.raises(InputError, match="dataset folder not found"):
        import_review(review, tmp_path / "missing")


def test_label_studio_export_round_trip(classified, tmp_path):
    _, out = classified
    review = export_review(out, tmp_path / "review", limit=4).folder
    tasks = json.loads((review / "labelstudio" / "tasks.json").read_text())
    first, second, third, fourth = tasks
    other = next(c for c in ("red", "green", "blue") if c != first["data"]["predicted_label"])

    def annotation(choice: str, when: str, cancelled: bool = False) -> dict:
        result = [
            {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}
        ]
        return {"result": result, "updated_at": when, "was_cancelled": cancelled}

    first["annotations"] = [annotation(other, "2024-05-01T10:00:00Z")]
    second["annotations"] = [annotation("_reject", "2024-05-01T10:00:00Z")]
    third["annotations"] = [
        annotation(third["data"]["predicted_label"], "2024-05-02T10:00:00Z"),
        annotation(other, "2024-05-01T10:00:00Z"),  # older: overruled
        annotation("blue" if other != "blue" else "red", "2024-05-03T10:00:00Z", cancelled=True),
    ]
    for i, task in enumerate(tasks):
        task["id"] = i + 1  # what Label Studio adds; fourth stays unannotated
    export = tmp_path / "project-1.json"
    export.write_text(json.dumps(tasks))
    data = make_data(tmp_path / "data")

    result = import_review(review, data, label_studio=export)

    added = {k: v for k, v in files(data).items() if not k.startswith(tuple(f"{c}/seed_" for c in COLORS))}
    name = lambda task, label: f"{label}/{task['data']['sha256'][:16]}{Path(task['data']['entry']).suffix}"  # noqa: E731
    assert set(added) == {name(first, other), name(third, third["data"]["predicted_label"])}
    assert (result.counts["corrected"], result.counts["confirmed"], result.counts["rejected"]) == (1, 1, 1)
    assert result.counts["left out"] == 1 and any(fourth["data"]["entry"] in p for p in result.problems)
    with pytest.raises(InputError, match="not a Label Studio JSON export"):
        export.write_text(json.dumps({"tasks": []}))
        import_review(review, data, label_studio=export)


runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_review_commands_through_the_cli(classified, tmp_path):
    _, out = classified
    review, data = tmp_path / "review", tmp_path / "data"
    result = invoke("review", "export", out, "--to", review, "--limit", "3", "--audit", "1", "--seed", "4")
    assert result.exit_code == 0, result.output
    assert "3 of 6 rows needing review, and 1 accepted" in result.output and "Manifest:" in result.output
    assert len(manifest(review)) == 4
    result = invoke("review", "import", review, "--into", data, "--allow-new-classes")
    assert result.exit_code == 0, result.output
    assert "added 4" in result.output and "class balance" in result.output and LOG_NAME in result.output
    result = invoke("review", "import", review, "--into", data)
    assert result.exit_code == 0 and "added 0" in result.output and "unchanged 4" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["review", "export", "{tmp}/nothing", "--to", "{tmp}/r"], "no predictions"),
        (["review", "export", "{out}", "--to", "{tmp}/r", "--limit", "-1"], "--limit"),
        (["review", "import", "{tmp}/nothing", "--into", "{tmp}/data"], "review folder not found"),
        (["review", "import", "{out}", "--into", "{tmp}/data"], "has no manifest.csv"),
    ],
)
def test_wrong_paths_are_one_line_and_exit_2(classified, tmp_path, args, message):
    _, out = classified
    result = invoke(*(a.format(tmp=tmp_path, out=out) for a in args))
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # rich wraps the one line at the test terminal's width
    assert text.startswith("error: ") and text.count("error:") == 1 and message in text
    assert "Traceback" not in result.output
