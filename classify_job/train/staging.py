"""A trained bundle appears whole or not at all.

Training writes every file into a hidden staging folder inside the bundle folder, then moves them
in. ``bundle.json`` is what makes a folder a bundle (``classify``, ``promote`` and ``evaluate``
refuse a folder without it), so it goes first when an old bundle is overwritten and last when the
new one is moved in. A kill at any point leaves either the old bundle, no bundle, or the new one;
never a bundle without its calibration or exports. The next ``train`` into that folder deletes
what a killed one staged.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from classify_job.bundle import SPEC_FILE
from classify_job.errors import OutputError
from classify_job.predictions import fsync_dir, fsync_file

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"


@contextmanager
def staged_bundle(out_dir: Path) -> Iterator[Path]:
    """Yield a staging folder to write the bundle into; on success its files replace ``out_dir``'s
    bundle, on failure (or a kill, on the next run) it is deleted."""
    remove_stale_staging(out_dir)
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    except OSError as exc:
        raise OutputError(f"cannot write into {out_dir}: {exc.strerror or exc}") from exc
    try:
        yield staging
        _move_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(out_dir: Path) -> int:
    """Delete what killed trainings staged in ``out_dir``; how many folders went."""
    stale = [p for p in out_dir.glob(f"{STAGING_PREFIX}*") if p.is_dir() and not p.is_symlink()]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    if stale:
        log.info("removed %d unfinished bundle folder(s) left by a killed train in %s", len(stale), out_dir)
    return len(stale)


def _move_in(staging: Path, out_dir: Path) -> None:
    if not (staging / SPEC_FILE).is_file():
        raise OutputError(f"training wrote no {SPEC_FILE} in {staging}")
    try:
        _sync_files(staging)
        (out_dir / SPEC_FILE).unlink(missing_ok=True)  # an old bundle stops being one first
        fsync_dir(out_dir)
        for entry in sorted(staging.iterdir()):
            if entry.name != SPEC_FILE:
                _replace(entry, out_dir / entry.name)
        os.replace(staging / SPEC_FILE, out_dir / SPEC_FILE)
        fsync_dir(out_dir)
    except OSError as exc:
        raise OutputError(f"cannot move the new bundle into {out_dir}: {exc.strerror or exc}") from exc


def _replace(source: Path, target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(source, target)


def _sync_files(folder: Path) -> None:
    """fsync every file under ``folder`` (Keras and matplotlib do not), so a rename never makes
    a file visible before its bytes are on disk."""
    for directory, _, names in os.walk(folder):
        for name in names:
            fsync_file(os.path.join(directory, name))
        fsync_dir(Path(directory))
