"""``review import``: a reviewed folder (or a Label Studio export of it) back into a training folder.

Each reviewed image goes to ``DATA/<class>/<sha256[:16]>.<ext>``, by content: an image whose bytes
are already under that class adds nothing, and one already under another class is moved there (a
relabel). Rejected items are logged, never imported; the review folder's sources are never
touched. Every change is appended to ``DATA/.review-log.csv`` (hidden, so training skips it).
Everything is checked (manifest, folders, class names) before the first file is written.
"""

from __future__ import annotations

import csv
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from classify_job.atomic import atomic_path
from classify_job.errors import InputError, OutputError
from classify_job.hashing import content_hash, content_hash_bytes
from classify_job.loop import labelstudio
from classify_job.loop.review_export import REJECT, read_manifest
from classify_job.train.dataset import IMAGE_EXTENSIONS, list_class_folders, list_classes_loose, list_samples
from classify_job.walk import escape_name, fs_path, iter_files

LOG_NAME = ".review-log.csv"
LOG_COLUMNS = (
    *("when", "action", "review", "source", "entry", "sha256", "predicted_label"),
    *("old_label", "new_label", "path", "old_path"),
)
CONFIRMED, CORRECTED, REJECTED = "confirmed", "corrected", "rejected"
ADDED, RELABELLED, UNCHANGED = "added", "relabelled", "unchanged"


@dataclass(frozen=True)
class Found:
    """A file in the review folder: the class folder it sits in, its path, and its content hash."""

    folder: str
    relpath: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Reviewed:
    """One manifest row with the class a person gave it (REJECT for none) and the file to import."""

    row: dict[str, str]
    label: str
    file: Found

    @property
    def review(self) -> str:
        if self.label == REJECT:
            return REJECTED
        return CONFIRMED if self.label == self.row["predicted_label"] else CORRECTED


@dataclass(frozen=True)
class ImportResult:
    """Class balance of DATA before and after, how many items each action and verdict had, and
    one line per item that was left out (not found, not in the manifest, not reviewed)."""

    data: Path
    log: Path
    before: dict[str, int]
    after: dict[str, int]
    counts: Counter[str]
    problems: tuple[str, ...] = field(default=())


def import_review(
    review_dir: Path, data: Path, allow_new_classes: bool = False, label_studio: Path | None = None
) -> ImportResult:
    """Import the corrections in ``review_dir`` (its folder tree, or the Label Studio export
    ``label_studio``) into the folder dataset ``data``; see the module docstring."""
    review_dir, data = Path(review_dir), Path(data)
    rows = read_manifest(review_dir)
    found, problems = find_entries(review_dir, rows)
    if label_studio is None:
        items, more = from_tree(rows, found)
    else:
        items, more = from_label_studio(rows, found, labelstudio.read_export(label_studio))
    counts = Counter(item.review for item in items)
    counts["left out"] = len(rows) - len(items)
    _check_target(data, {item.label for item in items} - {REJECT}, allow_new_classes)
    before = class_balance(data)
    sizes = {item.file.size for item in items}
    index = index_contents(data, sizes)
    with _ReviewLog(data / LOG_NAME) as log:
        for item in items:
            if effect := apply(item, data, index, log):
                counts[effect] += 1
    return ImportResult(data, data / LOG_NAME, before, class_balance(data), counts, (*problems, *more))


def find_entries(review_dir: Path, rows: list[dict[str, str]]) -> tuple[list[Found], list[str]]:
    """Every image under the class folders of ``review_dir`` (symlinks followed), hashed."""
    extensions = set(IMAGE_EXTENSIONS) | {os.path.splitext(r["entry"])[1].lower() for r in rows} - {""}
    found, problems = [], []
    for name in list_class_folders(review_dir):
        if name == labelstudio.FOLDER:
            continue
        prefix = f"{name}/"
        for entry in iter_files(review_dir / name, extensions, follow_symlinks=True, prefix=prefix):
            try:
                if entry.stat_error:
                    raise OSError(entry.stat_error)
                digest = content_hash(entry.path)
                found.append(Found(escape_name(name), entry.relpath, Path(entry.path), entry.size, digest))
            except OSError as exc:
                problems.append(f"{entry.relpath}: cannot read ({exc.strerror or exc}); left out")
    return found, problems


def from_tree(rows: list[dict[str, str]], found: list[Found]) -> tuple[list[Reviewed], list[str]]:
    """Each manifest row with the folder its entry was found in: a class, or REJECT."""
    claimed, problems = _claim(rows, found)
    items = []
    for row in rows:
        files = claimed.get(row["entry"], [])
        folders = sorted({f.folder for f in files})
        if len(folders) > 1:
            problems.append(f"{row['entry']}: found in several folders ({', '.join(folders)}); left out")
        elif files:
            items.append(Reviewed(row, files[0].folder, files[0]))
        else:
            problems.append(f"{row['entry']}: not found in the review folder; left out")
    return items, problems


def from_label_studio(
    rows: list[dict[str, str]], found: list[Found], verdicts: list[labelstudio.Verdict]
) -> tuple[list[Reviewed], list[str]]:
    """Each manifest row with the class its latest Label Studio annotation chose."""
    claimed, problems = _claim(rows, found)
    by_entry = {r["entry"]: r for r in rows}
    by_sha = {r["sha256"]: r for r in reversed(rows)}
    items, seen = [], set()
    for verdict in verdicts:
        row = by_entry.get(verdict.entry or "") or by_sha.get(verdict.sha256 or "")
        if row is None:
            problems.append(
                f"Label Studio task {verdict.entry or verdict.sha256}: not in the manifest; left out"
            )
        elif verdict.label is not None and row["entry"] not in seen:
            seen.add(row["entry"])
            files = claimed.get(row["entry"])
            if files:
                items.append(Reviewed(row, verdict.label, files[0]))
            else:
                problems.append(f"{row['entry']}: not found in the review folder; left out")
    problems += [
        f"{r['entry']}: no annotation in the export; left out" for r in rows if r["entry"] not in seen
    ]
    return items, problems


def _claim(rows: list[dict[str, str]], found: list[Found]) -> tuple[dict[str, list[Found]], list[str]]:
    """Map found files to manifest entries: by file name, else by content (a renamed entry)."""
    by_name = {PurePosixPath(r["entry"]).name: r["entry"] for r in rows}
    by_sha = {r["sha256"]: r["entry"] for r in reversed(rows)}
    claimed: dict[str, list[Found]] = defaultdict(list)
    problems = []
    for file in found:
        entry = by_name.get(PurePosixPath(file.relpath).name) or by_sha.get(file.sha256)
        if entry is None:
            problems.append(f"{file.relpath}: not in the manifest; left alone")
        else:
            claimed[entry].append(file)
    return claimed, problems


def _check_target(data: Path, classes: set[str], allow_new_classes: bool) -> None:
    bad = sorted(c for c in classes if not c or c.startswith(".") or "/" in c or c == labelstudio.FOLDER)
    if bad:
        raise InputError(f"not a class folder name: {bad}")
    if (data / "train").is_dir():
        raise InputError(f"{data} has train/val/test folders; import into {data / 'train'}")
    if not data.is_dir() and not allow_new_classes:
        raise InputError(f"dataset folder not found: {data} (--allow-new-classes creates it)")
    known = set(list_classes_loose(data)) if data.is_dir() else set()
    new = sorted(classes - known)
    if new and not allow_new_classes:
        raise InputError(
            f"classes not in {data}: {', '.join(new)}; fix the folder names or pass --allow-new-classes"
        )


def _samples(data: Path) -> tuple[list[str], tuple]:
    """Classes and images of ``data`` by training's own rules (walker, extensions, hidden names)."""
    if not data.is_dir():
        return [], ()
    classes = list_classes_loose(data)
    return classes, list_samples(data, data, classes, IMAGE_EXTENSIONS)


def class_balance(data: Path) -> dict[str, int]:
    """Images per class folder of ``data``, counted as training counts them."""
    classes, samples = _samples(data)
    counts = Counter(s.label for s in samples)
    return {name: counts[i] for i, name in enumerate(classes)}


def index_contents(data: Path, sizes: set[int]) -> dict[str, list[tuple[str, Path]]]:
    """(class, path) of every image in ``data`` by SHA-256; only files of a size in ``sizes``
    are read, since no other file can hold the same bytes."""
    classes, samples = _samples(data)
    index: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for sample in samples:
        if sample.size in sizes:
            path = Path(fs_path(data, sample.relpath, sample.relpath_bytes))
            try:
                index[content_hash(path)].append((classes[sample.label], path))
            except OSError:
                continue  # unreadable: it cannot be the image being imported
    return index


def apply(
    item: Reviewed, data: Path, index: dict[str, list[tuple[str, Path]]], log: _ReviewLog
) -> str | None:
    """Make DATA hold ``item`` under its class, log each change, and say what happened to DATA
    (None for a rejected item: it is only logged)."""
    sha, label = item.file.sha256, item.label
    held = index.get(sha, [])
    if label == REJECT:
        log.reject(item, ";".join(sorted({c for c, _ in held})))
        return None
    others = [(c, p) for c, p in held if c != label]
    if not others:
        if held:
            return UNCHANGED
        dest = data / label / f"{sha[:16]}{item.file.path.suffix.lower()}"
        _copy(item.file, dest)
        index[sha] = [(label, dest)]
        log.write("add", item, "", dest)
        return ADDED
    kept = [(c, p) for c, p in held if c == label]
    for old_label, old in others:
        dest = data / label / f"{sha[:16]}{old.suffix.lower()}"
        _move(old, dest, twins={p for _, p in kept})
        kept.append((label, dest))
        log.write("relabel", item, old_label, dest, old)
    index[sha] = kept
    return RELABELLED


def _copy(file: Found, dest: Path) -> None:
    if dest.exists():
        raise OutputError(f"{dest} exists with other content; left alone, nothing imported after it")
    try:
        content = file.path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {file.path}: {exc.strerror or exc}") from exc
    if content_hash_bytes(content) != file.sha256:
        raise InputError(f"{file.path} changed during the import; run it again")
    with atomic_path(dest) as tmp:
        tmp.write_bytes(content)


def _move(old: Path, dest: Path, twins: set[Path]) -> None:
    if dest.exists() and dest not in twins:
        raise OutputError(f"{dest} exists with other content; left alone, nothing imported after it")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(old, dest)  # replaces at most a twin with the same bytes: nothing is lost
    except OSError as exc:
        raise OutputError(f"cannot move {old} to {dest}: {exc.strerror or exc}") from exc


class _ReviewLog:
    """The append-only CSV of changes. Appended row by row, right after each change, so the log
    matches DATA even if an import stops halfway; a reject already logged is not logged again."""

    def __init__(self, path: Path) -> None:
        self.path, self.when, self.handle = path, datetime.now(UTC).isoformat(timespec="seconds"), None
        self.rejected = {(r["sha256"], r["entry"]) for r in _read_log(path) if r.get("action") == "reject"}

    def __enter__(self) -> _ReviewLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()

    def reject(self, item: Reviewed, held_as: str) -> None:
        if (item.file.sha256, item.row["entry"]) not in self.rejected:
            self.rejected.add((item.file.sha256, item.row["entry"]))
            self.write("reject", item, held_as, None)

    def write(self, action: str, item: Reviewed, old_label: str, path: Path | None, old: Path | None = None):
        data = self.path.parent
        row = (
            self.when, action, item.review, item.row["source_path"], item.row["entry"], item.file.sha256,
            item.row["predicted_label"], old_label, item.label, _rel(path, data), _rel(old, data),
        )  # fmt: skip
        with self._writer() as writer:
            writer.writerow(row)

    @contextmanager
    def _writer(self) -> Iterator[Any]:
        try:
            if self.handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                new = not self.path.exists() or self.path.stat().st_size == 0
                self.handle = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
                if new:
                    csv.writer(self.handle, lineterminator="\n").writerow(LOG_COLUMNS)
            yield csv.writer(self.handle, lineterminator="\n")
            self.handle.flush()
        except OSError as exc:
            raise OutputError(f"cannot write the review log {self.path}: {exc.strerror or exc}") from exc


def _read_log(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read the review log {path}: {exc}") from exc


def _rel(path: Path | None, root: Path) -> str:
    return "" if path is None else path.relative_to(root).as_posix()
