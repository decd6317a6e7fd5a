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
        "- Thresholds: the lowest calibrated confidence at which the one-sided 95% Clopper-Pearson lower",
        f"  bound on precision reaches {target} on held-out predictions.",
        "",
        "| class | accept at | correct / accepted | lower bound | share of its predictions |",
        "| --- | --- | --- | --- | --- |",
        *(_threshold_row(label, t) for label, t in spec.accept_thresholds.items()),
        "",
        *_never_lines(spec.accept_thresholds),
        f"- Unfamiliar images: {unfamiliar.get('method', 'none')} on the {unfamiliar.get('features')}; "
        f"the cut-off {unfamiliar.get('cutoff', float('nan')):.4g} passes "
        f"{unfamiliar.get('familiar_recall', 0):.0%} of familiar images ({unfamiliar.get('cutoff_on')}).",
        "  An image above it is never auto-accepted, whatever its confidence.",
        *_expected_lines(cal.get("expected", {})),
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


def _threshold_row(label: str, t: dict[str, Any]) -> str:
    at = "never" if t["threshold"] is None else f"{t['threshold']:.3f}"
    return (
        f"| {label} | {at} | {t.get('correct', 0)} / {t.get('accepted', 0)} | "
        f"{t.get('lower_bound', 0):.3f} | {t.get('share_accepted', 0):.0%} |"
    )


def _never_lines(thresholds: dict[str, dict]) -> list[str]:
    never = [(label, t) for label, t in thresholds.items() if t["threshold"] is None]
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


def _pct(value: float | None) -> str:
    return "n/a (none accepted)" if value is None else f"{value:.1%}"
