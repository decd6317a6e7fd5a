"""Engines turn the files still to do into prediction tables. Everything around them (lock,
resume, parts, summary) is shared, so every engine writes the same dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from classify_job.bundle import Bundle
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.predict import Classifier, classify_entries
from classify_job.classify.sink import RowContext
from classify_job.walk import FileEntry

Engine = Callable[[ClassifyConfig, Bundle, Iterator[FileEntry], RowContext, pa.Schema], Iterator[pa.Table]]


def local_engine(
    config: ClassifyConfig, bundle: Bundle, todo: Iterator[FileEntry], ctx: RowContext, schema: pa.Schema
) -> Iterator[pa.Table]:
    """Decode with a thread pool and predict in this process: one machine, no extra services."""
    return classify_entries(todo, Classifier(bundle, config.batch_size), ctx, schema, config.workers)


def ray_engine(*args: Any) -> Iterator[pa.Table]:
    """Ray Data actors, local or on a cluster (the optional ``[ray]`` extra, imported only when asked for)."""
    from classify_job.classify.rayengine import ray_engine as run

    return run(*args)


ENGINES: dict[str, Engine] = {"local": local_engine, "ray": ray_engine}
