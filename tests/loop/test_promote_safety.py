"""`promote` copies only a candidate's own files (a symbolic link inside it is refused), and what
a killed promotion leaves in the registry is removed by the next one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import COLORS, write_image
from typer.testing import CliRunner

from classify_job.bundle import read_spec
from classify_job.cli import app
from classify_job.errors import BundleError, PromotionRefused
from classify_job.loop.gate import PromoteConfig
from classify_job.loop.registry import BUNDLES, install_bundle, promote


def holdout(root: Path, per_class: int = 2) -> Path:
    for name, color in COLORS.items():
        for i in range(per_class):
            write_image(root / name / f"h_{i}.png", color, size=(16, 16))
    return root


@pytest.mark.parametrize("where", ["file", "folder"])
def test_a_symlink_inside_the_candidate_is_refused_and_nothing_is_copied(color_bundle, tmp_path, where):
    bundle = shutil.copytree(color_bundle, tmp_path / "candidate")
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not the bundle's")
    if where == "file":
        os.symlink(secret, bundle / "notes.txt")
    else:
        (bundle / "assets").mkdir()
        os.symlink(secret.parent, bundle / "assets" / "more")
    registry = tmp_path / "models"

    with pytest.raises(BundleError, match="symbolic link"):
        promote(PromoteConfig(bundle, registry, holdout(tmp_path / "holdout")))
    assert not (registry / BUNDLES).exists() and not (registry / "registry.json").exists()

    with pytest.raises(BundleError, match="symbolic link"):  # the copy is checked too
        install_bundle(registry, bundle, read_spec(bundle))
    assert not (registry / BUNDLES).exists() or not any((registry / BUNDLES).iterdir())

    result = CliRunner().invoke(
        app, ["promote", str(bundle), "--registry", str(registry), "--holdout", str(tmp_path / "holdout")]
    )
    assert result.exit_code not in (0, 1) and "symbolic link" in result.output, result.output


KILLER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from classify_job.bundle import read_spec
    from classify_job.loop import registry

    def replace(src, dst):
        os._exit(9)  # killed with the copy written, before its rename

    os.replace = replace
    bundle = Path(sys.argv[1])
    registry.install_bundle(Path(sys.argv[2]), bundle, read_spec(bundle))
    """
)


def test_a_killed_promotion_leaves_a_partial_copy_the_next_one_removes(color_bundle, tmp_path):
    registry = tmp_path / "models"
    killed = subprocess.run([sys.executable, "-c", KILLER, color_bundle, registry], check=False)
    assert killed.returncode == 9
    (partial,) = (registry / BUNDLES).iterdir()
    assert partial.name.startswith(".") and ".tmp-" in partial.name and (partial / "bundle.json").is_file()
    os.symlink("bundles/x", registry / ".current.tmp-999999")  # a link point_current never renamed
    kept = registry / BUNDLES / "kept-bundle"
    kept.mkdir()

    with pytest.raises(PromotionRefused):  # a refusal also cleans up: the lock says nobody writes
        promote(PromoteConfig(color_bundle, registry, holdout(tmp_path / "holdout")))

    assert [p.name for p in (registry / BUNDLES).iterdir()] == ["kept-bundle"]
    assert not os.path.lexists(registry / ".current.tmp-999999")
    assert json.loads((registry / "registry.json").read_text())["history"][-1]["event"] == "refused"
    copy = install_bundle(registry, color_bundle, read_spec(color_bundle))
    assert copy.parent == registry / BUNDLES and (copy / "bundle.json").is_file()
    assert sorted(p.name for p in (registry / BUNDLES).iterdir()) == sorted(["kept-bundle", copy.name])
