"""Live counters of one classify run, handed to the progress display after every batch."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunProgress:
    """``total`` is an estimate (the previous run's count) until the walk has seen everything."""

    total: int | None = None
    run_id: str = ""
    started: float = field(default_factory=time.monotonic)
    skipped: int = 0
    classified: int = 0
    errors: int = 0

    @property
    def done(self) -> int:
        return self.skipped + self.classified

    @property
    def images_per_second(self) -> float:
        return self.classified / max(time.monotonic() - self.started, 1e-9)

    def fields(self) -> dict[str, Any]:
        """Structured log fields (JSON log lines carry them as keys)."""
        keys = ("run_id", "total", "done", "classified", "skipped", "errors")
        return {**{k: getattr(self, k) for k in keys}, "images_per_second": round(self.images_per_second, 2)}


ProgressCallback = Callable[[RunProgress], None]
