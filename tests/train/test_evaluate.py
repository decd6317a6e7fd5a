"""Metrics from known probabilities, and evaluation of a real bundle on folders and arrays."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import write_image

from classify_job.errors import DatasetError, InputError
from classify_job.train.evaluate import REPORT_FILES, evaluate
from classify_job.train.metrics import report_from_probs

LABELS = ("cat", "dog", "fox")


def known_report():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    probs = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.6, 0.3, 0.1],
            [0.2, 0.7, 0.1],  # cat -> dog
            [0.1, 0.8, 0.1],
            [0.05, 0.05, 0.9],  # dog -> fox, very confident
            [0.1, 0.1, 0.8],
        ]
    )
    return report_from_probs(LABELS, y_true, probs, [f"img{i}.png" for i in range(6)], split="test")


def test_report_from_known_probabilities():
    report = known_report()
    assert report.accuracy == pytest.approx(4 / 6)
    expected_loss = -np.mean(np.log([0.9, 0.6, 0.2, 0.8, 0.05, 0.8]))
    assert report.loss == pytest.approx(expected_loss)
    assert report.confusion.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    np.testing.assert_allclose(report.confusion_normalized.sum(axis=1), 1.0)
    cat, _, fox = report.per_class
    assert (cat.precision, cat.recall, cat.support) == (1.0, pytest.approx(2 / 3), 3)
    assert fox.precision == 0.5 and fox.recall == 1.0
    assert report.macro_f1 == pytest.approx(np.mean([c.f1 for c in report.per_class]))
    assert report.best_class == "cat" and report.worst_class == "dog"
    assert [(c.true, c.predicted, c.count) for c in report.top_confusions] == [
        ("dog", "fox", 1),
        ("cat", "dog", 1),
    ]
    assert [m.relpath for m in report.misclassified] == ["img4.png", "img2.png"]  # most confident first
    assert report.misclassified[0].p_true == pytest.approx(0.05)


def test_write_report_files_read_back(tmp_path):
    from classify_job.train.evaluate import write_report

    paths = write_report(known_report(), tmp_path / "out", extra={"note": "x"})
    assert [p.name for p in paths] == list(REPORT_FILES) and all(p.stat().st_size > 0 for p in paths)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(4 / 6) and metrics["note"] == "x"
    confusion = pd.read_csv(tmp_path / "out" / "confusion_matrix.csv", index_col=0)
    assert confusion.loc["dog", "fox"] == 1 and list(confusion.columns) == list(LABELS)
    assert len(pd.read_csv(tmp_path / "out" / "misclassified.csv")) == 2


def test_evaluate_bundle_on_folder_and_arrays(color_bundle, tiny_tree, tmp_path):
    data = tiny_tree(per_class=3)
    (data / "blue" / "broken.jpg").write_bytes(b"nope")
    report = evaluate(color_bundle, data, out_dir=tmp_path / "eval")
    assert report.split == "all" and report.num_images == 9 and report.accuracy == 1.0
    assert [b.relpath for b in report.bad_files] == ["blue/broken.jpg"]
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()
    images = np.stack([np.full((16, 16, 3), c, dtype=np.uint8) for c in [(200, 0, 0), (0, 0, 200)]])
    arrays = evaluate(color_bundle, (images, np.array([0, 1])))
    assert arrays.split == "arrays" and arrays.accuracy == 0.5
    assert arrays.misclassified[0].relpath == "#1"


def test_evaluate_auto_picks_the_test_folder(color_bundle, tiny_tree, tmp_path):
    root = tmp_path / "pre"
    tiny_tree(per_class=2, root=root / "train")
    write_image(root / "test" / "red" / "r.png", (220, 30, 30))
    report = evaluate(color_bundle, root)
    assert report.split == "test" and report.num_images == 1


def test_evaluate_rejects_unknown_classes_and_splits(color_bundle, tiny_tree, tmp_path):
    data = tiny_tree(per_class=1)
    write_image(data / "purple" / "p.png", (120, 0, 120))
    with pytest.raises(DatasetError, match="purple"):
        evaluate(color_bundle, data)
    with pytest.raises(InputError, match="split"):
        evaluate(color_bundle, data, split="holdout")


def test_numpy_metrics_equal_scikit_learns():
    from sklearn.metrics import confusion_matrix as sk_confusion
    from sklearn.metrics import precision_recall_fscore_support

    from classify_job.train.metrics import confusion_matrix, per_class_scores

    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 300), rng.integers(0, 3, 300)  # class 3 is never predicted
    confusion = confusion_matrix(y_true, y_pred, 4)
    np.testing.assert_array_equal(confusion, sk_confusion(y_true, y_pred, labels=range(4)))
    expected = precision_recall_fscore_support(y_true, y_pred, labels=range(4), zero_division=0)
    for ours, theirs in zip(per_class_scores(confusion), expected, strict=True):
        np.testing.assert_allclose(ours, theirs)
