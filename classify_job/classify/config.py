"""The settings of one ``classify`` run, from flags and the ``[classify]`` table of a job file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classify_job.classify.scan import Shard
from classify_job.config import CPUS, MAX_THREADS, SettingError, check, coerce_paths, resolve
from classify_job.errors import InputError
from classify_job.walk import DEFAULT_EXTENSIONS, normalize_extensions

ENGINE_NAMES = ("local", "ray")
RUNTIMES = ("auto", "onnx", "onnx-int8", "openvino", "keras")  # see classify_job.classify.backends
REQUIRED = {"input_dir": "INPUT_DIR", "model": "--model", "out": "--out"}
FLAG_NAMES = {"extensions": "--ext"}
MAX_BATCH = 4096  # images per model call; the batch buffers are allocated up front
MAX_ACTORS = 10_000  # ray_actors: a cluster's actors, not this machine's threads


def _between(low: int, high: int) -> str:
    return f"at least {low} and at most {high:,}"


@dataclass(frozen=True)
class ClassifyConfig:
    """Everything one ``classify`` run needs. Paths, ``shard`` ("K/N") and ``extensions`` (a list
    or a comma-separated string) may be given as text, as job files and flags give them."""

    input_dir: Path
    model: Path
    out: Path
    batch_size: int = 32
    workers: int = 2
    top_k: int = 3
    shard: Shard = field(default_factory=Shard)
    fresh: bool = False
    prune: bool = False
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    follow_symlinks: bool = False
    max_error_rate: float | None = None
    rows_per_part: int = 10_000
    commit_every_s: float = 120.0
    log_every_s: float = 30.0
    runtime: str = "auto"
    runtime_threads: int = 2
    engine: str = "local"
    ray_address: str | None = None
    ray_actors: int = 1
    model_requested: Path | None = None  # --model as given, once resolve_model() has pinned ``model``
    drift_runs: int = 7  # earlier runs a run's rows are compared with (classify_job.loop.drift)
    drift_min_rows: int = 200  # rows each side needs before a drift signal can raise a flag

    def __post_init__(self) -> None:
        coerce_paths(self)
        if isinstance(self.shard, str):
            try:
                object.__setattr__(self, "shard", Shard.parse(self.shard))
            except InputError as exc:
                raise SettingError("shard", Shard.EXPECTED, self.shard) from exc
        extensions = self.extensions.split(",") if isinstance(self.extensions, str) else self.extensions
        object.__setattr__(self, "extensions", tuple(sorted(normalize_extensions(extensions))))
        rate, threads = self.max_error_rate, _between(1, MAX_THREADS)
        check(
            self,
            {
                "batch_size": (1 <= self.batch_size <= MAX_BATCH, _between(1, MAX_BATCH)),
                "workers": (1 <= self.workers <= MAX_THREADS, f"{threads} (4 x {CPUS} CPUs)"),
                "top_k": (self.top_k >= 1, "at least 1"),
                "rows_per_part": (self.rows_per_part >= 1, "at least 1"),
                "ray_actors": (1 <= self.ray_actors <= MAX_ACTORS, _between(1, MAX_ACTORS)),
                "engine": (self.engine in ENGINE_NAMES, f"one of {', '.join(ENGINE_NAMES)}"),
                "runtime": (self.runtime in RUNTIMES, f"one of {', '.join(RUNTIMES)}"),
                "runtime_threads": (1 <= self.runtime_threads <= MAX_THREADS, f"{threads} (4 x {CPUS} CPUs)"),
                "max_error_rate": (rate is None or 0.0 <= rate <= 1.0, "between 0 and 1"),
                "drift_runs": (self.drift_runs >= 1, "at least 1"),
                "drift_min_rows": (self.drift_min_rows >= 1, "at least 1"),
                "commit_every_s": (self.commit_every_s >= 0, "at least 0 (seconds)"),
                "log_every_s": (self.log_every_s >= 0, "at least 0 (seconds)"),
            },
        )

    def resolve_model(self) -> ClassifyConfig:
        """This config with ``model`` resolved to the bundle it names now, links followed, and the
        path as given kept in ``model_requested``: ``models/current`` is a link a promotion may
        replace, and a run must use one model from start to end."""
        requested = Path(self.model_requested or self.model.absolute())
        return dataclasses.replace(self, model=self.model.resolve(), model_requested=requested)

    @classmethod
    def resolve(cls, job_file: Path | None = None, **flags: Any) -> ClassifyConfig:
        """From ``[classify]`` in ``job_file`` and the flags given (None = not given); flags win."""
        return resolve(cls, job_file, "classify", REQUIRED, FLAG_NAMES, **flags)
