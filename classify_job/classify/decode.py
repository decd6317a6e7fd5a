"""Files -> batches of model-ready uint8 pixels, decoded ahead of the model by a thread pool.

Pillow releases the GIL while it decodes and resizes, so ``workers`` threads overlap decoding with
inference. Each batch's pixels land in one of a few preallocated uint8 buffers, reused in turn:
the model reads a buffer as it is (normalisation lives inside the graph), no batch is stacked,
cast or padded. A batch's pixels stay valid until the next batch is asked for.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np

from classify_job.errors import ImageDecodeError
from classify_job.imageio import channels_for, load_image
from classify_job.walk import FileEntry


@dataclass(frozen=True)
class DecodedBatch:
    """Files and their pixels: row ``i`` of ``pixels`` holds ``entries[i]`` when ``errors[i]`` is
    None (its original size is ``sizes[i]``); rows of failed files hold stale pixels."""

    entries: list[FileEntry]
    pixels: np.ndarray
    sizes: list[tuple[int, int] | None]
    errors: list[str | None]

    @property
    def ok(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


def decode_into(
    entry: FileEntry, row: np.ndarray, color_mode: str
) -> tuple[tuple[int, int] | None, str | None]:
    """Decode one file into ``row`` (H, W, C); returns (width, height) or the reason it failed."""
    if entry.stat_error:
        return None, entry.stat_error
    if entry.size == 0:
        return None, "empty file"
    try:
        image = load_image(entry.path, row.shape[:2], color_mode)
    except ImageDecodeError as exc:
        return None, str(exc)
    row[...] = image.pixels
    return (image.width, image.height), None


def decoded_batches(
    entries: Iterable[FileEntry],
    image_size: tuple[int, int],
    color_mode: str,
    batch_size: int,
    workers: int,
    prefetch: int = 2,
) -> Iterator[DecodedBatch]:
    """Batches of ``entries`` in walk order, while up to ``prefetch`` later batches decode."""
    entries = iter(entries)
    shape = (batch_size, *image_size, channels_for(color_mode))
    free = deque(np.empty(shape, np.uint8) for _ in range(prefetch + 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque[tuple[list[FileEntry], np.ndarray, list[Future]]] = deque()

        def submit() -> bool:
            chunk = list(islice(entries, batch_size))
            if not chunk:
                return False
            buffer = free.popleft()
            futures = [pool.submit(decode_into, e, buffer[i], color_mode) for i, e in enumerate(chunk)]
            pending.append((chunk, buffer, futures))
            return True

        while len(pending) < prefetch and submit():
            pass
        while pending:
            chunk, buffer, futures = pending.popleft()
            results = [f.result() for f in futures]
            submit()  # keep the pool busy while the model works on this batch
            yield DecodedBatch(chunk, buffer[: len(chunk)], [r[0] for r in results], [r[1] for r in results])
            free.append(buffer)  # the caller has moved on to the next batch
