"""Versions of installed packages, as bundles and benchmarks record them."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version

MODEL_LIBRARIES = ("classify-job", "keras", "jax", "jaxlib", "numpy", "pillow")


def package_version(package: str) -> str:
    """The installed version of ``package``, or ``"not installed"``."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def library_versions(packages: Iterable[str] = MODEL_LIBRARIES) -> dict[str, str]:
    """Python's version and each package's: the libraries that shape a model's numbers."""
    return {"python": platform.python_version(), **{p: package_version(p) for p in packages}}
