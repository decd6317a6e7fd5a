"""``promote``: the gate a candidate bundle passes to become the registry's current model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from classify_job.cli.app import Verbose, app, invoke
from classify_job.cli.commands import settings_command


@app.command(cls=settings_command("classify_job.loop.gate:PromoteConfig"))
def promote(
    bundle: Annotated[Path | None, typer.Argument(help="Candidate model bundle.")] = None,
    registry: Annotated[
        Path | None, typer.Option(help="Registry folder (registry.json, current, bundles/), e.g. models/.")
    ] = None,
    holdout: Annotated[
        Path | None,
        typer.Option(help="Frozen labelled holdout: one subfolder per class, at least 30 images each."),
    ] = None,
    accept_new_holdout: Annotated[
        bool | None,
        typer.Option(
            "--accept-new-holdout", help="Judge on a holdout other than the recorded one, and record it."
        ),
    ] = None,
    shadow: Annotated[
        Path | None, typer.Option(help="OUT of an earlier classify run: count the labels that would flip.")
    ] = None,
    shadow_limit: Annotated[int | None, typer.Option(help="Rows of --shadow sampled.")] = None,
    margin_accuracy: Annotated[
        float | None, typer.Option(help="Accuracy the candidate may lose (lower bound).")
    ] = None,
    margin_macro_f1: Annotated[
        float | None, typer.Option(help="Macro F1 the candidate may lose (lower bound).")
    ] = None,
    resamples: Annotated[int | None, typer.Option(help="Bootstrap resamples.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the bootstrap and the shadow sample.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help=r"TOML job file with a \[promote] table.")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Make BUNDLE the registry's current model if it is not worse than the current one.

    On the frozen holdout, the 95% lower bound of its paired-bootstrap difference in accuracy and
    in macro F1 must be at least -0.01. Every verdict is recorded in registry.json; a refusal exits
    7 and leaves REGISTRY/current unchanged.
    """
    from classify_job.loop.gate import PromoteConfig

    invoke(
        lambda: _promote(
            PromoteConfig.resolve(
                config, bundle=bundle, registry=registry, holdout=holdout,
                accept_new_holdout=accept_new_holdout, shadow=shadow, shadow_limit=shadow_limit,
                margin_accuracy=margin_accuracy, margin_macro_f1=margin_macro_f1, resamples=resamples,
                seed=seed,
            )
        ),
        verbose,
    )  # fmt: skip


def _promote(config) -> None:
    from classify_job.errors import PromotionRefused
    from classify_job.loop.registry import promote

    try:
        promotion = promote(config)
    except PromotionRefused as exc:
        if exc.evidence is not None:
            _render(exc.evidence)
        raise
    _render(promotion)


def _render(promotion: Any) -> None:
    from classify_job.cli.console import stdout

    c = promotion.comparison
    if c is not None:
        stdout.print(figures_table(c, promotion.margins))
        stdout.print(per_class_table(c))
    if promotion.shadow is not None:
        stdout.print(shadow_table(promotion.shadow))
    if promotion.promoted:
        stdout.print(
            f"promoted {promotion.model_id}: current -> {promotion.bundle}", markup=False, soft_wrap=True
        )
    else:
        stdout.print(f"refused {promotion.model_id}; the current model is unchanged:", markup=False)
        for reason in promotion.reasons:
            stdout.print(f"  {reason}", markup=False, soft_wrap=True)


def figures_table(c: Any, margins: dict[str, float]) -> Table:
    """Accuracy and macro F1 of both models with the bootstrap's verdict; ECE beside."""
    b = c.bootstrap
    title = "empty registry: no current model" if b is None else f"paired bootstrap, {b.resamples} resamples"
    table = Table(
        title=f"Holdout figures ({title})",
        caption="ECE: expected calibration error of the confidences classify reports; shown, not gated",
    )
    for column in ("", "current", "candidate", "difference", "95% lower bound", "allowed"):
        table.add_column(column, justify="left" if column == "" else "right")
    rows = (
        ("accuracy", "accuracy", b and b.accuracy_diff, b and b.accuracy_lower, margins["accuracy"]),
        ("macro F1", "macro_f1", b and b.macro_f1_diff, b and b.macro_f1_lower, margins["macro_f1"]),
    )
    for name, field, diff, lower, margin in rows:
        current = "" if c.current is None else f"{getattr(c.current, field):.4f}"
        table.add_row(
            name, current, f"{getattr(c.candidate, field):.4f}", _num(diff, "+.4f"), _num(lower, "+.4f"),
            f">= {-margin:+.4f}",
        )  # fmt: skip
    current_ece = "" if c.current is None else f"{c.current.ece:.4f}"
    table.add_row("ECE", current_ece, f"{c.candidate.ece:.4f}", "", "", "")
    return table


def per_class_table(c: Any) -> Table:
    """Per class: F1, and the precision of the labels each model would accept (correct/accepted)."""
    table = Table(title="Per class: F1 and precision at the accept thresholds (correct/accepted)")
    for column in ("class", "F1 current", "F1 candidate", "precision current", "precision candidate"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for label, f1 in c.candidate.f1.items():
        table.add_row(
            label,
            "" if c.current is None else f"{c.current.f1[label]:.3f}",
            f"{f1:.3f}",
            _accepted(c.current, label),
            _accepted(c.candidate, label),
        )
    return table


def shadow_table(shadow: Any) -> Table:
    """Label flips per class pair on the sampled rows of an earlier run."""
    table = Table(
        title=f"Shadow run: {shadow.flipped} of {shadow.compared} sampled labels flip ({shadow.share:.1%})",
        caption=f"rows sampled from {shadow.out}; compared with {shadow.baseline}",
    )
    for column in ("from", "to", "images", "share"):
        table.add_column(column, justify="left" if column in ("from", "to") else "right")
    for before, after, count in shadow.flips:
        table.add_row(before, after, str(count), f"{count / max(shadow.compared, 1):.1%}")
    return table


def _accepted(figures: Any, label: str) -> str:
    if figures is None:
        return ""
    if figures.accepted is None:
        return "no thresholds"
    a = figures.accepted[label]
    if a["threshold"] is None:
        return "never accepted"
    precision = "-" if a["precision"] is None else f"{a['precision']:.3f}"
    return f"{precision} ({a['correct']}/{a['accepted']})"


def _num(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)
