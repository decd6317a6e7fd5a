"""The ``classify-job`` command line: one module per command group, each parsing options, calling
one library function and rendering the result (see :mod:`classify_job.cli.app` for exit codes)."""

from classify_job.cli import classify, data, registry, report, review, train  # noqa: F401  each registers its commands
from classify_job.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()
