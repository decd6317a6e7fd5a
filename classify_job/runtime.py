"""Process set-up that must happen before Keras is imported (the JAX backend, the persistent XLA
cache, XLA's CPU kernel choice, Keras' optional imports), quiet logs, seeds and signals."""

from __future__ import annotations

import importlib.abc
import json
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from classify_job.errors import BackendError

BACKEND = "jax"


def force_jax_backend() -> None:
    """Make Keras use JAX whatever the environment says; fail loudly if it is too late for that.

    Keras reads KERAS_BACKEND once, at its first import, so this runs from the package's
    ``__init__`` before any module imports keras. It also points JAX at the persistent compilation
    cache, chooses XLA's CPU convolution kernels and keeps Keras from importing extras it never
    needs here; none of that imports anything.
    """
    os.environ["KERAS_BACKEND"] = BACKEND
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    use_compilation_cache()
    use_xla_kernels()
    if not any(isinstance(finder, _UnwantedImports) for finder in sys.meta_path):
        sys.meta_path.insert(0, _UnwantedImports())
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


def use_compilation_cache() -> Path | None:
    """Persist every XLA compilation under ``<cache>/xla`` (see :func:`cache_directory`), so a
    second run of ``train``, ``evaluate`` or ``classify --runtime keras`` compiles nothing.

    Set through JAX's environment variables, which it reads when first imported; JAX's default
    keeps only compilations over a second, so the limits go to zero. ``CLASSIFY_JOB_XLA_CACHE=0``
    turns the cache off; an explicit ``JAX_COMPILATION_CACHE_DIR`` wins.
    """
    if os.environ.get("CLASSIFY_JOB_XLA_CACHE", "1") == "0":
        return None
    directory = Path(os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache_directory() / "xla")))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    return directory


# XLA:CPU hands convolutions to YNNPACK by default, whose weight-gradient convolution is 3-5x slower
# than XLA's own Eigen path; this keeps YNNPACK to matrix products. Measured faster on every CPU tried
# (Intel Xeon: a CNN train step 0.47x; AMD EPYC Zen 4: 0.6-0.74x), so "auto" uses it everywhere;
# `make bench-train-step` measures a new machine, docs/training.md has the figures.
EIGEN_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
# XLA aborts on a flag it does not know: only jaxlib versions where the flag was tried get it.
JAXLIB_WITH_FLAG = frozenset({"0.10.2"})
KERNELS_ENV = "CLASSIFY_JOB_CONV_KERNELS"  # auto (default, the measured choice) | eigen | xla-default
KERNEL_CHOICES = ("auto", "eigen", "xla-default")
_ADDED_ENV = "CLASSIFY_JOB_XLA_FLAGS_ADDED"  # what this package appended, so children tell it from a user's


def use_xla_kernels(environ: MutableMapping[str, str] = os.environ) -> dict[str, object]:
    """Append XLA's CPU kernel flags to ``XLA_FLAGS`` before JAX starts; returns :func:`xla_settings`.

    A user's own ``XLA_FLAGS`` naming the flag wins, and ``CLASSIFY_JOB_CONV_KERNELS=xla-default``
    leaves XLA's defaults; ``auto`` and ``eigen`` add the flag where the installed jaxlib knows it.
    """
    added = "" if _mentions_flag(environ.get("XLA_FLAGS", "")) else _wanted_flags(environ, jaxlib_version())
    if added and added != environ.get(_ADDED_ENV):
        environ["XLA_FLAGS"] = f"{environ.get('XLA_FLAGS', '')} {added}".strip()
        environ[_ADDED_ENV] = added
    return xla_settings(environ)


def xla_settings(environ: Mapping[str, str] = os.environ) -> dict[str, object]:
    """What XLA runs with in this process, as bundles and run records keep it: ``XLA_FLAGS``, the
    jaxlib version, the convolution kernels and whether the user's own ``XLA_FLAGS`` chose them."""
    flags = environ.get("XLA_FLAGS", "")
    added = environ.get(_ADDED_ENV, "")
    ours = bool(added) and added in flags
    user_set = _mentions_flag(flags) and not ours
    return {
        "flags": flags,
        "jaxlib": jaxlib_version(),
        "user_set": user_set,
        "conv_kernels": "eigen" if EIGEN_CONVOLUTIONS in flags else ("user" if user_set else "xla-default"),
        "switch": environ.get(KERNELS_ENV, "auto"),
    }


def jaxlib_version() -> str | None:
    """The installed jaxlib's version, read from its metadata (importing jax would start XLA)."""
    try:
        return version("jaxlib")
    except PackageNotFoundError:
        return None


def _wanted_flags(environ: Mapping[str, str], jaxlib: str | None) -> str:
    choice = environ.get(KERNELS_ENV, "auto").strip().lower() or "auto"
    if choice not in KERNEL_CHOICES:  # at import time: a warning, not a traceback on every command
        message = f"{KERNELS_ENV} must be one of {list(KERNEL_CHOICES)}; using auto. Received: {choice!r}"
        warnings.warn(message, stacklevel=3)
    if choice == "xla-default" or jaxlib not in JAXLIB_WITH_FLAG:
        return ""
    return EIGEN_CONVOLUTIONS


def _mentions_flag(flags: str) -> bool:
    return _FLAG_NAME in flags


class _UnwantedImports(importlib.abc.MetaPathFinder):
    """Imports that fail as if the package were not installed, where its importer copes.

    - While Keras imports itself, its optional imports of scikit-learn, pandas and matplotlib
      (Keras guards each; it needs them for wrappers, DataFrame inputs and plotting, none of which
      this project asks of it): 1-2 s of start-up. Imported before Keras, or after, they work.
    - ``openvino_telemetry``, always: ``import openvino`` would otherwise send a usage event over
      the network; without the package OpenVINO uses its own no-op stub.
    """

    KERAS_EXTRAS = frozenset({"sklearn", "pandas", "matplotlib"})
    NEVER = frozenset({"openvino_telemetry"})

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        top = name.partition(".")[0]
        if top in self.NEVER or (top in self.KERAS_EXTRAS and _keras_initializing()):
            raise ModuleNotFoundError(f"{name} is not imported by classify-job", name=name)
        return None


def _keras_initializing() -> bool:
    spec = getattr(sys.modules.get("keras"), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    """Libraries that log every step at info level on the root logger (jax2onnx, ONNX Runtime's
    quantiser) stay out of a user's output, unless debug logs were asked for (--verbose)."""
    root = logging.getLogger()
    level = root.level
    if level > logging.DEBUG:
        root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)


@contextmanager
def counting_compilations() -> Iterator[dict[str, int]]:
    """Count, while the block runs, XLA compilations served by the persistent cache (``hits``)
    and compiled afresh (``misses``); the dict is updated live. Imports JAX."""
    from jax import monitoring

    counts = {"hits": 0, "misses": 0}
    names = {"/jax/compilation_cache/cache_hits": "hits", "/jax/compilation_cache/cache_misses": "misses"}

    def on_event(name: str, **_: object) -> None:
        if name in names:
            counts[names[name]] += 1

    monitoring.register_event_listener(on_event)
    try:
        yield counts
    finally:
        monitoring.unregister_event_listener(on_event)


def peak_rss_mib() -> float:
    """This process's peak resident memory, MiB: the kernel's high-water mark of its own address
    space (``VmHWM``), which unlike ``ru_maxrss`` does not count a parent's pages from before exec."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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
