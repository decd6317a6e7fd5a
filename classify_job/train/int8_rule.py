"""The int8 graph's own decision rule: the float rule refitted on the same held-out images, seen
through the int8 graph.

Quantisation moves probabilities a little (the gate records by how much: the temperature each
graph would be given on the test split), so thresholds fitted on float probabilities are not
quite the int8 graph's. Where the held-out images are in memory (training; ``calibrate``), the
int8 graph gets a rule fitted as the float one was, on the same rows:

- probabilities: each held-out row's raw prediction moved by what quantisation did to the served
  graph's prediction of the same image, ``softmax(log p_held_out + log p_int8 - log p_float)``.
  For rows the served graph predicted itself (the validation split, ``calibrate``'s images) that
  is the int8 graph's own prediction (to the float export's verified tolerance); for out-of-fold
  rows (heads trained without the image) it carries int8's change over to them;
- features: the int8 graph's, so the unfamiliar cut-off is refitted on its scores (the score's
  parameters, ``unfamiliar.npz``, stay the float rule's);
- measured on the gate's images through the int8 graph.

The rule goes into the int8 export entry (``calibration`` with its own ``calibration_id``,
``accept_thresholds``, ``unfamiliar``); classify decides with it whenever the int8 graph serves
(:meth:`~classify_job.bundle.BundleSpec.rule_keys`). An int8 graph added later by
``export --int8``, with no held-out images at hand, shares the bundle's rule, which its gate checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classify_job.bundle import BundleSpec, bundle_file, write_spec
from classify_job.classify.backends import export_files, graph_outputs
from classify_job.decisions.attributes import Attribute
from classify_job.decisions.calibration import HeldOut
from classify_job.decisions.fitting import CalibrationSets, FittedRule, KeptScore, RuleChoice, fit_rule
from classify_job.decisions.rule import UnfamiliarScore

THROUGH_INT8 = "through the int8 graph"


def shifted(held_out: np.ndarray, served_float: np.ndarray, served_int8: np.ndarray) -> np.ndarray:
    """``held_out`` probabilities moved, row by row, by the log-ratio of int8 to float."""

    def log(p: np.ndarray) -> np.ndarray:
        return np.log(np.clip(np.asarray(p, np.float64), 1e-12, 1.0))

    logits = log(held_out) + log(served_int8) - log(served_float)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def through(graph: Path, held: HeldOut) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, features) of the ONNX graph at ``graph`` on ``held``'s images, in row order."""
    outputs = [graph_outputs(graph, part) for part in held.images if len(part)]
    return tuple(np.concatenate([out[k] for out in outputs]) for k in (0, 1))


def seen_through(graph: Path, held: HeldOut) -> HeldOut:
    """``held``'s images and labels as the int8 graph at ``graph`` predicts them."""
    probs, features = through(graph, held)
    return HeldOut(probs, held.labels, features, f"{held.source}, {THROUGH_INT8}", held.images)


@dataclass(frozen=True)
class Int8Refit:
    """Everything the float rule was fitted from (``sets``, their images in memory, and the score
    ``kept`` for the int8 graph too), ready to fit the int8 graph's rule once it exists."""

    spec: BundleSpec  # with the float rule's keys
    sets: CalibrationSets
    kept: KeptScore
    choice: RuleChoice
    attributes: tuple[Attribute, ...] = ()

    @classmethod
    def possible(cls, sets: CalibrationSets | None) -> bool:
        """Whether ``sets`` hold the images to see through another graph."""
        return sets is not None and sets.held_out.has_images and sets.familiar.has_images

    def __call__(self, float_graph: Path, int8_graph: Path, test: HeldOut | None) -> FittedRule:
        """The int8 graph's rule, measured on ``test`` (already through the int8 graph)."""
        held = self.sets.held_out
        served_float, _ = through(float_graph, held)
        served_int8 = seen_through(int8_graph, held)
        held_int8 = dataclasses.replace(
            served_int8, probs=shifted(held.probs, served_float, served_int8.probs)
        )
        sets = CalibrationSets(held_int8, None, seen_through(int8_graph, self.sets.familiar), self.kept)
        return fit_rule(self.spec, sets, test, self.choice, self.attributes)


def refit_bundle(
    bundle_dir: Path,
    spec: BundleSpec,
    sets: CalibrationSets,
    test: HeldOut,
    choice: RuleChoice,
    attributes: tuple[Attribute, ...] = (),
) -> BundleSpec:
    """``calibrate``'s step for a bundle with an int8 graph: its own rule fitted on ``sets`` (the
    images the float rule was just fitted on, in memory) and measured on ``test``, through it;
    recorded in its export entry and ``bundle.json``. The spec unchanged without an int8 graph."""
    int8, float_entry = spec.verified_export("onnx-int8"), spec.verified_export("onnx")
    if int8 is None or float_entry is None or not Int8Refit.possible(sets):
        return spec
    sha256 = spec.unfamiliar["sha256"]
    kept = KeptScore(UnfamiliarScore.load(bundle_file(bundle_dir, spec.unfamiliar["file"], sha256)), sha256)
    float_graph, int8_graph = export_files(bundle_dir, float_entry), export_files(bundle_dir, int8)
    measured = seen_through(int8_graph, test) if test.has_images else None
    own = Int8Refit(spec, sets, kept, choice, attributes)(float_graph, int8_graph, measured)
    exports = tuple({**e, **own.keys()} if e is int8 else e for e in spec.exports)
    spec = dataclasses.replace(spec, exports=exports)
    write_spec(bundle_dir, spec)
    return spec
