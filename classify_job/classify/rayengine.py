"""The Ray Data engine: the same classification on a pool of model actors, local or on a cluster.

The driver walks the tree and skips done files exactly as the local engine does; Ray spreads the
remaining paths over actors that each hold the model and decode with their own threads; the
driver receives the finished rows and writes them with the shared part writer. Lock, resume,
atomic parts and summary are therefore the same code, and the output is the same dataset.
Writing from the driver is not the bottleneck: Parquet takes tens of thousands of rows a second,
a CPU model tens of images a second per core.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import islice

import pyarrow as pa
import ray

from classify_job.bundle import BundleSpec
from classify_job.classify.backends import choose_runtime
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.rows import RowContext
from classify_job.walk import FileEntry

# Files handed to Ray per dataset: bounds the driver's memory however large the tree is.
CHUNK_FILES = 20_000


def ray_engine(
    config: ClassifyConfig,
    spec: BundleSpec,
    todo: Iterator[FileEntry],
    ctx: RowContext,
    schema: pa.Schema,
    record: dict,
) -> Iterator[pa.Table]:
    """Prediction tables for ``todo``, computed by ``config.ray_actors`` Ray actors."""
    record["runtime"] = choose_runtime(spec, config.runtime)
    started_here = _init(config.ray_address)
    try:
        while chunk := list(islice(todo, CHUNK_FILES)):
            for batch in _dataset(chunk, config, ctx, schema).iter_batches(
                batch_format="pyarrow", batch_size=None
            ):
                yield batch.cast(schema)
    finally:
        if started_here:
            ray.shutdown()


def _init(address: str | None) -> bool:
    """Join a cluster when given an address, else start a local one; True if we started it."""
    if ray.is_initialized():
        return False
    ray.data.DataContext.get_current().enable_progress_bars = False  # our own progress reporting stays
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    return True


def _dataset(
    chunk: list[FileEntry], config: ClassifyConfig, ctx: RowContext, schema: pa.Schema
) -> ray.data.Dataset:
    rows = [{**entry._asdict(), "path": os.fsencode(entry.path)} for entry in chunk]  # bytes: any name
    blocks = max(1, len(rows) // (config.batch_size * 4))
    return ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        ModelActor,
        fn_constructor_kwargs={"ctx": ctx, "schema": schema, "config": config},
        batch_size=config.batch_size,
        batch_format="pyarrow",
        concurrency=config.ray_actors,
        num_cpus=1,
    )


class ModelActor:
    """Holds one loaded model; turns a batch of file entries into prediction rows."""

    def __init__(self, ctx: RowContext, schema: pa.Schema, config: ClassifyConfig):
        import classify_job  # noqa: F401  forces the JAX backend in the worker process
        from classify_job.bundle import read_spec
        from classify_job.classify.backends import open_backend

        self.spec = read_spec(config.model)
        runtime = choose_runtime(self.spec, config.runtime)
        self.backend = open_backend(
            config.model, self.spec, runtime, config.batch_size, config.runtime_threads
        )
        self.ctx, self.schema, self.config = ctx, schema, config

    def __call__(self, batch: pa.Table) -> pa.Table:
        from classify_job.classify.predict import predict_batches
        from classify_job.classify.rows import predictions_table

        entries = [FileEntry(**{**row, "path": os.fsdecode(row["path"])}) for row in batch.to_pylist()]
        predictions = predict_batches(
            entries, self.backend, self.spec, self.config.batch_size, self.config.workers
        )
        return pa.concat_tables(
            predictions_table(p.batch, p.probs, p.features, self.ctx, self.schema) for p in predictions
        )
