"""``review import``: a reviewed folder (or a Label Studio export of it) back into a training folder.

Each reviewed image goes to ``DATA/<class>/<sha256[:16]>.<ext>``, by content: an image whose bytes
are already under that class adds nothing, and one already under another class is moved there (a
relabel). Rejected items are logged, never imported; the review folder's sources are never
touched. Every change is appended to ``DATA/.review-log.csv`` (hidden, so training skips it).
Everything is checked (manifest, folders, class names) before the first file is written.

Nothing outside the review folder is let in: only regular files under its class folders are read
(opened with O_NOFOLLOW); a symbolic link is refused, a class folder that is one too, except a
link ``review export --link`` wrote (it leads to the row's recorded ``source_path``). A file
whose bytes are not the manifest's ``sha256`` is refused. Refused entries are counted
("refused"), named in the problems and never copied; the rest is imported.

A kill at any point leaves DATA and the log so that a rerun imports each image exactly once: a
new image is written under a hidden temporary name beside its destination and synced, its log
line is appended and synced, and only then is it renamed into place. The next run finishes
such a temporary whose line is in the log and deletes any other.
"""

from __future__ import annotations

import os
import stat
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from classify_job.classify.lock import output_lock
from classify_job.errors import InputError, OutputError
from classify_job.hashing import content_hash
from classify_job.loop import labelstudio
from classify_job.loop.review_export import REJECT, read_manifest
from classify_job.loop.review_files import (
    check_free,
    copy_in,
    finish_partial_copies,
    hash_regular,
    listing,
    move,
)
from classify_job.loop.review_log import LOG_NAME, ReviewLog, rel
from classify_job.train.dataset import IMAGE_EXTENSIONS, list_classes_loose, list_samples
from classify_job.walk import escape_name, fs_path

CONFIRMED, CORRECTED, REJECTED = "confirmed", "corrected", "rejected"
ADDED, RELABELLED, UNCHANGED = "added", "relabelled", "unchanged"
REFUSED = "refused"


@dataclass(frozen=True)
class Found:
    """A file in the review folder: the class folder it sits in, its path, and its content hash.
    ``link`` is the target of a symbolic link (``sha256`` is then "" until the link is checked
    against its manifest row: see :func:`_claim`)."""

    folder: str
    relpath: str
    path: Path
    size: int
    sha256: str
    link: str | None = None

    @property
    def readable(self) -> str:
        """What is opened (with O_NOFOLLOW): the file itself, or the export's own link target."""
        return self.link if self.link is not None else os.fspath(self.path)


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
    one line per item that was left out (not found, not in the manifest, not reviewed) or
    refused (a symbolic link, content other than the manifest's; counted as "refused")."""

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
    counts[REFUSED] = sum(line.endswith(f"; {REFUSED}") for line in (*problems, *more))
    _check_target(data, {item.label for item in items} - {REJECT}, allow_new_classes)
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {data}: {exc.strerror or exc}") from exc
    with output_lock(data):
        with ReviewLog(data / LOG_NAME) as log:
            finish_partial_copies(data, log)  # what a killed run left, before anything is counted
            before = class_balance(data)
            sizes = {item.file.size for item in items}
            index = index_contents(data, sizes)
            for item in items:
                if effect := apply(item, data, index, log):
                    counts[effect] += 1
        after = class_balance(data)
    return ImportResult(data, data / LOG_NAME, before, after, counts, (*problems, *more))


def find_entries(review_dir: Path, rows: list[dict[str, str]]) -> tuple[list[Found], list[str]]:
    """Every image under the class folders of ``review_dir``, hashed; the problems are the
    folders and files refused: symbolic links to folders, anything but a regular file or a
    symbolic link (links are checked against the manifest later), files that cannot be read."""
    extensions = set(IMAGE_EXTENSIONS) | {os.path.splitext(r["entry"])[1].lower() for r in rows} - {""}
    found, problems = [], []
    for top in listing(review_dir):
        if top.name.startswith(".") or top.name == labelstudio.FOLDER:
            continue
        if top.is_symlink():
            if top.is_dir():
                problems.append(f"{escape_name(top.name)}/: a symbolic link to a folder; {REFUSED}")
            continue
        if not top.is_dir(follow_symlinks=False):
            continue
        folder = escape_name(top.name)
        for path, relpath, refusal in _walk(Path(top.path), f"{folder}/", extensions):
            if refusal:
                problems.append(f"{relpath}: {refusal}; {REFUSED}")
                continue
            try:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    found.append(Found(folder, relpath, path, 0, "", os.readlink(path)))
                elif stat.S_ISREG(st.st_mode):
                    digest, size = hash_regular(path)
                    found.append(Found(folder, relpath, path, size, digest))
                else:
                    problems.append(f"{relpath}: not a regular file; {REFUSED}")
            except OSError as exc:
                problems.append(f"{relpath}: cannot read ({exc.strerror or exc}); {REFUSED}")
    return found, problems


def _walk(root: Path, prefix: str, extensions: set[str]) -> Iterator[tuple[Path, str, str | None]]:
    """(path, relpath, refusal) of each file with a wanted extension under ``root``, links not
    followed: a symbolic link to a folder, and a folder that cannot be listed, come back as a
    refusal. Hidden names are skipped, like the walker does."""
    stack = [(root, prefix)]
    while stack:
        folder, text = stack.pop()
        try:
            with os.scandir(folder) as it:
                children = sorted(it, key=lambda e: e.name, reverse=True)
        except OSError as exc:
            yield folder, text.rstrip("/") + "/", f"cannot list ({exc.strerror or exc})"
            continue
        files = []
        for child in children:
            if child.name.startswith("."):
                continue
            relpath = text + escape_name(child.name)
            if child.is_dir(follow_symlinks=False):
                stack.append((Path(child.path), relpath + "/"))
            elif child.is_symlink() and child.is_dir():
                files.append((Path(child.path), relpath + "/", "a symbolic link to a folder"))
            elif os.path.splitext(child.name)[1].lower() in extensions:
                files.append((Path(child.path), relpath, None))
        yield from reversed(files)


def from_tree(rows: list[dict[str, str]], found: list[Found]) -> tuple[list[Reviewed], list[str]]:
    """Each manifest row with the folder its entry was found in: a class, or REJECT."""
    claimed, problems, refused = _claim(rows, found)
    items = []
    for row in rows:
        files = claimed.get(row["entry"], [])
        folders = sorted({f.folder for f in files})
        if len(folders) > 1:
            problems.append(f"{row['entry']}: found in several folders ({', '.join(folders)}); left out")
        elif files:
            items.append(Reviewed(row, files[0].folder, files[0]))
        elif row["entry"] not in refused:
            problems.append(f"{row['entry']}: not found in the review folder; left out")
    return items, problems


def from_label_studio(
    rows: list[dict[str, str]], found: list[Found], verdicts: list[labelstudio.Verdict]
) -> tuple[list[Reviewed], list[str]]:
    """Each manifest row with the class its latest Label Studio annotation chose."""
    claimed, problems, refused = _claim(rows, found)
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
            elif row["entry"] not in refused:
                problems.append(f"{row['entry']}: not found in the review folder; left out")
    problems += [
        f"{r['entry']}: no annotation in the export; left out" for r in rows if r["entry"] not in seen
    ]
    return items, problems


def _claim(
    rows: list[dict[str, str]], found: list[Found]
) -> tuple[dict[str, list[Found]], list[str], set[str]]:
    """Map found files to manifest entries: by file name, else by content (a renamed entry).

    A file matched by name must hold the row's ``sha256``; a symbolic link is taken only when it
    is the one ``review export --link`` wrote (it leads to the row's ``source_path``, a regular
    file with the row's bytes) and is matched by name, never by reading what it leads to. Each
    file that fails is a problem ending in "refused"; the entries it was matched to come back too.
    """
    by_name = {PurePosixPath(r["entry"]).name: r for r in rows}
    by_sha = {r["sha256"]: r for r in reversed(rows) if r["sha256"]}
    claimed: dict[str, list[Found]] = defaultdict(list)
    problems, refused = [], set()
    for file in found:
        row = by_name.get(PurePosixPath(file.relpath).name)
        if file.link is not None:
            file, why = _check_link(file, row)
        elif row is not None and row["sha256"] and row["sha256"] != file.sha256:
            why = f"its bytes are not the manifest's (sha256 {file.sha256[:16]}, not {row['sha256'][:16]})"
        else:
            row, why = row or by_sha.get(file.sha256), None
        if why:
            problems.append(f"{file.relpath}: {why}; {REFUSED}")
            if row is not None:
                refused.add(row["entry"])
        elif row is None:
            problems.append(f"{file.relpath}: not in the manifest; left alone")
        else:
            claimed[row["entry"]].append(file)
    return claimed, problems, refused - set(claimed)


def _check_link(file: Found, row: dict[str, str] | None) -> tuple[Found, str | None]:
    """The link ``file`` hashed (and None), or why it is refused."""
    if row is None:
        return file, "a symbolic link that is not a manifest entry"
    if not os.path.isabs(file.link) or file.link != os.path.abspath(row["source_path"]):
        return file, f"a symbolic link to {file.link}, not to the entry's source"
    try:
        digest, size = hash_regular(file.link)
    except OSError as exc:
        return file, f"a symbolic link whose source cannot be read ({exc.strerror or exc})"
    if digest != row["sha256"]:
        return file, "a symbolic link whose source is no longer the exported bytes"
    return Found(file.folder, file.relpath, file.path, size, digest, file.link), None


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


def apply(item: Reviewed, data: Path, index: dict[str, list[tuple[str, Path]]], log: ReviewLog) -> str | None:
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
        copy_in(item.file, dest, lambda: log.write("add", item, "", dest))
        index[sha] = [(label, dest)]
        return ADDED
    kept = [(c, p) for c, p in held if c == label]
    for old_label, old in others:
        dest = data / label / f"{sha[:16]}{old.suffix.lower()}"
        check_free(dest, twins={p for _, p in kept})
        if log.last.get(sha) != ("relabel", rel(dest, data), rel(old, data)):
            log.write("relabel", item, old_label, dest, old)  # else logged by a run killed before the move
        move(old, dest, twins={p for _, p in kept})
        kept.append((label, dest))
    index[sha] = kept
    return RELABELLED
