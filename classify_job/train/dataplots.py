"""What ``check-data --out DIR`` leaves behind: a contact sheet per class, the class balance, and the
files it flags, as thumbnails and as a CSV of duplicate pairs.

Thumbnails are decoded through :mod:`classify_job.imageio` (JPEG draft mode) and only for the files
shown: a few sampled per class and the flagged ones (at most :data:`MAX_SUSPECT_ROWS` rows), so a
sheet costs the same on a thousand images as on a million. All four files are written on every
run, so a rerun into the same folder never leaves a stale one behind.
"""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ImageOps

from classify_job import atomic
from classify_job.errors import ImageDecodeError, InputError, OutputError
from classify_job.imageio import flatten, open_image
from classify_job.train.checkdata import IMBALANCE_WARNING, DataReport, FileInfo
from classify_job.train.plots import pyplot, save_figure

SAMPLES_PER_CLASS = 6
THUMB_PX = 112
MAX_SHEET_CLASSES = 100
MAX_SUSPECT_ROWS = 40
NEAR_DUPLICATE_COLUMNS = (
    *("group", "kind", "file_a", "class_a", "file_b", "class_b"),
    *("different_classes", "distance", "sha256"),
)
_CAPTION_PX = 30
_GAP_PX = 8
_CAPTION_CHARS = 21  # what fits under a THUMB_PX thumbnail at 6 points
_DPI = 110  # plots.save_figure's: the mosaic is drawn about one pixel per pixel
_THUMB_WORKERS = 4  # Pillow releases the GIL while decoding


@dataclass(frozen=True)
class DataFiles:
    """The files :func:`write_data_files` wrote, and how much it flagged."""

    samples: Path
    class_balance: Path
    near_duplicates: Path
    suspects: Path
    duplicate_pairs: int
    suspect_rows: int


@dataclass(frozen=True)
class Tile:
    """One thumbnail of a sheet (``path`` None: known to be unreadable) and its caption."""

    path: str | None
    caption: str


@dataclass(frozen=True)
class SheetRow:
    """One row of a sheet: its label at the left, then its tiles."""

    label: str
    tiles: tuple[Tile, ...]


def prepare_output_dir(out: str | os.PathLike, data: str | os.PathLike) -> Path:
    """Create ``out`` (an OutputError when it cannot be); refuse a visible folder inside ``data``,
    whose pictures the next check or training run would read as a class."""
    out, data = Path(out), Path(data)
    if data.is_dir() and _visible_inside(out, data):
        raise InputError(
            f"--out is a folder inside the dataset, whose images would then count as a class; "
            f"choose one outside it (or a hidden one). Received: {out}"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
    return out


def write_data_files(
    report: DataReport, out: str | os.PathLike, seed: int = 0, per_class: int = SAMPLES_PER_CLASS
) -> DataFiles:
    """Write samples.png, class_balance.png, near_duplicates.csv and suspects.png into ``out``."""
    out = prepare_output_dir(out, report.root)
    paths = [
        out / name for name in ("samples.png", "class_balance.png", "near_duplicates.csv", "suspects.png")
    ]
    plot_samples(report, paths[0], per_class, seed)
    plot_class_balance(report, paths[1])
    pairs = write_near_duplicates_csv(report, paths[2])
    rows = plot_suspects(report, paths[3], per_class)
    return DataFiles(*paths, duplicate_pairs=pairs, suspect_rows=rows)


def write_near_duplicates_csv(report: DataReport, path: Path) -> int:
    """One row per flagged pair (exact copies: the group's first file with each other one; near
    duplicates: the measured pairs that join the group), numbered by group. Returns the row count."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, NEAR_DUPLICATE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    rows = list(duplicate_pairs(report))
    writer.writerows(rows)
    atomic.write_text(path, buffer.getvalue())
    return len(rows)


def duplicate_pairs(report: DataReport) -> Iterator[dict]:
    """The rows of near_duplicates.csv: exact-duplicate groups first, then near-duplicate groups."""
    group = 0
    for exact in report.duplicates:
        group += 1
        for other in range(1, len(exact.relpaths)):
            yield _pair(group, "exact_duplicate", exact.relpaths, exact.labels, 0, other, 0.0, exact.sha256)
    for near in report.near_duplicates:
        group += 1
        for i, j, distance in near.links:
            yield _pair(group, "near_duplicate", near.relpaths, near.labels, i, j, distance, "")


def _pair(group, kind, relpaths, labels, i, j, distance, sha256) -> dict:
    return {
        "group": group,
        "kind": kind,
        "file_a": relpaths[i],
        "class_a": labels[i],
        "file_b": relpaths[j],
        "class_b": labels[j],
        "different_classes": labels[i] != labels[j],
        "distance": distance,
        "sha256": sha256,
    }


def plot_samples(report: DataReport, path: Path, per_class: int = SAMPLES_PER_CLASS, seed: int = 0) -> None:
    """A contact sheet: one row per class (its name and image count), ``per_class`` images each,
    chosen at random with ``seed``; the first MAX_SHEET_CLASSES classes when there are more."""
    chosen = sample_files(report, per_class, seed)
    rows = [
        SheetRow(
            f"{label}\n{report.class_counts.get(label, 0)} images",
            tuple(Tile(info.path, _fit(Path(info.relpath).name)) for info in chosen[label]),
        )
        for label in report.classes[:MAX_SHEET_CLASSES]
    ]
    shown = "" if len(report.classes) <= MAX_SHEET_CLASSES else f", first {MAX_SHEET_CLASSES}"
    title = (
        f"{report.root.name}: up to {per_class} random images per class (seed {seed}); "
        f"{len(report.classes)} classes{shown}"
    )
    draw_sheet(rows, title, path, empty="no class folders found")


def sample_files(report: DataReport, per_class: int, seed: int) -> dict[str, list[FileInfo]]:
    """Up to ``per_class`` readable files of each class, chosen with ``seed``, in walk order."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[FileInfo]] = defaultdict(list)
    for info in report.files:
        if not info.error:
            by_class[info.label].append(info)
    chosen = {}
    for label in report.classes:
        members = by_class[label]
        picks = rng.choice(len(members), min(per_class, len(members)), replace=False) if members else []
        chosen[label] = [members[k] for k in sorted(picks)]
    return chosen


def plot_class_balance(report: DataReport, path: Path) -> None:
    """Readable images per class (stacked by split for a train/val/test tree); classes below a
    third of the median count are marked red."""
    labels = list(report.class_counts)
    if not labels:
        draw_message(f"{report.root}: no class folders found", path)
        return
    plt = pyplot()
    counts = np.array([report.class_counts[label] for label in labels])
    median = float(np.median(counts))
    low = counts < median / IMBALANCE_WARNING
    y = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8.5, min(1.8 + 0.3 * len(labels), 120)))
    if report.layout == "presplit":
        left = np.zeros(len(labels))
        for split, per_class in report.split_counts.items():
            values = np.array([per_class.get(label, 0) for label in labels])
            ax.barh(y, values, left=left, label=split)
            left += values
    else:
        ax.barh(y, counts, color=np.where(low, "tab:red", "tab:blue"))
    for yi, count, is_low in zip(y, counts, low, strict=True):
        note = f" {count}  far below the median" if is_low else f" {count}"
        ax.text(count, yi, note, va="center", fontsize=8, color="tab:red" if is_low else "black")
    ax.axvline(median, color="black", linestyle="--", linewidth=1, label=f"median {median:g}")
    ax.axvline(median / IMBALANCE_WARNING, color="tab:red", linestyle=":", linewidth=1, label="median / 3")
    ax.set_yticks(y, labels)
    for tick, is_low in zip(ax.get_yticklabels(), low, strict=True):
        tick.set_color("tab:red" if is_low else "black")
    ax.invert_yaxis()
    ratio = f"{report.imbalance_ratio:.1f}x" if np.isfinite(report.imbalance_ratio) else "an empty class"
    title = f"Images per class: {counts.sum()} readable in {len(labels)} classes, largest/smallest {ratio}"
    ax.set(xlabel="readable images", xlim=(0, counts.max() * 1.35 + 1), title=title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def plot_suspects(report: DataReport, path: Path, per_row: int = SAMPLES_PER_CLASS) -> int:
    """Thumbnails of what check-data flags, one row per duplicate group, a row per ``per_row``
    unreadable or misnamed files; most serious first, at most MAX_SUSPECT_ROWS rows. With nothing
    flagged, a one-line "nothing flagged" image. Returns the number of rows there were."""
    rows = suspect_rows(report, per_row)
    total = len(rows)
    shown = f"{total} rows" if total <= MAX_SUSPECT_ROWS else f"first {MAX_SUSPECT_ROWS} of {total} rows"
    title = f"{report.root.name}: what check-data flags ({shown})\nevery duplicate pair: near_duplicates.csv"
    empty = "nothing flagged: no unreadable files, exact or near duplicates, or misnamed formats"
    draw_sheet(rows[:MAX_SUSPECT_ROWS], title, path, empty=f"{report.root}: {empty}")
    return total


def suspect_rows(report: DataReport, per_row: int) -> list[SheetRow]:
    """Sheet rows for the flagged files: duplicates under different labels, then unreadable files,
    duplicates within one label, and files whose content is not their extension."""
    paths = {info.relpath: info.path for info in report.files}

    def group_row(kind: str, group, detail: str) -> SheetRow:
        classes = "classes differ" if group.conflicting else "same class"
        more = f"; {len(group.relpaths) - per_row} more" if len(group.relpaths) > per_row else ""
        tiles = tuple(
            Tile(paths.get(relpath), f"{_fit(relpath)}\n{_fit(label)}")
            for relpath, label in zip(group.relpaths[:per_row], group.labels[:per_row], strict=True)
        )
        return SheetRow(f"{kind}, {len(group.relpaths)} files{more}\n{classes}{detail}", tiles)

    def near_row(group) -> SheetRow:
        return group_row("near duplicates", group, f"\ndistance <= {group.max_distance:.3f}")

    unreadable = [Tile(None, f"{_fit(b.relpath)}\n{b.reason[:_CAPTION_CHARS]}") for b in report.corrupt]
    misnamed = [
        Tile(paths.get(m.relpath), f"{_fit(m.relpath)}\nis {m.actual_format}")
        for m in report.format_mismatches
    ]
    return [
        *(group_row("exact copies", g, "") for g in report.duplicates if g.conflicting),
        *(near_row(g) for g in report.near_duplicates if g.conflicting),
        *(SheetRow("unreadable", chunk) for chunk in _chunks(unreadable, per_row)),
        *(group_row("exact copies", g, "") for g in report.duplicates if not g.conflicting),
        *(near_row(g) for g in report.near_duplicates if not g.conflicting),
        *(SheetRow("content is not\nits extension", chunk) for chunk in _chunks(misnamed, per_row)),
    ]


def draw_sheet(rows: list[SheetRow], title: str, path: Path, empty: str) -> None:
    """Draw ``rows`` of thumbnails as one image (one matplotlib image, however many tiles); with no
    rows, the line ``empty``."""
    if not rows:
        draw_message(empty, path)
        return
    plt = pyplot()
    columns = max(1, *(len(row.tiles) for row in rows))
    cell_w, cell_h = THUMB_PX + _GAP_PX, THUMB_PX + _CAPTION_PX
    mosaic = np.full((len(rows) * cell_h, columns * cell_w, 3), 255, np.uint8)
    thumbs = make_thumbnails([tile.path for row in rows for tile in row.tiles if tile.path], THUMB_PX)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.4 + mosaic.shape[1] / _DPI), 0.8 + mosaic.shape[0] / _DPI))
    for r, row in enumerate(rows):
        if not row.tiles:
            ax.text(0, r * cell_h + THUMB_PX / 2, "no readable images", va="center", fontsize=8, color="grey")
        for c, tile in enumerate(row.tiles):
            x, y = c * cell_w, r * cell_h
            if not _paste(mosaic, thumbs.get(tile.path) if tile.path else None, x, y):
                ax.text(
                    x + THUMB_PX / 2, y + THUMB_PX / 2, "unreadable", ha="center", va="center", fontsize=7
                )
            ax.text(x + THUMB_PX / 2, y + THUMB_PX + 2, tile.caption, ha="center", va="top", fontsize=6)
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_yticks(
        [r * cell_h + THUMB_PX / 2 for r in range(len(rows))], [row.label for row in rows], fontsize=8
    )
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9, loc="left")
    save_figure(fig, path)


def draw_message(text: str, path: Path) -> None:
    """A small image holding one line of text (an empty sheet says so rather than being absent)."""
    fig, ax = pyplot().subplots(figsize=(max(4.0, 0.075 * len(text)), 0.9))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9)
    ax.set_axis_off()
    save_figure(fig, path)


def make_thumbnails(paths: list[str], px: int) -> dict[str, np.ndarray | None]:
    """RGB thumbnails (longest side ``px``) of ``paths``, None for a file that cannot be decoded."""
    with ThreadPoolExecutor(_THUMB_WORKERS) as pool:
        return dict(zip(paths, pool.map(lambda p: thumbnail(p, px), paths), strict=True))


def thumbnail(path: str, px: int) -> np.ndarray | None:
    """One file as an RGB array no larger than ``px`` on a side, decoded with JPEG draft mode."""
    try:
        with open_image(path, draft=("RGB", (px, px))) as opened:
            img = ImageOps.exif_transpose(opened.image)
            img.thumbnail((px, px))
            return np.asarray(flatten(img).convert("RGB"))
    except (ImageDecodeError, OSError):  # changed or vanished since check-data read it
        return None


def _paste(mosaic: np.ndarray, thumb: np.ndarray | None, x: int, y: int) -> bool:
    """Centre ``thumb`` in the cell at (x, y), or grey the cell when there is none."""
    if thumb is None:
        mosaic[y : y + THUMB_PX, x : x + THUMB_PX] = 229
        return False
    h, w = thumb.shape[:2]
    top, left = y + (THUMB_PX - h) // 2, x + (THUMB_PX - w) // 2
    mosaic[top : top + h, left : left + w] = thumb
    return True


def _fit(text: str, chars: int = _CAPTION_CHARS) -> str:
    """``text`` shortened from the left to ``chars`` characters (a file's name is at its end)."""
    return text if len(text) <= chars else "…" + text[-(chars - 1) :]


def _chunks(items: list[Tile], size: int) -> Iterator[tuple[Tile, ...]]:
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])


def _visible_inside(out: Path, data: Path) -> bool:
    try:
        inside = out.resolve().relative_to(data.resolve())
    except ValueError:
        return False
    return not any(part.startswith(".") for part in inside.parts)
