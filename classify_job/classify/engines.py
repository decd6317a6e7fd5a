"""Engines turn the files still to do into predictions. Everything around them (lock, resume,
parts, summary) is shared, so every engine writes the same dataset. An engine is only started
when there is something to do, so a run with nothing new never loads a model.

An engine yields :class:`~classify_job.classify.predict.Predictions` (the run turns them into rows
on its writer thread) or ready-made Arrow tables (Ray's actors build their rows themselves), and
records in ``record`` the runtime it used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import pyarrow as pa

from classify_job.bundle import BundleSpec
from classify_job.classify.backends import choose_runtime, open_backend
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.predict import Predictions, predict_batches
from classify_job.classify.rows import RowContext
from classify_job.walk import FileEntry

Engine = Callable[
    [ClassifyConfig, BundleSpec, Iterator[FileEntry], RowContext, pa.Schema, dict[str, Any]],
    Iterator[Predictions | pa.Table],
]


def local_engine(
    config: ClassifyConfig,
    spec: BundleSpec,
    todo: Iterator[FileEntry],
    ctx: RowContext,
    schema: pa.Schema,
    record: dict[str, Any],
) -> Iterator[Predictions]:
    """Decode with a thread pool and predict in this process: one machine, no extra services.

    With the Keras runtime, ``record["xla_cache"]`` counts compilations the persistent cache served.
    """
    runtime = choose_runtime(spec, config.runtime)
    record["runtime"] = runtime
    with _compilations(runtime) as compilations:
        if compilations is not None:
            record["xla_cache"] = compilations
        backend = open_backend(config.model, spec, runtime, config.batch_size, config.runtime_threads)
        yield from predict_batches(todo, backend, spec, config.batch_size, config.workers)


def _compilations(runtime: str) -> Any:
    if runtime != "keras":
        return nullcontext(None)
    from classify_job.runtime import counting_compilations

    return counting_compilations()


def ray_engine(*args: Any) -> Iterator[pa.Table]:
    """Ray Data actors, local or on a cluster (the optional ``[ray]`` extra, imported only when asked for)."""
    from classify_job.classify.rayengine import ray_engine as run

    return run(*args)


ENGINES: dict[str, Engine] = {"local": local_engine, "ray": ray_engine}
