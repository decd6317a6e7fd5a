"""How many labels are accepted at the precision asked for, and are unfamiliar images kept out?

Run: make bench-coverage  (or .venv/bin/python benchmarks/bench_coverage.py [--cases fmnist-300,sample]
[--quick]); 15-20 minutes for the three cases on 2 loaded cores, half of it fmnist-1500.

Each case trains a bundle the way a user would (``classify-job train DATA --arch efficientnet_lite0
--target-precision 0.95``, every other setting the command's default), then classifies a tree of
held-out images with unfamiliar images mixed in (``classify-job classify``), and computes every
figure from the Parquet rows of that run:

- ``fmnist-300``, ``fmnist-1500``: 300 or 1,500 Fashion-MNIST training images of each of the four
  most confusable classes (t-shirt/top, pullover, coat, shirt); held out, 150 official test images
  of each (familiar) and 100 of each of the six other classes (unfamiliar);
- ``sample``: ``classify-job sample-data`` at its defaults (the four trouser/jeans classes); held
  out, photos from seed 1 and the ``--other`` skirts, shirts and shoes (unfamiliar). When ``train``
  takes ``--attributes``, the bundle gets gender and garment attributes and their coverage is read
  from the ``attr_<name>*`` columns.

Reported per case: share of familiar images accepted, precision of accepted labels with its 95%
Clopper-Pearson interval (overall and per class), share of unfamiliar images accepted, training and
classify wall time, the bundle's target precision, the coverage-precision curve of the calibrated
confidence on these rows, and issue 21's targets with pass/fail. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import CLASSIFY_JOB, DATA, ROOT, classify, fashion_subset, machine

from classify_job.sampledata import fashion_mnist
from classify_job.versions import library_versions

FAMILIAR = ("t-shirt_top", "pullover", "coat", "shirt")
OTHERS = tuple(c for c in fashion_mnist.CLASSES if c not in FAMILIAR)
SAMPLE_ATTRIBUTES = "gender=male,female garment=trousers,jeans"
CASES = ("fmnist-300", "fmnist-1500", "sample")
TARGET = 0.95
# issue 21, "Targets": the share of familiar images accepted each case must reach
COVERAGE_TARGETS = {"fmnist-300": 0.40, "fmnist-1500": 0.60}
MAX_UNFAMILIAR_ACCEPTED = 0.02
SAMPLE_ANY_ATTRIBUTE_TARGET = 0.60
MAX_TRAIN_S = {"fmnist-300": 600.0}


def interval(correct: int, n: int) -> list[float] | None:
    """Two-sided 95% Clopper-Pearson interval for ``correct`` of ``n``; None when ``n`` is 0."""
    from scipy.stats import beta

    if n == 0:
        return None
    low = beta.ppf(0.025, correct, n - correct + 1) if correct else 0.0
    high = beta.ppf(0.975, correct + 1, n - correct) if correct < n else 1.0
    return [round(float(low), 4), round(float(high), 4)]


def precision_figures(accepted: pd.Series, correct: pd.Series) -> dict:
    """Share accepted, and the precision of the accepted ones with its interval (two boolean masks
    over the same rows)."""
    n, right = int(accepted.sum()), int((accepted & correct).sum())
    return {
        "images": len(accepted),
        "accepted": n,
        "share_accepted": round(n / len(accepted), 4) if len(accepted) else 0.0,
        "precision": round(right / n, 4) if n else None,
        "precision_95ci": interval(right, n),
    }


def split_groups(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The familiar and unfamiliar rows, each with ``truth`` from its relpath (``<group>/<class>/...``)."""
    parts = rows.relpath.str.split("/")
    rows = rows.assign(group=parts.str[0], truth=parts.str[1])
    return rows[rows.group == "familiar"], rows[rows.group == "unfamiliar"]


def label_figures(rows: pd.DataFrame, labels: tuple[str, ...]) -> dict:
    """Every label-level figure of one run's rows."""
    familiar, unfamiliar = split_groups(rows)
    accepted = familiar.decision == "accept"
    correct = familiar.label == familiar.truth
    return {
        "familiar_images": len(familiar),
        "unfamiliar_images": len(unfamiliar),
        "error_rows": int((rows.status != "ok").sum()),
        "accuracy": round(float(correct.mean()), 4) if len(familiar) else None,
        "familiar": precision_figures(accepted, correct),
        "per_class": {
            label: {
                **precision_figures(accepted[familiar.label == label], correct[familiar.label == label]),
                "share_of_class_accepted": _share(accepted[familiar.truth == label]),
            }
            for label in labels
        },
        "unfamiliar_accepted_share": _share(unfamiliar.decision == "accept"),
        # familiar images the unfamiliar cut-off alone keeps from being accepted: a ceiling on coverage
        "familiar_flagged_unfamiliar_share": _share(
            familiar.review_reason.fillna("").str.contains("unfamiliar")
        ),
        "unfamiliar_accepted_by_kind": {
            kind: _share(group.decision == "accept") for kind, group in unfamiliar.groupby("truth")
        },
        "review_reasons": rows.review_reason.dropna().str.split("; ").explode().value_counts().to_dict(),
        "curve": coverage_curve(familiar.confidence, correct),
    }


def coverage_curve(confidence: pd.Series, correct: pd.Series) -> list[dict]:
    """Precision of the most confident share of the familiar rows, at shares 0.1 to 1.0: what one
    cut-off on the calibrated confidence could buy on these rows (hindsight, not a valid rule)."""
    order = np.argsort(-confidence.to_numpy(float), kind="stable")
    hits = correct.to_numpy(bool)[order]
    points = []
    for share in np.linspace(0.1, 1.0, 10):
        n = round(float(share) * len(hits))
        if n:
            points.append(
                {
                    "share": round(float(share), 2),
                    "precision": round(float(hits[:n].mean()), 4),
                    "confidence_at_least": round(float(confidence.to_numpy(float)[order][n - 1]), 4),
                }
            )
    return points


def attribute_figures(rows: pd.DataFrame, attributes: dict[str, tuple[str, ...]]) -> dict:
    """Per attribute, from the ``attr_<name>``/``_decision`` columns where the run wrote them; and
    the share of images with at least one attribute accepted (an accepted label fixes them all)."""
    familiar, unfamiliar = split_groups(rows)
    names = [name for name in attributes if f"attr_{name}_decision" in rows.columns]
    any_familiar, any_unfamiliar = familiar.decision == "accept", unfamiliar.decision == "accept"
    per_attribute = {}
    for name in names:
        truth = familiar.truth.map(lambda label, values=attributes[name]: _value_of(label, values))
        accepted = familiar[f"attr_{name}_decision"] == "accept"
        per_attribute[name] = {
            **precision_figures(accepted, familiar[f"attr_{name}"] == truth),
            "unfamiliar_accepted_share": _share(unfamiliar[f"attr_{name}_decision"] == "accept"),
        }
        any_familiar = any_familiar | accepted
        any_unfamiliar = any_unfamiliar | (unfamiliar[f"attr_{name}_decision"] == "accept")
    return {
        "columns_found": names,
        "per_attribute": per_attribute,
        "familiar_any_attribute_accepted_share": _share(any_familiar),
        "unfamiliar_any_attribute_accepted_share": _share(any_unfamiliar),
    }


def parse_attributes(text: str) -> dict[str, tuple[str, ...]]:
    """``"gender=male,female garment=trousers,jeans"`` -> ``{"gender": ("male", "female"), ...}``."""
    return {name: tuple(values.split(",")) for name, values in (item.split("=") for item in text.split())}


def _value_of(label: str, values: tuple[str, ...]) -> str | None:
    return next((v for v in values if v in label.split("_")), None)


def _share(mask: pd.Series) -> float:
    return round(float(mask.mean()), 4) if len(mask) else 0.0


def targets(case: str, figures: dict) -> dict:
    """Issue 21's targets that apply to ``case``, each with the measured value and pass/fail."""
    checks = {}
    overall = figures["familiar"]
    if case in COVERAGE_TARGETS:
        checks["familiar_accepted_share"] = _check(overall["share_accepted"], ">=", COVERAGE_TARGETS[case])
        upper = overall["precision_95ci"][1] if overall["precision_95ci"] else None
        checks["precision_95ci_upper_reaches_target"] = _check(upper, ">=", TARGET)
    checks["unfamiliar_accepted_share"] = _check(
        figures["unfamiliar_accepted_share"], "<=", MAX_UNFAMILIAR_ACCEPTED
    )
    if "attributes" in figures:
        attrs = figures["attributes"]
        checks["any_attribute_accepted_share"] = _check(
            attrs["familiar_any_attribute_accepted_share"], ">=", SAMPLE_ANY_ATTRIBUTE_TARGET
        )
        checks["unfamiliar_any_attribute_accepted_share"] = _check(
            attrs["unfamiliar_any_attribute_accepted_share"], "<=", MAX_UNFAMILIAR_ACCEPTED
        )
    if case in MAX_TRAIN_S:
        checks["train_s"] = _check(figures["train_s"], "<=", MAX_TRAIN_S[case])
    return checks


def _check(value: float | None, op: str, bound: float) -> dict:
    passed = value is not None and (value >= bound if op == ">=" else value <= bound)
    return {"value": value, "target": f"{op} {bound}", "pass": passed}


def fashion_case(per_class: int, held_out: int, unfamiliar: int) -> tuple[Path, Path]:
    """Training folder of the four familiar classes, and the tree of familiar/ and unfamiliar/ images
    (official test split, the same for every training size)."""
    train_root = fashion_subset(DATA / f"cov-fmnist-train-{per_class}", per_class, 0, classes=FAMILIAR)
    familiar = fashion_subset(DATA / f"cov-fmnist-familiar-{held_out}", 0, held_out, classes=FAMILIAR)
    others = fashion_subset(DATA / f"cov-fmnist-unfamiliar-{unfamiliar}", 0, unfamiliar, classes=OTHERS)
    tree = DATA / f"cov-fmnist-tree-{held_out}-{unfamiliar}"
    if not (tree / ".complete").is_file():
        shutil.copytree(familiar / "test", tree / "familiar", dirs_exist_ok=True)
        shutil.copytree(others / "test", tree / "unfamiliar", dirs_exist_ok=True)
        (tree / ".complete").write_text("ok\n")
    return train_root / "train", tree


def sample_case(per_class: int | None, held_out: int) -> tuple[Path, Path]:
    """``sample-data`` photos (seed 0, its default size unless ``per_class``) to train on; held-out
    photos (seed 1) and ``--other`` garments to classify."""
    root = DATA / f"cov-sample-{per_class or 'default'}-{held_out}"
    if not (root / ".complete").is_file():
        shutil.rmtree(root, ignore_errors=True)
        size = ["--per-class", str(per_class)] if per_class else []
        _cli("sample-data", str(root / "train"), *size)
        tree = root / "tree"
        held = ["--per-class", str(held_out), "--seed", "1", "--other", str(held_out)]
        _cli("sample-data", str(tree / "familiar"), *held, "--other-dir", str(tree / "unfamiliar"))
        (root / ".complete").write_text("ok\n")
    return root / "train", root / "tree"


def train_flags() -> set[str]:
    """The options ``classify-job train --help`` lists: the benchmark runs before and after a flag lands."""
    text = _cli("train", "--help", env={**os.environ, "COLUMNS": "200"})
    return {word.strip(",") for word in text.split() if word.startswith("--")}


def fit(case: str, data: Path, args: argparse.Namespace, attributes: str | None) -> tuple[Path, float]:
    """Train through the CLI at its defaults (plus ``--extra-train-args``); the bundle and wall seconds."""
    bundle = DATA / f"cov-model-{case}"
    command = ["train", str(data), "--out", str(bundle), "--arch", "efficientnet_lite0"]
    command += ["--target-precision", str(TARGET), "--overwrite", *args.extra_train_args.split()]
    if attributes:
        command += ["--attributes", attributes]
    if args.quick:
        command += ["--image-size", "64"]
    started = time.perf_counter()
    _cli(*command)
    return bundle, round(time.perf_counter() - started, 1)


def _cli(*arguments: str, env: dict | None = None) -> str:
    proc = subprocess.run([*CLASSIFY_JOB, *arguments], capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"classify-job {' '.join(arguments[:2])} exited {proc.returncode}: {proc.stderr[-3000:]}"
        )
    return proc.stdout


def bundle_target(spec: dict) -> float | None:
    """The target precision the bundle was fitted for, wherever this version of bundle.json keeps it."""
    for threshold in (spec.get("accept_thresholds") or {}).values():
        if isinstance(threshold, dict) and "target_precision" in threshold:
            return threshold["target_precision"]
    return spec.get("target_precision") or spec.get("extra", {}).get("training", {}).get("target_precision")


def run_case(case: str, args: argparse.Namespace, flags: set[str]) -> dict:
    """Data, train, classify, figures: one case."""
    quick = args.quick
    if case == "sample":
        data, tree = sample_case(20 if quick else None, 10 if quick else 100)
    else:
        per_class = 40 if quick else int(case.split("-")[1])
        data, tree = fashion_case(per_class, 20 if quick else 150, 10 if quick else 100)
    attributes = SAMPLE_ATTRIBUTES if case == "sample" and "--attributes" in flags else None
    load_before = os.getloadavg()
    bundle, train_s = fit(case, data, args, attributes)
    spec = json.loads((bundle / "bundle.json").read_text())
    out = DATA / f"cov-out-{case}"
    shutil.rmtree(out, ignore_errors=True)
    run = classify(tree, bundle, out)
    rows = pd.read_parquet(out / "predictions")
    figures = {
        "train_s": train_s,
        "classify_s": run["wall_s"],
        "runtime": run["facts"].get("runtime"),
        "bundle_target_precision": bundle_target(spec),
        "image_size": spec.get("image_size"),
        "thresholds": {
            label: {k: t.get(k) for k in ("threshold", "accepted", "correct", "lower_bound")}
            for label, t in (spec.get("accept_thresholds") or {}).items()
        },
        "attributes_passed": attributes,
        **label_figures(rows, tuple(spec["labels"])),
    }
    if case == "sample":
        figures["attributes"] = attribute_figures(rows, parse_attributes(SAMPLE_ATTRIBUTES))
    figures["load"] = {"before": _load(load_before), "after": _load(os.getloadavg())}
    figures["targets"] = targets(case, figures)
    return figures


def _load(values: tuple[float, float, float]) -> list[float]:
    return [round(v, 2) for v in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny data at 64 px; targets not meaningful"
    )
    parser.add_argument(
        "--extra-train-args", default="", help='more train options, e.g. "--fine-tune-blocks 2"'
    )
    args = parser.parse_args()
    cases = args.cases.split(",")
    if unknown := [c for c in cases if c not in CASES]:
        sys.exit(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    flags = train_flags()
    results = {
        "machine": machine(),
        "versions": library_versions(("classify-job", "keras", "jax", "jaxlib", "onnxruntime", "numpy")),
        "args": vars(args),
        "note": "wall times depend on the load average ('load'); above the core count they are inflated",
        "target_precision": TARGET,
        "cases": {},
    }
    for case in cases:
        results["cases"][case] = run_case(case, args, flags)
        print(f"[{case}] {json.dumps(results['cases'][case])}", file=sys.stderr, flush=True)
    results["all_targets_pass"] = all(
        check["pass"] for figures in results["cases"].values() for check in figures["targets"].values()
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
