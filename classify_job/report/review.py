"""Which predictions a person should check.

A prediction needs review when its confidence is under ``threshold`` or its two most probable
labels are less than ``margin`` apart. Shared by catalog tagging and the HTML report.
"""

from __future__ import annotations

import numpy as np

from classify_job.errors import InputError

LOW_CONFIDENCE = "low confidence"
CLOSE_CALL = "top two close"


def top_two_margin(probs: np.ndarray) -> np.ndarray:
    """Difference between each row's two largest probabilities (NaN where the row is NaN)."""
    if probs.shape[1] < 2:
        return np.full(len(probs), np.nan, dtype=np.float32)
    top_two = np.partition(probs, -2, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def review_reasons(
    confidence: np.ndarray, margin: np.ndarray, threshold: float, min_margin: float
) -> np.ndarray:
    """Why each prediction needs review: ``""`` when it does not (NaN never needs review)."""
    low = np.asarray(confidence) < threshold
    close = np.asarray(margin) < min_margin
    both = f"{LOW_CONFIDENCE}; {CLOSE_CALL}"
    return np.where(low & close, both, np.where(low, LOW_CONFIDENCE, np.where(close, CLOSE_CALL, "")))


def check_review_settings(threshold: float, margin: float) -> None:
    """Reject a threshold or margin outside 0..1 with an InputError."""
    for name, value in (("threshold", threshold), ("margin", margin)):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"--{name} must be between 0 and 1. Received: {value}")
