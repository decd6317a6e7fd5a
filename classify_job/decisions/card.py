"""The model card's "Decisions" section: what a bundle promises about the labels it accepts.

Written at training time with the rest of the card, and rewritten in place by ``calibrate`` so the
card always describes the bundle's own calibration, thresholds and unfamiliar cut-off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from classify_job import atomic
from classify_job.bundle import BundleSpec
from classify_job.decisions.rule import DEFAULT_MARGIN, DEFAULT_THRESHOLD

HEADING = "## Decisions"


def decision_lines(spec: BundleSpec) -> list[str]:
    """Markdown lines: calibration with its test figures, thresholds per class, the unfamiliar rule."""
    if not spec.calibration:
        return [
            HEADING,
            "",
            "No calibration (no validation split to fit it on): a prediction goes to review when its",
            f"confidence is below {DEFAULT_THRESHOLD} or its top two are closer than {DEFAULT_MARGIN}.",
            "Nothing here says how often an accepted label is wrong.",
        ]
    cal, unfamiliar = spec.calibration, spec.unfamiliar or {}
    target = next(iter(spec.accept_thresholds.values()))["target_precision"]
    return [
        HEADING,
        "",
        "Every prediction is accepted or sent to review. A label is accepted only when its calibrated",
        "confidence reaches its class's threshold and the image is familiar.",
        "",
        f"- Calibration `{cal['calibration_id']}`: temperature scaling, T = {cal['temperature']:.4g}, "
        f"fitted on {cal['fitted_on']} ({cal['images']:,} images).",
        *_test_lines(cal),
        *_guarantee_lines(cal.get("guarantee"), target),
        "",
        "| class | accept at | correct / accepted | lower bound | share of its predictions | tests run |",
        "| --- | --- | --- | --- | --- | --- |",
        *(_threshold_row(label, t) for label, t in spec.accept_thresholds.items()),
        "",
        *_never_lines(spec.accept_thresholds),
        *_attribute_lines(cal.get("attributes") or {}),
        *_curve_lines(cal.get("curves")),
        f"- Unfamiliar images: {unfamiliar.get('method', 'none')} on the {unfamiliar.get('features')}; "
        f"the cut-off {unfamiliar.get('cutoff', float('nan')):.4g} passes "
        f"{unfamiliar.get('familiar_recall', 0):.0%} of familiar images ({unfamiliar.get('cutoff_on')}).",
        "  An image above it is never auto-accepted, whatever its confidence.",
        *_expected_lines(cal.get("expected", {})),
        *_int8_lines(spec),
    ]


def rewrite_decisions(card: Path, spec: BundleSpec) -> None:
    """Replace the card's decisions section (append one if it has none)."""
    text = card.read_text(encoding="utf-8") if card.is_file() else f"# Model card: {spec.model_id}\n"
    head = text.split(f"\n{HEADING}\n", 1)[0].rstrip("\n")
    atomic.write_text(card, head + "\n\n" + "\n".join(decision_lines(spec)) + "\n")


def _test_lines(cal: dict[str, Any]) -> list[str]:
    test = cal.get("test")
    if not test:
        return ["  No test split: the calibration is unmeasured."]
    before, after = test["before"], test["after"]
    return [
        f"  On {test['source']}: ECE {before['ece']:.3f} -> {after['ece']:.3f}, "
        f"NLL {before['nll']:.3f} -> {after['nll']:.3f}, Brier {before['brier']:.3f} -> {after['brier']:.3f}."
    ]


def _guarantee_lines(guarantee: dict[str, Any] | None, target: float) -> list[str]:
    if not guarantee:  # a bundle from before the fixed-sequence test
        return [
            "- Thresholds: the lowest calibrated confidence at which the one-sided 95% Clopper-Pearson lower",
            f"  bound on precision reaches {target} on held-out predictions.",
        ]
    lines = [
        f"- Guarantee ({guarantee['scope']} scope, alpha {guarantee['alpha']}): {guarantee['statement']}",
        f"  Thresholds: {guarantee['test']} test of candidate thresholds from the strictest (the top 5%,",
        "  10%, ... of the predictions by calibrated confidence), stopping at the first that fails.",
    ]
    evidence = guarantee.get("evidence") or {}
    if guarantee["scope"] == "overall":
        lines.append(
            f"  Pooled evidence: {evidence.get('correct', 0)} of {evidence.get('accepted', 0)} accepted "
            f"held-out labels correct, lower bound {evidence.get('lower_bound', 0):.3f}, after "
            f"{evidence.get('tested', 0)} test(s) on {evidence.get('predicted', 0):,} predictions; the "
            "per-class counts below describe that one threshold, they are not guarantees."
        )
    return lines


def _threshold_row(label: str, t: dict[str, Any]) -> str:
    at = "never" if t["threshold"] is None else f"{t['threshold']:.3f}"
    return (
        f"| {label} | {at} | {t.get('correct', 0)} / {t.get('accepted', 0)} | "
        f"{t.get('lower_bound', 0):.3f} | {t.get('share_accepted', 0):.0%} | {t.get('tested', 'n/a')} |"
    )


def _attribute_lines(attributes: dict[str, Any]) -> list[str]:
    if not attributes:
        return []
    return [
        "- Attributes: each decided on its marginal probability (the summed calibrated probabilities of",
        "  the classes that carry a value) against its own threshold, the same test on all its held-out",
        "  predictions.",
        "",
        "| attribute | values | accept at | correct / accepted | lower bound | share accepted |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {name} | {', '.join(a['values'])} | "
            + ("never" if a["threshold"] is None else f"{a['threshold']:.3f}")
            + f" | {a.get('correct', 0)} / {a.get('accepted', 0)} | {a.get('lower_bound', 0):.3f} | "
            f"{a.get('share_accepted', 0):.0%} |"
            for name, a in attributes.items()
        ),
        "",
    ]


CURVE_SHARES = (0.2, 0.4, 0.6, 0.8, 1.0)  # the points of the trade-off curve the card shows


def _curve_lines(curves: dict[str, Any] | None) -> list[str]:
    """Share accepted against precision on held-out predictions: what a --target-precision buys."""
    if not curves:
        return []
    rows = [("all labels", curves.get("overall") or [])]
    rows += list((curves.get("classes") or {}).items())
    rows += [(f"attribute {name}", c) for name, c in (curves.get("attributes") or {}).items()]
    head = " | ".join(f"{share:.0%} accepted" for share in CURVE_SHARES)
    return [
        "- The trade-off on held-out predictions: precision (lower bound) when accepting the most",
        "  confident share of each group's predictions. A target at or under a lower bound accepts",
        "  about that share (`classify-job calibrate --target-precision P` moves it without retraining).",
        "",
        f"| predictions of | {head} |",
        "| --- |" + " --- |" * len(CURVE_SHARES),
        *(
            f"| {name} | " + " | ".join(curve_cell(curve, s) for s in CURVE_SHARES) + " |"
            for name, curve in rows
        ),
        "",
    ]


def curve_cell(curve: list[dict[str, Any]], share: float) -> str:
    """The first point of ``curve`` accepting at least ``share``: "precision (lower bound)"."""
    point = next((p for p in curve if p["share_accepted"] >= share - 1e-9), None)
    return "n/a" if point is None else f"{point['precision']:.3f} ({point['lower_bound']:.3f})"


def _never_lines(thresholds: dict[str, dict]) -> list[str]:
    never = [(label, t) for label, t in thresholds.items() if t["threshold"] is None]
    if never and never[0][1].get("scope") == "overall":
        t = never[0][1]
        return [
            f"- **No label is auto-accepted**: the pooled test needs at least {t['needed']} accepted "
            f"predictions, all correct, to reach {t['target_precision']}, and its strictest threshold "
            "did not meet the target. Label more images, or lower the target."
        ]
    return [
        f"- **{label} is never auto-accepted**: the bound needs at least {t['needed']} accepted "
        f"predictions, all correct, to reach {t['target_precision']}; held-out data gave "
        f"{t['predicted']} predictions of it, and no threshold met the target. Label more {label} images."
        for label, t in never
    ]


def _expected_lines(expected: dict[str, Any]) -> list[str]:
    return [
        f"- On {name.replace('_', '-')} images ({e['images']:,}): {e['share_accepted']:.0%} accepted, "
        f"precision of accepted labels {_pct(e['precision_of_accepted'])}."
        for name, e in expected.items()
    ]


def _int8_lines(spec: BundleSpec) -> list[str]:
    """The int8 graph's own rule, when it has one (classify decides with it when that graph serves)."""
    entry = spec.verified_export("onnx-int8")
    if entry is None or not entry.get("calibration"):
        return []
    cal, thresholds = entry["calibration"], entry.get("accept_thresholds") or {}
    at = ", ".join(
        f"{label} {'never' if t.get('threshold') is None else format(t['threshold'], '.4g')}"
        for label, t in thresholds.items()
    )
    return [
        f"- The int8 graph (`{entry['file']}`) decides with its own calibration `{cal['calibration_id']}`: "
        f"T = {cal['temperature']:.4g}, fitted on {cal['fitted_on']}; accept at {at}.",
        *(f"  {line[2:]}" for line in _expected_lines(cal.get("expected", {}))),
    ]


def _pct(value: float | None) -> str:
    return "n/a (none accepted)" if value is None else f"{value:.1%}"
