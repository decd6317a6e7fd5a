"""``OUT/report.html``: one self-contained page about a classify run, built from the Parquet output.

The rows shown come from one streaming pass (:mod:`classify_job.report.showcase`), so a run of
millions of images costs a few columns of memory per batch; only the kept rows are decoded into
thumbnails (:mod:`classify_job.report.thumbnails`); :mod:`classify_job.report.page` renders it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from classify_job import atomic
from classify_job.bundle import BundleSpec, read_spec
from classify_job.decisions.rule import DEFAULT_MARGIN, DEFAULT_THRESHOLD, check_review_settings
from classify_job.errors import BundleError, InputError
from classify_job.predictions import list_parts, read_part_metadata
from classify_job.report.page import render_page
from classify_job.report.showcase import collect_showcase
from classify_job.report.summary import build_summary, write_summary
from classify_job.report.thumbnails import make_thumbnails

REPORT_HTML = "report.html"


def write_html_report(
    out: Path,
    summary: dict[str, Any] | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    margin: float = DEFAULT_MARGIN,
    per_label: int = 12,
    review_limit: int = 200,
    thumb_px: int = 128,
    bundle: tuple[Path, BundleSpec] | None = None,
) -> Path:
    """Write ``OUT/report.html`` from the Parquet predictions (and the model bundle, if it still
    exists) and return its path.

    Sections: run facts, images per label, confidence histograms, errors by reason, per label the
    ``per_label`` most and least confident images, the review queue (confidence < ``threshold`` or
    top two probabilities less than ``margin`` apart, least confident first, at most
    ``review_limit`` shown) and the bundle's evaluation metrics. ``summary`` is the one the
    caller just built from the same predictions; it is built here when not given. ``bundle`` is
    the (path, spec) of the model the caller ran; else it is found from the last part's footer.
    """
    out = Path(out)
    _check_settings(threshold, margin, per_label=per_label, review_limit=review_limit, thumb_px=thumb_px)
    summary = build_summary(out) if summary is None else summary
    samples = collect_showcase(out, threshold, margin, per_label, review_limit)
    thumbs = make_thumbnails(samples.paths(), thumb_px)
    page = render_page(out, summary, samples, thumbs, _model_facts(out, summary.get("model_id"), bundle))
    path = out / REPORT_HTML
    atomic.write_text(path, page)
    return path


def _check_settings(threshold: float, margin: float, **counts: int) -> None:
    check_review_settings(threshold, margin)
    for name, value in counts.items():
        if value < 1:
            raise InputError(f"{name} must be at least 1. Received: {value}")


def _model_facts(out: Path, model_id: str | None, known: tuple[Path, BundleSpec] | None) -> dict[str, Any]:
    """The bundle the latest run used, if it still exists: spec, metrics.json, confusion matrix."""
    if known is None:
        parts = list_parts(out)
        path = read_part_metadata(parts[-1]).get("model_path") if parts else None
        if not path:
            return {"note": "the run did not record its model bundle"}
        try:
            known = (Path(path), read_spec(path))
        except BundleError as exc:
            return {"note": str(exc), "path": str(path)}
    bundle, spec = known
    facts: dict[str, Any] = {"path": str(bundle), "spec": spec, **_evaluation_files(bundle)}
    if spec.model_id != model_id:
        facts["note"] = f"the bundle now holds model {spec.model_id}, not {model_id} that wrote these rows"
    return facts


def _evaluation_files(bundle: Path) -> dict[str, Any]:
    """metrics.json, confusion_matrix.png and calibration.png as training wrote them, if present."""
    files: dict[str, Any] = {}
    try:
        if (bundle / "metrics.json").is_file():
            files["metrics"] = json.loads((bundle / "metrics.json").read_text(encoding="utf-8"))
        for name in ("confusion_matrix", "calibration"):
            if (bundle / f"{name}.png").is_file():
                files[f"{name}_png"] = base64.b64encode((bundle / f"{name}.png").read_bytes()).decode()
    except (OSError, ValueError) as exc:
        files["note"] = f"cannot read the bundle's evaluation files: {exc}"
    return files


def write_reports(out: Path, **html_options: Any) -> tuple[dict[str, Any], Path]:
    """Rebuild ``summary.json``/``summary.md`` and ``report.html`` from one summary; returns both."""
    check_review_settings(
        html_options.get("threshold", DEFAULT_THRESHOLD), html_options.get("margin", DEFAULT_MARGIN)
    )
    summary = write_summary(out)
    return summary, write_html_report(out, summary, **html_options)
