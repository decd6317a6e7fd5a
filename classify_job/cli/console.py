"""Rendering for people and schedulers: a rich progress bar on a terminal, periodic plain log
lines otherwise (cron, Airflow), and result tables."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from classify_job.classify.progress import ProgressCallback, RunProgress

log = logging.getLogger("classify_job")
stderr = Console(stderr=True)
stdout = Console()


def is_interactive() -> bool:
    return sys.stderr.isatty()


@contextmanager
def progress_reporter(log_every_s: float = 30.0) -> Iterator[ProgressCallback]:
    """A progress callback: a live bar on a terminal, a log line every ``log_every_s`` otherwise."""
    if is_interactive():
        with _rich_bar() as callback:
            yield callback
    else:
        yield _log_lines(log_every_s)


@contextmanager
def _rich_bar() -> Iterator[ProgressCallback]:
    columns = (
        TextColumn("[bold]classifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} img/s  errors {task.fields[errors]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=False) as bar:
        task = bar.add_task("classify", total=None, rate=0.0, errors=0)

        def update(p: RunProgress) -> None:
            bar.update(task, total=p.total, completed=p.done, rate=p.images_per_second, errors=p.errors)

        yield update


def _log_lines(every_s: float) -> ProgressCallback:
    last = {"time": 0.0, "line": None}

    def update(p: RunProgress) -> None:
        now = time.monotonic()
        finished = p.total is not None and p.done >= p.total
        line = (p.done, p.total)
        if line == last["line"] or (now - last["time"] < every_s and not finished):
            return
        last.update(time=now, line=line)
        rate = p.images_per_second
        eta = (p.total - p.done) / rate if rate > 0 and p.total is not None else float("nan")
        log.info(
            "progress %d/%s files (%d classified, %d skipped, %d errors) %.1f img/s, eta %.0f s",
            *(p.done, "?" if p.total is None else p.total, p.classified, p.skipped, p.errors, rate, eta),
            extra={"fields": {"event": "progress", **p.fields(), "eta_s": round(eta, 1)}},
        )

    return update


def tree_notes(facts: dict[str, Any]) -> list[str]:
    """What a run saw of its tree beyond the rows: files gone or pruned, ignored, unlisted."""
    lines = []
    if facts.get("missing"):
        lines.append(
            f"{facts['missing']:,} files with a row are gone from the tree (--prune removes their rows)"
        )
    if facts.get("pruned"):
        lines.append(f"{facts['pruned']:,} rows of files gone from the tree were pruned")
    for extension, count in facts.get("ignored_extensions", {}).items():
        lines.append(f"{count:,} {extension or '(no extension)'} files ignored (not in --ext)")
    for directory, reason in facts.get("unlisted_dirs", {}).items():
        lines.append(f"cannot list {directory}: {reason}")
    return lines


def summary_table(summary: dict[str, Any]) -> Table:
    """Labels and counts of a run summary as a rich table."""
    table = Table(title=f"{summary['files']} files · {summary['ok']} ok · {summary['errors']} errors")
    table.add_column("label")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    ok = max(summary["ok"], 1)
    for label, count in summary["labels"].items():
        table.add_row(label, str(count), f"{count / ok:.1%}")
    return table


@contextmanager
def epoch_reporter(epochs: int) -> Iterator[Any]:
    """A per-epoch callback for training: a bar plus one line of metrics per epoch."""
    with Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=stderr, disable=not is_interactive()) as bar:  # fmt: skip
        task = bar.add_task("train", total=epochs)

        def update(info: Any) -> None:
            shown = " ".join(f"{k} {v:.4g}" for k, v in info.metrics.items() if isinstance(v, float))
            bar.console.print(f"epoch {info.epoch}/{info.epochs} {info.seconds:.1f}s {shown}", markup=False)
            bar.update(task, completed=info.epoch, total=info.epochs)  # phase 2 extends the total

        yield update


def evaluation_table(report: Any) -> Table:
    """Per-class precision/recall/F1 and the headline numbers of an EvaluationReport."""
    table = Table(
        title=f"{report.num_images} images ({report.split}): accuracy {report.accuracy:.2%}, "
        f"loss {report.loss:.4f}, macro F1 {report.macro_f1:.4f}"
    )
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for c in report.per_class:
        table.add_row(c.label, f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", str(c.support))
    return table


def decision_table(spec: Any) -> Table:
    """Per class (and per attribute): the accept threshold and its evidence; calibration figures and
    the guarantee's scope in the title."""
    test = (spec.calibration or {}).get("test", {})
    before, after = test.get("before", {}), test.get("after", {})
    title = f"temperature {spec.calibration['temperature']:.3g}"
    if before:
        ece, nll = f"{before['ece']:.3f} -> {after['ece']:.3f}", f"{before['nll']:.3f} -> {after['nll']:.3f}"
        title += f"; test ECE {ece}, NLL {nll}"
    scope = ((spec.calibration or {}).get("guarantee") or {}).get("scope")
    if scope:
        title += f"; precision guaranteed per {'class' if scope == 'class' else 'pool of all labels'}"
    table = Table(title=title)
    for column in ("class", "accept at", "correct/accepted", "lower bound", "note"):
        table.add_column(column, justify="left" if column in ("class", "note") else "right")
    attributes = (spec.calibration or {}).get("attributes") or {}
    rows = [*(spec.accept_thresholds or {}).items(), *((f"attribute {n}", a) for n, a in attributes.items())]
    for label, t in rows:
        threshold = "never" if t["threshold"] is None else f"{t['threshold']:.3f}"
        note = "" if t["threshold"] is not None else f"needs {t['needed']} correct accepted predictions"
        evidence = f"{t.get('correct', 0)}/{t.get('accepted', 0)}"
        table.add_row(label, threshold, evidence, f"{t.get('lower_bound', 0):.3f}", note)
    return table


def trials_table(trials: list[dict]) -> Table:
    """One row per tuning trial: kind, settings, status, validation figures, seconds."""
    table = Table(title="Tuning trials")
    columns = ("trial", "kind", "lr", "dropout", "width", "views", "blocks", "strength", "status",
               "val_loss", "val_acc", "s")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("trial", "kind", "status") else "right")
    for t in trials:
        table.add_row(
            str(t["trial"]), t["kind"], f"{t['learning_rate']:.2g}", f"{t['dropout']:.1f}",
            str(t["head_width"]), str(t["augmented_views"]), str(t["fine_tune_blocks"]),
            f"{t['augment_strength']:g}", t["status"], _fmt(t.get("val_loss"), ".4f"),
            _fmt(t.get("val_accuracy"), ".3f"), _fmt(t.get("seconds"), ".0f"),
        )  # fmt: skip
    return table


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def data_report_table(report: Any) -> Table:
    """Class balance of a DataReport."""
    table = Table(title=f"{report.root}: {report.num_files} files, layout {report.layout}")
    table.add_column("class")
    table.add_column("images", justify="right")
    for label, count in report.class_counts.items():
        table.add_row(label, str(count))
    return table


def data_report_facts(report: Any) -> list[str]:
    """Colour modes, formats, image sizes and ignored files of a DataReport, one line each."""
    modes = ", ".join(f"{k} {v}" for k, v in report.modes.items())
    formats = ", ".join(f"{k} {v}" for k, v in report.formats.items())
    lines = [f"modes: {modes}; formats: {formats}"]
    if report.sizes is not None:
        z = report.sizes
        lines.append(
            f"width {z.min_width}/{z.median_width}/{z.max_width}, height {z.min_height}/{z.median_height}/"
            f"{z.max_height} (min/median/max); {z.small_images} small images"
        )
    if report.ignored_files:
        lines.append(f"{len(report.ignored_files)} files ignored (not an image extension)")
    return lines


def demo_step(name: str, seconds: float, detail: str) -> None:
    """One line per finished demo step: what, how long, and the result."""
    stdout.print(f"[bold green]done[/] {name:<14} {seconds:7.1f} s  {escape(detail)}")
