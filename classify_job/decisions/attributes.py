"""Attributes of a class name, decided one by one: ``male_jeans`` is gender=male and garment=jeans.

``train --attributes "gender=male,female garment=trousers,jeans"`` names each attribute and its
values. Every class name must hold exactly one value of each attribute as a ``_``-separated token.
An attribute's probability of a value is the sum of the calibrated probabilities of the classes
that carry it, so "jeans" can be sure while the gender is not; each attribute gets its own
threshold (:func:`classify_job.decisions.calibration.attribute_thresholds`) and decision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from classify_job.errors import BundleError, InputError

NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")  # becomes part of a Parquet column name: attr_<name>
VALUE = re.compile(r"[^\s_,=]+")  # a token of a class name: no separator, space, comma or "="


@dataclass(frozen=True)
class Attribute:
    """An attribute's values, and for each class (in label order) the index of its value."""

    name: str
    values: tuple[str, ...]
    of_class: tuple[int, ...]

    def marginals(self, probs: np.ndarray) -> np.ndarray:
        """(rows, values): the summed probabilities of the classes carrying each value."""
        onehot = np.eye(len(self.values), dtype=np.float64)[list(self.of_class)]  # (classes, values)
        return (np.asarray(probs, np.float64) @ onehot).astype(np.float32)

    def label_values(self, labels: np.ndarray) -> np.ndarray:
        """The value index of each class index in ``labels``."""
        return np.asarray(self.of_class)[np.asarray(labels)]

    def to_json(self, labels: tuple[str, ...]) -> dict[str, Any]:
        return {
            "values": list(self.values),
            "classes": {label: self.values[v] for label, v in zip(labels, self.of_class, strict=True)},
        }


def parse_attributes(text: str | dict | None) -> dict[str, tuple[str, ...]]:
    """``"gender=male,female garment=trousers,jeans"`` (or a job file's table of lists) as a dict.

    Raises InputError on a malformed name, value or pair, or a repeated name or value."""
    if not text:
        return {}
    pairs = text.items() if isinstance(text, dict) else [_pair(item) for item in str(text).split()]
    found: dict[str, tuple[str, ...]] = {}
    for name, values in pairs:
        values = tuple(values.split(",")) if isinstance(values, str) else tuple(map(str, values))
        if not NAME.fullmatch(str(name)):
            raise InputError(f"an attribute name is letters and digits, from a letter. Received: {name!r}")
        if name in found:
            raise InputError(f"attribute {name!r} is given twice in --attributes")
        bad = [v for v in values if not VALUE.fullmatch(v)]
        if len(values) < 2 or bad or len(set(values)) != len(values):
            raise InputError(
                f"attribute {name!r} needs two or more distinct values without '_', ',' or spaces. "
                f"Received: {','.join(values)!r}"
            )
        found[str(name)] = values
    return found


def _pair(item: str) -> tuple[str, str]:
    name, sep, values = item.partition("=")
    if not sep:
        raise InputError(f"--attributes takes name=value,value pairs. Received: {item!r}")
    return name, values


def attributes_for(definitions: dict[str, tuple[str, ...]], labels: tuple[str, ...]) -> tuple[Attribute, ...]:
    """Each class name parsed into the attributes' values; an InputError names a class that holds
    no value, or more than one, of an attribute."""
    attributes = []
    for name, values in definitions.items():
        of_class = []
        for label in labels:
            held = [values.index(token) for token in label.split("_") if token in values]
            if len(held) != 1:
                raise InputError(
                    f"class {label!r} must hold exactly one value of attribute {name!r} "
                    f"({', '.join(values)}) as a '_'-separated token; it holds {len(held)}"
                )
            of_class.append(held[0])
        attributes.append(Attribute(name, values, tuple(of_class)))
    return tuple(attributes)


def attributes_from_json(recorded: dict[str, Any] | None, labels: tuple[str, ...]) -> tuple[Attribute, ...]:
    """The attributes ``bundle.json`` records (``calibration.attributes``), in ``labels`` order; a
    BundleError when one does not give every class a value of its own."""
    try:
        return tuple(
            Attribute(
                name, tuple(a["values"]), tuple(a["values"].index(a["classes"][label]) for label in labels)
            )
            for name, a in (recorded or {}).items()
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise BundleError(f"bundle.json's calibration.attributes is malformed: {exc!r}") from exc


def attribute_columns(name: str) -> tuple[str, str, str]:
    """The Parquet columns of one attribute: its value, its confidence and its decision."""
    from classify_job.predictions import attribute_fields

    value, confidence, decision = (f.name for f in attribute_fields(name))
    return value, confidence, decision


def attribute_names(spec: Any) -> tuple[str, ...]:
    """The attributes a bundle decides (none without calibration)."""
    return tuple(((spec.calibration or {}).get("attributes") or {}).keys())
