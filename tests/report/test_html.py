import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import write_image
from PIL import Image

from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.classify.sink import PartWriter
from classify_job.errors import InputError
from classify_job.predictions import TIMESTAMP, predictions_schema
from classify_job.report.html import write_html_report
from classify_job.report.showcase import collect_showcase

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[1] / "artifacts"  # git-ignored: the last screenshot, for people
ODD_NAME = 'red/a<b>&"c.png'  # a legal file name that breaks HTML unless escaped


@pytest.fixture
def tree(tiny_tree):
    root = tiny_tree(per_class=4)
    for i in range(3):
        write_image(root / "grey" / f"grey_{i}.png", (128, 128, 128))  # near-uniform probabilities
    write_image(root / ODD_NAME, (220, 30, 30))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def classify(tree: Path, bundle: Path, out: Path, **options) -> Path:
    run_classify(ClassifyConfig(input_dir=tree, model=bundle, out=out, batch_size=4, **options))
    return out


@pytest.fixture
def out(tree, color_bundle, tmp_path):
    return classify(tree, color_bundle, tmp_path / "out")


def section(page: str, name: str) -> str:
    return re.search(rf'<section id="{name}">(.*?)</section>', page, re.S).group(1)


def expected_review(out: Path, threshold: float = 0.6, margin: float = 0.15) -> list[str]:
    """The review queue by the fixed rule docs/decisions.md states, in plain Python over the rows read
    back with pyarrow: ok rows whose confidence is under ``threshold`` or whose top two probabilities
    are less than ``margin`` apart, least confident first, ties by relpath."""
    queue = []
    for row in pq.read_table(out / "predictions").to_pylist():
        if row["status"] != "ok":
            continue
        probs = sorted((value for name, value in row.items() if name.startswith("prob_")), reverse=True)
        if row["confidence"] < threshold or probs[0] - probs[1] < margin:
            queue.append((row["confidence"], row["relpath"]))
    return [relpath for _, relpath in sorted(queue)]


def test_report_is_one_self_contained_file_with_every_section(out):
    path = write_html_report(out)
    page = path.read_text()
    assert path == out / "report.html" and path.stat().st_size < 200_000
    for name in ("facts", "labels", "confidence", "errors", "samples", "review", "model"):
        assert f'<section id="{name}">' in page
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page) and "<script" not in page
    assert page.count("data:image/jpeg;base64,") >= 12
    assert "16 ok, 1 errors" in page and "not a recognised image format" in section(page, "errors")
    assert section(page, "confidence").count("<svg") == 3


def test_review_queue_follows_the_rule_least_confident_first_and_is_capped(out):
    expected = expected_review(out)
    assert sorted(expected) == [f"grey/grey_{i}.png" for i in range(3)]
    review = section(write_html_report(out, review_limit=2).read_text(), "review")
    assert "3 images need review" in review and "the 2 least confident are shown" in review
    shown = re.findall(r"<td><code>(.*?)</code></td>", review)
    assert shown == expected[:2]
    assert "low confidence" in review


def test_text_from_data_is_escaped(out):
    page = write_html_report(out).read_text()
    assert "a&lt;b&gt;&amp;&quot;c.png" in page
    assert "a<b>" not in page and '&"c.png' not in page


def test_missing_image_becomes_a_placeholder(out, tree):
    for path in (tree / "grey").iterdir():
        path.unlink()
    page = write_html_report(out).read_text()
    assert section(page, "review").count("data:image/svg+xml;base64,") == 3


def test_streaming_selection_matches_a_full_sort_across_parts(tree, color_bundle, tmp_path):
    out = classify(tree, color_bundle, tmp_path / "out", rows_per_part=3)
    assert len(list((out / "predictions").glob("part-*.parquet"))) > 3
    samples = collect_showcase(out, threshold=0.6, margin=0.15, per_label=2, review_limit=2)
    ok = pd.read_parquet(out / "predictions").query("status == 'ok'")
    for label, rows in ok.groupby("label"):
        most = rows.sort_values(["confidence", "relpath"], ascending=[False, True]).relpath.head(2)
        least = rows.sort_values(["confidence", "relpath"]).relpath.head(2)
        assert [s.relpath for s in samples.top[label].items] == most.tolist()
        assert [s.relpath for s in samples.bottom[label].items] == least.tolist()
        assert samples.hist[label].sum() == len(rows)
    assert [s.relpath for s in samples.review.items] == expected_review(out)[:2]
    assert samples.review_total == 3


def test_model_section_shows_bundle_metrics_and_confusion_matrix(tree, color_bundle, tmp_path):
    bundle = Path(shutil.copytree(color_bundle, tmp_path / "bundle"))
    per_class = [{"label": "red", "precision": 0.9, "recall": 0.5, "f1": 0.64, "support": 8}]
    metrics = {"split": "test", "accuracy": 0.875, "macro_f1": 0.8, "per_class": per_class}
    (bundle / "metrics.json").write_text(json.dumps(metrics))
    Image.new("RGB", (40, 40), "navy").save(bundle / "confusion_matrix.png")
    out = classify(tree, bundle, tmp_path / "out")
    model = section(write_html_report(out).read_text(), "model")
    assert "0.8750" in model and "color-test" in model and 'alt="confusion matrix"' in model
    shutil.rmtree(bundle)
    model = section(write_html_report(out).read_text(), "model")
    assert "not found" in model and "0.8750" not in model


def fabricated_out(out: Path, rows: list[tuple[str, str, float]], rows_per_part: int) -> Path:
    """An OUT whose rows are (relpath, label, confidence); the other labels share the rest."""
    labels = ("a", "b", "c")
    schema = predictions_schema(labels)
    n = len(rows)
    relpaths, names, confidences = zip(*rows, strict=True)
    columns = {"path": [f"/nowhere/{r}" for r in relpaths], "relpath": relpaths, "status": ["ok"] * n,
               "label": names, "confidence": confidences, "bytes": [1] * n,
               "mtime": pa.array([0] * n, TIMESTAMP), "model_id": ["m"] * n, "run_id": ["r"] * n,
               "classified_at": pa.array([0] * n, TIMESTAMP)}  # fmt: skip
    empty = ("error", "top_labels", "top_probs", "width", "height", "relpath_bytes", "raw_confidence",
             "raw_probs", "unfamiliar_score", "decision", "review_reason", "calibration_id")  # fmt: skip
    columns |= {name: [None] * n for name in empty}
    for label in labels:
        columns[f"prob_{label}"] = [c if lab == label else (1 - c) / 2 for _, lab, c in rows]
    table = pa.Table.from_pydict(columns, schema=schema)
    (out / "predictions").mkdir(parents=True)
    writer = PartWriter(out, schema, "r", {}, rows_per_part=rows_per_part)
    for start in range(0, n, rows_per_part):
        writer.write(table.slice(start, rows_per_part))
    writer.commit()
    return out


def test_ties_are_broken_by_relpath_whatever_the_batch_boundaries(tmp_path):
    tied = [(f"{i:02d}.jpg", "a", 1.0) for i in reversed(range(30))]
    rows = [*tied, ("y.jpg", "a", 0.5), ("x.jpg", "a", 0.5)]
    out = fabricated_out(tmp_path / "out", rows, rows_per_part=10)
    samples = collect_showcase(out, threshold=0.6, margin=0.15, per_label=4, review_limit=1)
    assert [s.relpath for s in samples.top["a"].items] == ["00.jpg", "01.jpg", "02.jpg", "03.jpg"]
    assert [s.relpath for s in samples.bottom["a"].items] == ["x.jpg", "y.jpg", "00.jpg", "01.jpg"]
    assert [s.relpath for s in samples.review.items] == ["x.jpg"] and samples.review_total == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [({"threshold": 1.5}, "--threshold"), ({"margin": -0.1}, "--margin"), ({"per_label": 0}, "per_label")],
)
def test_bad_settings_are_input_errors(out, options, message):
    with pytest.raises(InputError, match=message):
        write_html_report(out, **options)


def test_missing_output_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no predictions"):
        write_html_report(tmp_path / "nothing")


# Appended to a test-only copy of the page: on load, record broken images and load errors.
PROBE = """<script>
const failures = [];
addEventListener("error", (e) => failures.push(String(e.message || e.target.tagName)), true);
addEventListener("load", () => {
  const images = [...document.images];
  const broken = images.filter((img) => !img.complete || img.naturalWidth === 0).map((img) => img.alt);
  document.body.dataset.probe = JSON.stringify({images: images.length, broken, failures});
});
</script>"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1280,2000", "--virtual-time-budget=5000"]  # fmt: skip
    flags.append(f"--user-data-dir={profile}")
    return subprocess.run(
        [str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=90, check=True
    )


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
def test_report_renders_in_headless_chromium(out, tree, tmp_path):
    (tree / "grey" / "grey_0.png").unlink()  # one placeholder must render too
    report = write_html_report(out)
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium("--dump-dom", probe.as_uri(), profile=tmp_path / "profile").stdout
    result = json.loads(re.search(r'data-probe="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert result["images"] >= 16 and result["broken"] == [] and result["failures"] == []
    screenshot = tmp_path / "report.png"
    chromium(f"--screenshot={screenshot}", report.as_uri(), profile=tmp_path / "profile")
    with Image.open(screenshot) as shot:
        assert shot.size == (1280, 2000) and len(shot.getcolors(1 << 16) or range(300)) > 50
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / "report.png")
