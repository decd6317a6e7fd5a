"""Process set-up that must happen before Keras is imported: the JAX backend, quiet logs, seeds."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from classify_job.errors import BackendError

BACKEND = "jax"


def force_jax_backend() -> None:
    """Make Keras use JAX whatever the environment says; fail loudly if it is too late for that.

    Keras reads KERAS_BACKEND once, at its first import, so this runs from the package's
    ``__init__`` before any module imports keras.
    """
    os.environ["KERAS_BACKEND"] = BACKEND
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != BACKEND:
        raise BackendError(
            f"keras was imported with backend {keras.backend.backend()!r} before classify_job; "
            f"import classify_job first. Received: KERAS_BACKEND={os.environ.get('KERAS_BACKEND')}"
        )


def cache_directory(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$CLASSIFY_JOB_CACHE``, else ``~/.cache/classify-job``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if env := os.environ.get("CLASSIFY_JOB_CACHE"):
        return Path(env)
    return Path.home() / ".cache" / "classify-job"


def set_seeds(seed: int) -> None:
    """Seed Python, NumPy and Keras so training and sampling are reproducible."""
    import keras

    keras.utils.set_random_seed(seed)


def setup_logging(verbose: bool = False, json_lines: bool | None = None) -> None:
    """Log to stderr: readable lines on a terminal, JSON lines otherwise (cron, Airflow, k8s).

    Fields passed as ``extra={"fields": {...}}`` become top-level JSON keys, so a scheduler's
    log view can filter on run_id, counts and rates.
    """
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(_TEXT_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    for noisy in ("jax", "absl", "PIL", "ray"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and any structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Turn the first SIGTERM or SIGINT into a stop request the job honours at a batch boundary.

    A second SIGINT interrupts at once (the default behaviour), for an impatient user.
    """
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logging.getLogger("classify_job").warning(
            "%s received: stopping at the next batch", signal.Signals(signum).name
        )
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
