"""Engines turn the files still to do into prediction tables. Everything around them (lock,
resume, parts, summary) is shared, so every engine writes the same dataset. An engine is only
started when there is something to do, so a run with nothing new never loads a model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from classify_job.bundle import BundleSpec
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.predict import Classifier, classify_entries
from classify_job.classify.sink import RowContext
from classify_job.walk import FileEntry

Engine = Callable[
    [ClassifyConfig, BundleSpec, Iterator[FileEntry], RowContext, pa.Schema, dict[str, Any]],
    Iterator[pa.Table],
]


def local_engine(
    config: ClassifyConfig,
    spec: BundleSpec,
    todo: Iterator[FileEntry],
    ctx: RowContext,
    schema: pa.Schema,
    facts: dict[str, Any],
) -> Iterator[pa.Table]:
    """Decode with a thread pool and predict in this process: one machine, no extra services.

    Records in ``facts`` the runtime used and how many XLA compilations the cache served.
    """
    from classify_job.bundle import load_bundle
    from classify_job.runtime import counting_compilations

    facts["runtime"] = "keras"
    with counting_compilations() as compilations:
        facts["xla_cache"] = compilations
        classifier = Classifier(load_bundle(config.model), config.batch_size)
        yield from classify_entries(todo, classifier, ctx, schema, config.workers)


def ray_engine(*args: Any) -> Iterator[pa.Table]:
    """Ray Data actors, local or on a cluster (the optional ``[ray]`` extra, imported only when asked for)."""
    from classify_job.classify.rayengine import ray_engine as run

    return run(*args)


ENGINES: dict[str, Engine] = {"local": local_engine, "ray": ray_engine}
