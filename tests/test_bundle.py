"""The bundle contract: bundle.json keeps what it does not know, and every format version reads."""

import json
import shutil
from pathlib import Path

import pytest

from classify_job.bundle import FORMAT_VERSION, SPEC_FILE, read_spec, write_spec
from classify_job.errors import BundleError

V1 = Path(__file__).parent / "fixtures" / "v1"


def test_unknown_keys_survive_a_rewrite(tmp_path):
    bundle = shutil.copytree(V1 / "cnn_bundle", tmp_path / "b")
    data = json.loads((bundle / SPEC_FILE).read_text())
    assert data["format_version"] == 1
    data["exports"] = [{"format": "onnx", "file": "model.onnx"}]
    data["calibration"] = {"method": "temperature", "temperature": 1.3}
    (bundle / SPEC_FILE).write_text(json.dumps(data))
    spec = read_spec(bundle)
    write_spec(bundle, spec)
    rewritten = json.loads((bundle / SPEC_FILE).read_text())
    assert rewritten["format_version"] == FORMAT_VERSION
    assert rewritten["exports"] == data["exports"] and rewritten["calibration"] == data["calibration"]
    assert read_spec(bundle) == spec


def test_a_newer_format_still_reads(tmp_path, caplog):
    bundle = shutil.copytree(V1 / "cnn_bundle", tmp_path / "b")
    data = json.loads((bundle / SPEC_FILE).read_text())
    (bundle / SPEC_FILE).write_text(json.dumps({**data, "format_version": FORMAT_VERSION + 1}))
    assert read_spec(bundle).labels == ("blue", "green", "red")
    assert "newer" in caplog.text


@pytest.mark.parametrize("text", ["[1, 2]", "{}", "not json"])
def test_malformed_specs_are_bundle_errors(tmp_path, text):
    (tmp_path / SPEC_FILE).write_text(text)
    with pytest.raises(BundleError):
        read_spec(tmp_path)
