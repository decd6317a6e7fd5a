"""Process set-up that must happen before Keras is imported: the JAX backend, quiet logs, seeds."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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


def set_seeds(seed: int) -> None:
    """Seed Python, NumPy and Keras so training and sampling are reproducible."""
    import keras

    keras.utils.set_random_seed(seed)


def setup_logging(verbose: bool = False) -> None:
    """Plain log lines on stderr; JAX and absl chatter kept out of the way."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("jax", "absl", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
