"""``promote``: the gate a candidate bundle passes to become the registry's current model."""

from __future__ import annotations

from classify_job.cli.app import app  # noqa: F401  commands register on it
