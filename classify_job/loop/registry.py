"""The model registry: ``registry.json`` (the current model, the frozen holdout's fingerprint and
the history of every promotion and refusal with its evidence), immutable copies of promoted
bundles in ``bundles/`` and the ``current`` link that classify runs use.

``registry.json`` is the record. It is written before ``current`` is switched, so a crash between
the two leaves the old model in use and the next promotion switches the link.

A candidate holding a symbolic link is refused (BundleError): its copy in ``bundles/`` must hold
the bundle's own bytes, not whatever a link leads to. The copy is written into a hidden
temporary folder and renamed into place; what a killed promotion left (``bundles/.*.tmp-PID``,
``.current.tmp-PID``) is removed by the next one, under the registry's lock.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import stat
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classify_job import atomic
from classify_job.bundle import SPEC_FILE, BundleSpec, load_bundle, read_spec
from classify_job.classify.lock import output_lock
from classify_job.errors import BundleError, OutputError, PromotionRefused
from classify_job.hashing import content_hash
from classify_job.loop.gate import (
    Comparison,
    Holdout,
    PromoteConfig,
    compare,
    read_holdout,
    too_few,
    training_overlap,
)
from classify_job.loop.shadow import ShadowFlips, shadow_flips
from classify_job.predictions import require_predictions

log = logging.getLogger(__name__)

REGISTRY_FILE = "registry.json"
CURRENT = "current"
BUNDLES = "bundles"
FORMAT_VERSION = 1
_PARTIAL = re.compile(r"^\..*\.tmp-\d+")  # atomic.temporary_name's hidden names


@dataclass(frozen=True)
class Registry:
    """What ``registry.json`` holds (all None and empty before the first promotion)."""

    root: Path
    current: dict[str, Any] | None = None
    holdout: dict[str, Any] | None = None
    history: tuple[dict[str, Any], ...] = ()

    def current_bundle(self) -> Path | None:
        """The registry's copy of the current model, or None for an empty registry."""
        return self.root / self.current["bundle"] if self.current else None

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "current": self.current,
            "holdout": self.holdout,
            "history": list(self.history),
        }


def read_registry(root: Path) -> Registry:
    """The registry in ``root``; an empty one when it has no ``registry.json`` yet."""
    path = Path(root) / REGISTRY_FILE
    if not path.exists():
        return Registry(Path(root))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Registry(Path(root), data.get("current"), data.get("holdout"), tuple(data.get("history", ())))
    except (OSError, ValueError, AttributeError) as exc:
        raise OutputError(f"cannot read the registry {path}: {exc}") from exc


def write_registry(registry: Registry) -> None:
    atomic.write_json(registry.root / REGISTRY_FILE, registry.to_json())


@dataclass(frozen=True)
class Promotion:
    """The gate's verdict on one candidate and its evidence (``reasons`` empty: promoted)."""

    source: Path
    model_id: str
    reasons: tuple[str, ...]
    holdout: dict[str, Any]
    margins: dict[str, float]
    comparison: Comparison | None = None
    shadow: ShadowFlips | None = None
    bundle: Path | None = None  # the registry's copy, once promoted

    @property
    def promoted(self) -> bool:
        return not self.reasons

    def event(self, at: str, previous: str | None) -> dict[str, Any]:
        """The history entry: what was decided, when, about what, and on what evidence."""
        c = self.comparison
        return {
            "event": "promoted" if self.promoted else "refused",
            "at": at,
            "model_id": self.model_id,
            "source": str(self.source),
            "bundle": None if self.bundle is None else f"{BUNDLES}/{self.bundle.name}",
            "previous": previous,
            "reasons": list(self.reasons),
            "holdout": self.holdout,
            "margins": self.margins,
            "figures": None if c is None else _figures(c),
            "bootstrap": None if c is None or c.bootstrap is None else dataclasses.asdict(c.bootstrap),
            "shadow": None if self.shadow is None else self.shadow.to_dict(),
        }


def _figures(c: Comparison) -> dict[str, Any]:
    models = {"candidate": c.candidate, "current": c.current}
    return {name: dataclasses.asdict(f) for name, f in models.items() if f is not None}


def promote(config: PromoteConfig) -> Promotion:
    """Judge ``config.bundle`` against the registry's current model and promote it or refuse it.

    Both outcomes are recorded in the registry's history. Raises PromotionRefused (carrying the
    Promotion as ``evidence``) on a refusal; ``current`` is then untouched.
    """
    config = dataclasses.replace(config, bundle=config.bundle.resolve())  # one bundle, even via a link
    spec = read_spec(config.bundle)
    refuse_links(config.bundle)
    if config.shadow is not None:
        require_predictions(config.shadow)
    root = _registry_root(config.registry)
    with output_lock(root):
        remove_partial_copies(root)
        registry = read_registry(root)
        _check_link(registry)
        holdout = read_holdout(config.holdout, spec)
        promotion = Promotion(config.bundle, spec.model_id, (), holdout.describe(), config.margins())
        if reasons := _holdout_problems(holdout, registry, config, spec):
            promotion = dataclasses.replace(promotion, reasons=reasons)  # not evaluated
        else:
            promotion = _judge(promotion, registry, holdout, config)
        if not promotion.promoted:
            _record(registry, promotion)
            raise PromotionRefused(f"promotion refused: {'; '.join(promotion.reasons)}", evidence=promotion)
        promotion = dataclasses.replace(promotion, bundle=install_bundle(root, config.bundle, spec))
        _record(registry, promotion)
        point_current(root, promotion.bundle)
    return promotion


def _registry_root(root: Path) -> Path:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the registry folder {root}: {exc.strerror or exc}") from exc
    link = root / CURRENT
    if link.exists() and not link.is_symlink():
        raise OutputError(f"{link} is not the registry's link (a real folder or file is there); move it away")
    return root


def _check_link(registry: Registry) -> None:
    """Warn when ``current`` does not lead to the recorded current model (a crash between the two
    writes); the registry is the record, and the next promotion switches the link."""
    recorded, link = registry.current_bundle(), registry.root / CURRENT
    if recorded is not None and link.resolve() != recorded.resolve():
        log.warning("%s does not point at the recorded current model %s", link, recorded)


def _holdout_problems(
    holdout: Holdout, registry: Registry, config: PromoteConfig, spec: BundleSpec
) -> tuple[str, ...]:
    """Why this holdout cannot judge this candidate against this registry (empty: it can)."""
    problems = [too_few(holdout)]
    known = (registry.holdout or {}).get("fingerprint")
    if known and known != holdout.fingerprint() and not config.accept_new_holdout:
        problems.append(
            f"the holdout {config.holdout} (fingerprint {holdout.fingerprint()}) is not the registry's "
            f"frozen holdout ({known}, {registry.holdout.get('path')}); "
            "pass --accept-new-holdout to replace it"
        )
    problems.append(training_overlap(holdout, config.bundle, spec))
    current = registry.current_bundle()
    if current is not None and set(read_spec(current).labels) != set(spec.labels):
        problems.append(
            f"the candidate's labels {list(spec.labels)} differ from the current model's "
            f"{list(read_spec(current).labels)}; the gate compares models with the same labels"
        )
    return tuple(p for p in problems if p)


def _judge(promotion: Promotion, registry: Registry, holdout: Holdout, config: PromoteConfig) -> Promotion:
    """Evaluate both models on the holdout (and the shadow run) and attach the verdict."""
    candidate = load_bundle(config.bundle)
    current_dir = registry.current_bundle()
    current = load_bundle(current_dir) if current_dir is not None else None
    comparison = compare(candidate, current, holdout, config)
    shadow = None
    if config.shadow is not None:
        shadow = shadow_flips(config.shadow, candidate, current, config.shadow_limit, config.seed)
    return dataclasses.replace(promotion, comparison=comparison, shadow=shadow, reasons=comparison.reasons)


def _record(registry: Registry, promotion: Promotion) -> Registry:
    """Append the event to the history; on a promotion also the new current model and holdout."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    previous = (registry.current or {}).get("model_id")
    updated = dataclasses.replace(registry, history=(*registry.history, promotion.event(at, previous)))
    if promotion.promoted:
        current = {
            "model_id": promotion.model_id,
            "bundle": f"{BUNDLES}/{promotion.bundle.name}",
            "promoted_at": at,
            "source": str(promotion.source),
        }
        updated = dataclasses.replace(
            updated, current=current, holdout={**promotion.holdout, "recorded_at": at}
        )
    write_registry(updated)
    return updated


def refuse_links(bundle: Path) -> None:
    """BundleError when anything under ``bundle`` is a symbolic link (or not a file or folder)."""
    stack = [bundle]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                children = list(it)
        except OSError as exc:
            raise BundleError(f"cannot list {folder}: {exc.strerror or exc}") from exc
        for child in children:
            mode = child.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                raise BundleError(
                    f"{child.path} is a symbolic link (to {os.readlink(child.path)}); a candidate "
                    "bundle must hold its own files, so copy them into it"
                )
            if stat.S_ISDIR(mode):
                stack.append(Path(child.path))
            elif not stat.S_ISREG(mode):
                raise BundleError(f"{child.path} is not a regular file; a bundle holds files and folders")


def remove_partial_copies(root: Path) -> list[Path]:
    """Remove what a killed promotion left: hidden temporary bundle copies in ``bundles/`` and
    temporary ``current`` links. Called under the registry's lock, so none is being written."""
    removed = []
    for folder in (root / BUNDLES, root):
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot list {folder}: {exc.strerror or exc}") from exc
        for entry in entries:
            if not _PARTIAL.match(entry.name) or (folder == root and entry.is_dir(follow_symlinks=False)):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError as exc:
                raise OutputError(f"cannot remove the partial copy {entry.path}: {exc}") from exc
            log.info("removed %s, left by a promotion that was stopped", entry.path)
            removed.append(Path(entry.path))
    return removed


def install_bundle(root: Path, source: Path, spec: BundleSpec) -> Path:
    """Copy the bundle into ``root/bundles/<model_id>-<hash of bundle.json>`` (written under a
    temporary name, then renamed): the source may be overwritten by the next training run.
    An identical bundle already there is reused."""
    target = root / BUNDLES / f"{spec.model_id}-{content_hash(source / SPEC_FILE)[:8]}"
    if target.is_dir():
        return target
    tmp = atomic.temporary_name(target)
    try:
        shutil.copytree(source, tmp, symlinks=True)  # a link is copied as one, never followed
        refuse_links(tmp)  # one made since the check: the copy is not installed
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"cannot copy {source} into the registry at {target}: {exc}") from exc
    finally:
        with suppress(OSError):
            shutil.rmtree(tmp)
    read_spec(target)  # the copy is a readable bundle
    return target


def point_current(root: Path, bundle: Path) -> None:
    """Switch ``root/current`` to ``bundle`` with one rename: a reader sees the old or the new link."""
    link = root / CURRENT
    tmp = atomic.temporary_name(link)
    try:
        with suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.path.relpath(bundle, root), tmp)
        os.replace(tmp, link)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink()
        raise OutputError(f"cannot point {link} at {bundle}: {exc.strerror or exc}") from exc
