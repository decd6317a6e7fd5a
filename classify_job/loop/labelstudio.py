"""Label Studio's side of a review: the task file and labeling config written beside a review
folder, and the class each task's latest annotation chose, read back from a JSON export.

Tasks follow Label Studio's documented import format: ``data`` (the image URL and our own keys,
which Label Studio keeps and exports again) and ``predictions`` (``model_version``, ``score`` and
a ``choices`` result). Images are referenced as local files (``/data/local-files/?d=<path>``,
relative to ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``); docs/learning-loop.md says how to serve them.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from classify_job.atomic import write_json, write_text
from classify_job.errors import InputError

FOLDER = "labelstudio"
TASKS_FILE, CONFIG_FILE = "tasks.json", "config.xml"
CONTROL, OBJECT = "label", "image"  # the Choices control and the Image object of the config
LOCAL_FILES_URL = "/data/local-files/?d="


@dataclass(frozen=True)
class Verdict:
    """What Label Studio says about one exported item: the class chosen by its latest annotation
    (None while nobody has annotated it), and the keys that lead back to the manifest."""

    entry: str | None
    sha256: str | None
    label: str | None


def labeling_config(labels: Sequence[str], reject: str) -> str:
    """The labeling config: the image, a hint line, and one single-choice control holding every
    class plus ``reject``."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", name=OBJECT, value=f"${OBJECT}", zoom="true")
    ET.SubElement(view, "Header", value="$hint")
    choices = ET.SubElement(
        view,
        "Choices",
        name=CONTROL,
        toName=OBJECT,
        choice="single-radio",
        showInline="true",
        required="true",
    )
    for label in [*labels, reject]:
        ET.SubElement(choices, "Choice", value=label)
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def image_url(path_from_root: str) -> str:
    """The URL Label Studio serves a local file under, for its path below the document root."""
    return LOCAL_FILES_URL + quote(path_from_root, safe="/")


def task(data: dict[str, Any], predicted: str, score: float, model_version: str) -> dict[str, Any]:
    """One import task: ``data`` (which must hold ``image``) and the model's choice with its score."""
    result = {"from_name": CONTROL, "to_name": OBJECT, "type": "choices", "value": {"choices": [predicted]}}
    prediction = {"model_version": model_version, "score": round(float(score), 6), "result": [result]}
    return {"data": data, "predictions": [prediction]}


def write_project(folder: Path, tasks: Iterable[dict[str, Any]], labels: Sequence[str], reject: str) -> Path:
    """Write ``folder/labelstudio/tasks.json`` and ``config.xml``; returns the folder they are in."""
    target = Path(folder) / FOLDER
    write_json(target / TASKS_FILE, list(tasks))
    write_text(target / CONFIG_FILE, labeling_config(labels, reject))
    return target


def read_export(path: str | os.PathLike) -> list[Verdict]:
    """Every task of a Label Studio JSON export with the class its latest annotation chose.

    Cancelled (skipped) annotations do not count; "latest" is by ``updated_at``, then
    ``created_at``, then position in the list.
    """
    tasks = _load_tasks(Path(path))
    return [_verdict(t, Path(path)) for t in tasks]


def _load_tasks(path: Path) -> list[dict[str, Any]]:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"Label Studio export not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the Label Studio export {path}: {exc}") from exc
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and "data" in t for t in tasks):
        raise InputError(f"{path} is not a Label Studio JSON export (a list of tasks with data)")
    return tasks


def _verdict(item: dict[str, Any], path: Path) -> Verdict:
    data = item["data"] if isinstance(item["data"], dict) else {}
    annotations = [
        a for a in item.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")
    ]
    ranked = sorted(
        enumerate(annotations),
        key=lambda p: (str(p[1].get("updated_at") or p[1].get("created_at") or ""), p[0]),
    )
    label = _chosen(ranked[-1][1], path) if ranked else None
    return Verdict(data.get("entry"), data.get("sha256"), label)


def _chosen(annotation: dict[str, Any], path: Path) -> str | None:
    for result in annotation.get("result") or []:
        if result.get("type") == "choices" and result.get("from_name") == CONTROL:
            choices = (result.get("value") or {}).get("choices") or []
            if len(choices) != 1 or not isinstance(choices[0], str):
                raise InputError(f"{path}: an annotation must choose exactly one class. Received: {choices}")
            return choices[0]
    return None
