"""The HTML of ``OUT/report.html``: sections built from a summary, the kept rows and model facts.

Every value that came from data is escaped; images are ``data:`` URIs, so the page is one file.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from classify_job.decisions.card import CURVE_SHARES, curve_cell
from classify_job.loop.drift import ALERT_AT, WATCH_AT
from classify_job.report.showcase import BINS, ReportRow, Showcase


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table from header names (escaped here) and rows of cells that are HTML already."""
    thead = "".join(f"<th>{_e(name)}</th>" for name in head)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f'<table class="{cls}"><thead><tr>{thead}</tr></thead><tbody>{body}</tbody></table>'


def _td(value: Any, num: bool = False) -> str:
    return f'<td class="num">{_e(value)}</td>' if num else f"<td>{_e(value)}</td>"


def _dl(facts: dict[str, Any]) -> str:
    return (
        '<dl class="facts">'
        + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts.items())
        + "</dl>"
    )


def render_page(
    out: Path, summary: dict[str, Any], samples: Showcase, thumbs: dict[str, str], model: dict[str, Any]
) -> str:
    """The whole page; every value that came from data is escaped."""
    sections = [
        ("facts", "Run", _run_section(summary)),
        ("labels", "Images per label", _labels_section(summary)),
        ("confidence", "Confidence per label", _confidence_section(samples)),
        ("drift", "Compared with earlier runs", _drift_section(summary)),
        ("errors", "Errors by reason", _errors_section(summary)),
        ("samples", "Most and least confident", _samples_section(samples, thumbs)),
        ("decisions", "Decisions", _decisions_section(summary, model)),
        ("review", "Review queue", _review_section(samples, thumbs)),
        ("model", "Model evaluation", _model_section(model)),
    ]
    nav = " ".join(f'<a href="#{key}">{_e(title)}</a>' for key, title, _ in sections)
    main = "\n".join(
        f'<section id="{key}"><h2>{_e(title)}</h2>{body}</section>' for key, title, body in sections
    )
    title = _e(f"classify-job report: {out.absolute().name}")
    generated = f"generated {_e(summary['generated_at'])} from <code>{_e(out.absolute())}</code>"
    return (
        '<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title>\n<style>{_css()}</style></head>\n"
        f"<body>\n<header><h1>{title}</h1><p>{generated}</p><nav>{nav}</nav></header>\n"
        f"<main>\n{main}\n</main>\n</body>\n</html>\n"
    )


def _run_section(summary: dict[str, Any]) -> str:
    facts = {
        "model": summary["model_id"],
        "run": f"{summary['run_id']} (latest of {summary['runs']})",
        "started": summary["run_started_at"],
        "input": f"{summary['input_dir']} (shard {summary['shard']})",
        "files": f"{summary['files']:,}: {summary['ok']:,} ok, {summary['errors']:,} errors",
        "latest run": f"{summary['classified_in_run']:,} files in {summary['elapsed_s']} s "
        f"({summary['images_per_second']} images/s); {summary['skipped']:,} kept from earlier runs",
    }
    if len(summary["model_ids"]) > 1:
        facts["models in data"] = ", ".join(summary["model_ids"])
    return _dl(facts)


def _labels_section(summary: dict[str, Any]) -> str:
    labels = sorted(summary["labels"].items(), key=lambda item: (-item[1], item[0]))
    if not labels:
        return "<p>No image was classified.</p>"
    top, ok = labels[0][1], max(summary["ok"], 1)
    rows = (
        [_td(label), _td(f"{n:,}", True), _td(f"{n / ok:.1%}", True), _bar_cell(n / top)]
        for label, n in labels
    )
    return _table(("label", "images", "share", ""), rows, "bars")


def _bar_cell(fraction: float) -> str:
    return f'<td class="bar"><span style="width:{100 * fraction:.1f}%"></span></td>'


def _confidence_section(samples: Showcase) -> str:
    if not samples.hist:
        return "<p>No image was classified.</p>"
    charts = "".join(
        f"<figure>{_histogram_svg(samples.hist[label], samples.threshold)}"
        f"<figcaption>{_e(label)}</figcaption></figure>"
        for label in sorted(samples.hist)
    )
    hint = (
        f"Images per confidence bin of width {1 / BINS:g} (hover a bar for its count); "
        f"the dashed line is the review threshold {samples.threshold:g}."
    )
    return f'<p class="hint">{hint}</p><div class="hists">{charts}</div>'


def _histogram_svg(counts: np.ndarray, threshold: float, width: int = 240, height: int = 80) -> str:
    step, peak, n = width / len(counts), max(int(counts.max()), 1), len(counts)
    bars = "".join(
        f'<rect x="{i * step + 1:.1f}" y="{height * (1 - c / peak):.1f}" width="{step - 2:.1f}" '
        f'height="{height * c / peak:.1f}"><title>{i / n:.2f}-{(i + 1) / n:.2f}: {c:,}</title></rect>'
        for i, c in enumerate(counts.tolist())
    )
    y = height + 14
    axis = f'<text x="0" y="{y}">0</text><text x="{width}" y="{y}" text-anchor="end">1</text>'
    axis += f'<line x1="{width * threshold:.1f}" x2="{width * threshold:.1f}" y1="0" y2="{height}"/>'
    return (
        f'<svg class="hist" viewBox="0 0 {width} {height + 16}" width="{width}" height="{height + 16}" '
        f'role="img" aria-label="confidence histogram">{bars}{axis}</svg>'
    )


def _drift_section(summary: dict[str, Any]) -> str:
    """Per signal the PSI and its flag, and the label shares that moved most."""
    drift = summary.get("drift")
    if not drift:
        return "<p>No comparison recorded: no run of this output kept the histograms drift compares.</p>"
    earlier = len(drift["reference_run_ids"])
    against = f"{earlier} earlier run(s)" if earlier else "earlier runs (none recorded histograms yet)"
    parts = [
        f"<p>The readable rows of run <code>{_e(drift['run_id'])}</code> against those of {against} "
        f"of the same model and calibration: <strong>{_e(drift['flag'])}</strong>.</p>"
    ]
    if not drift.get("new"):
        parts.append('<p class="note">The latest run classified nothing readable: this is the latest '
                     "comparison, and it raises no new flag.</p>")  # fmt: skip
    rows = (
        [_td(_SIGNAL_NAMES.get(name, name)), _td(_fmt_psi(s["psi"]), True),
         f"<td>{_flag_html(s['flag'])}</td>", _td(f"{s['rows']:,}", True),
         _td(f"{s['reference_rows']:,}", True), _td(_fmt_psi(s.get("psi_by_chance")), True)]
        for name, s in drift["signals"].items()
    )  # fmt: skip
    parts.append(_table(("signal", "PSI", "flag", "rows", "earlier rows", "PSI by chance"), rows))
    hint = (
        f"Population stability index: from {WATCH_AT:g} watch, from {ALERT_AT:g} alert; a side with "
        f"fewer than {drift['min_rows']:,} rows gives not enough data. Two samples of unchanged data "
        "differ by about the PSI by chance."
    )
    parts.append(f'<p class="hint">{_e(hint)}</p>')
    moved = drift["signals"].get("labels", {}).get("moved")
    if moved:
        parts.append(f"<h3>Label shares that moved most</h3>{_moved_table(moved)}")
    return "".join(parts)


def _moved_table(moved: list[dict[str, Any]]) -> str:
    rows = (
        [_td(m["label"]), _td(f"{m['share']:.1%}", True), _td(f"{m['reference_share']:.1%}", True),
         _td(f"{m['share'] - m['reference_share']:+.1%}", True)]
        for m in moved
    )  # fmt: skip
    return _table(("label", "share", "earlier share", "change"), rows)


_SIGNAL_NAMES = {
    "labels": "label shares",
    "confidence": "confidence histogram",
    "unfamiliar": "unfamiliar-score histogram",
}


def _fmt_psi(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _flag_html(flag: str) -> str:
    return f"<strong>{_e(flag)}</strong>" if flag in ("watch", "alert") else _e(flag)


def _errors_section(summary: dict[str, Any]) -> str:
    reasons = summary["error_reasons"]
    if not reasons:
        return "<p>No errors.</p>"
    rows = [[_td(reason), _td(f"{n:,}", True)] for reason, n in reasons.items()]
    other = summary["errors"] - sum(reasons.values())
    if other:
        rows.append(["<td><em>other reasons</em></td>", _td(f"{other:,}", True)])
    return _table(("reason", "files"), rows)


def _samples_section(samples: Showcase, thumbs: dict[str, str]) -> str:
    if not samples.hist:
        return "<p>No image was classified.</p>"
    return "".join(_label_sheets(samples, label, thumbs) for label in sorted(samples.hist))


def _label_sheets(samples: Showcase, label: str, thumbs: dict[str, str]) -> str:
    count = int(samples.hist[label].sum())
    heading = f"<h3>{_e(label)} <small>{count:,} images</small></h3>"
    if count <= samples.per_label:  # both lists hold every image: show them once
        return f"{heading}{_sheet(samples.top[label].items, thumbs)}"
    return (
        f"{heading}<h4>most confident</h4>{_sheet(samples.top[label].items, thumbs)}"
        f"<h4>least confident</h4>{_sheet(samples.bottom[label].items, thumbs)}"
    )


def _sheet(items: list[ReportRow], thumbs: dict[str, str]) -> str:
    figures = "".join(
        f'<figure>{_img(s, thumbs)}<figcaption title="{_e(s.relpath)}">{s.confidence:.3f}'
        f"<span>{_e(s.relpath)}</span></figcaption></figure>"
        for s in items
    )
    return f'<div class="sheet">{figures}</div>'


def _img(s: ReportRow, thumbs: dict[str, str]) -> str:
    return f'<img src="{thumbs[s.path]}" alt="{_e(s.relpath)}" title="{_e(s.relpath)}">'


def _review_section(samples: Showcase, thumbs: dict[str, str]) -> str:
    shown, total = samples.review.items, samples.review_total
    if not total:
        return "<p>No image needs review.</p>"
    rows = (
        [
            f"<td>{_img(s, thumbs)}</td>",
            f"<td><code>{_e(s.relpath)}</code></td>",
            _td(s.label),
            _td(f"{s.confidence:.3f}", True),
            _td(f"{s.margin:.3f}", True),
            _td(s.reason),
            _td(", ".join(f"{label} {p:.3f}" for label, p in s.top)),
        ]
        for s in shown
    )
    head = ("image", "relpath", "label", "confidence", "margin", "why", "top probabilities")
    rule = (
        "the decision stored with each row; rows classified before decisions were stored: confidence "
        f"under {samples.threshold:g} or top two probabilities less than {samples.margin:g} apart"
    )
    count = f"<p>{total:,} images need review ({_e(rule)}); the {len(shown):,} least confident are shown.</p>"
    return count + _table(head, rows, "review")


def _decisions_section(summary: dict[str, Any], model: dict[str, Any]) -> str:
    """Share accepted, review reasons, and what the rule of the graph that served promises per class."""
    decisions = summary.get("decisions") or {}
    decided = sum(decisions.values())
    if not decided:
        return "<p>No image was decided.</p>"
    accepted = decisions.get("accept", 0)
    share = f"{accepted:,} of {decided:,} labels accepted ({accepted / decided:.1%})"
    parts = [f"<p>{share}; the rest need review.</p>"]
    reasons = summary.get("review_reasons") or {}
    if reasons:
        parts.append(
            _table(("review reason", "images"), ([_td(r), _td(f"{n:,}", True)] for r, n in reasons.items()))
        )
    if summary.get("attributes"):
        parts.append(_attribute_coverage(summary["attributes"]))
    spec = model.get("spec")
    rule = spec.rule_keys(summary.get("runtime")) if spec is not None else {}  # the serving graph's
    if rule.get("accept_thresholds"):
        parts.append(_promises(rule["calibration"] or {}, rule["accept_thresholds"]))
    if (rule.get("calibration") or {}).get("curves"):
        parts.append(_tradeoff(rule["calibration"]["curves"]))
    if "calibration_png" in model:
        src = f"data:image/png;base64,{model['calibration_png']}"
        parts.append(f'<img class="confusion" src="{src}" alt="reliability diagram">')
    return "".join(parts)


def _attribute_coverage(attributes: dict[str, dict[str, Any]]) -> str:
    """Per attribute (bundles trained with --attributes): the share of images whose value was accepted."""
    rows = []
    for name, a in attributes.items():
        share = a.get("share_accepted")
        bar = _bar_cell(share or 0.0)
        text = "n/a" if share is None else f"{share:.1%}"
        rows.append(
            [_td(name), _td(f"{a['accept']:,}", True), _td(f"{a['review']:,}", True), _td(text, True), bar]
        )
    return _table(("attribute", "accepted", "to review", "share accepted", ""), rows, "bars")


def _tradeoff(curves: dict[str, Any]) -> str:
    """Precision (lower bound) on held-out predictions when accepting the most confident share."""
    groups = [("all labels", curves.get("overall") or [])]
    groups += list((curves.get("classes") or {}).items())
    groups += [(f"attribute {name}", c) for name, c in (curves.get("attributes") or {}).items()]
    rows = [
        [_td(name), *(_td(curve_cell(curve, share), True) for share in CURVE_SHARES)]
        for name, curve in groups
    ]
    head = ("held-out predictions of", *(f"{share:.0%} accepted" for share in CURVE_SHARES))
    note = (
        "<p>The trade-off: precision (its 95% lower bound) when the most confident share of the "
        "predictions is accepted. <code>classify-job calibrate --target-precision P</code> moves the "
        "target without retraining.</p>"
    )
    return note + _table(head, rows)


def _promises(calibration: dict[str, Any], thresholds: dict[str, Any]) -> str:
    """Per class: the accept threshold, its evidence, the precision of accepted test-split labels."""
    test = calibration.get("expected", {}).get("test", {}).get("per_class", {})
    rows = []
    for label, t in thresholds.items():
        threshold = "never (too little evidence)" if t.get("threshold") is None else f"{t['threshold']:.3f}"
        bound = f"{t.get('lower_bound', 0):.3f} ({t.get('correct', 0)}/{t.get('accepted', 0)})"
        measured = test.get(label, {})
        precision = measured.get("precision")
        tested = "n/a" if precision is None else f"{precision:.3f} ({measured['accepted']})"
        target = f"{t['target_precision']:.2f}"
        rows.append(
            [_td(label), _td(threshold, True), _td(bound, True), _td(target, True), _td(tested, True)]
        )
    head = (
        "class",
        "accept at confidence",
        "lower bound (correct/accepted)",
        "target",
        "test precision (accepted)",
    )
    return _table(head, rows)


def _model_section(model: dict[str, Any]) -> str:
    parts = [f'<p class="note">{_e(model["note"])}</p>'] if "note" in model else []
    if "spec" in model:
        spec = model["spec"]
        height, width = spec.image_size
        facts = {"bundle": model["path"], "architecture": spec.architecture, "input": f"{width}x{height}"}
        parts.append(_dl({**facts, "labels": ", ".join(spec.labels)}))
    if "metrics" in model:
        parts.append(_metrics_html(model["metrics"]))
    elif "spec" in model:
        parts.append("<p>The bundle holds no metrics.json.</p>")
    if "confusion_matrix_png" in model:
        src = f"data:image/png;base64,{model['confusion_matrix_png']}"
        parts.append(f'<img class="confusion" src="{src}" alt="confusion matrix">')
    return "".join(parts)


def _metrics_html(metrics: dict[str, Any]) -> str:
    head = ("split", "num_images", "accuracy", "loss", "macro_precision", "macro_recall", "macro_f1")
    columns = ("label", "precision", "recall", "f1", "support")
    rows = ([_td(_fmt(c.get(k)), k != "label") for k in columns] for c in metrics.get("per_class", []))
    return _dl({k: _fmt(metrics[k]) for k in head if k in metrics}) + _table(columns, rows)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _css() -> str:
    return files("classify_job.report").joinpath("report.css").read_text(encoding="utf-8")
