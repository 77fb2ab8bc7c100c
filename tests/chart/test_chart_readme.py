"""charts/chatterbox-tts/README.md's values table is generated from values.yaml's `## @param` comments by
readme-generator-for-helm (`make chart-readme`), and the committed file is what it generates (issue 8,
part 8). The generator also refuses a values.yaml key without a description, or a description of a key
that does not exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.support import chart_render as cr

GENERATOR = os.environ.get("README_GENERATOR") or str(cr.ROOT / ".tools" / "node_modules" / ".bin" / "readme-generator")
README = cr.CHART / "README.md"
MAKEFILE = cr.ROOT / "Makefile"


def generate(values: Path, readme: Path) -> subprocess.CompletedProcess:
    assert Path(GENERATOR).exists(), f"readme-generator not found at {GENERATOR}: run `make test-tools`"
    return subprocess.run(
        [GENERATOR, "--values", str(values), "--readme", str(readme)], capture_output=True, text=True, timeout=120
    )


def test_readme_is_generated_from_values(tmp_path):
    values, readme = tmp_path / "values.yaml", tmp_path / "README.md"
    shutil.copy(cr.CHART / "values.yaml", values)
    shutil.copy(README, readme)
    proc = generate(values, readme)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert readme.read_text() == README.read_text(), "charts/chatterbox-tts/README.md is stale: run `make chart-readme`"


def test_generator_refuses_an_undocumented_key(tmp_path):
    values, readme = tmp_path / "values.yaml", tmp_path / "README.md"
    text = (cr.CHART / "values.yaml").read_text()
    values.write_text(
        text.replace("  deploymentMode: Standard\n", "  deploymentMode: Standard\n  undocumentedKey: 1\n")
    )
    shutil.copy(README, readme)
    proc = generate(values, readme)
    assert proc.returncode != 0 and "predictor.undocumentedKey" in proc.stdout + proc.stderr


def test_readme_lists_every_section_and_the_new_values():
    text = README.read_text()
    for section in re.findall(r"^## @section (.+)$", (cr.CHART / "values.yaml").read_text(), re.M):
        assert f"### {section}" in text
    # Every documented key has its row (a @param above the first @section would be dropped silently).
    keys = re.findall(r"^\s*## @param (\S+)", (cr.CHART / "values.yaml").read_text(), re.M)
    assert len(keys) > 150
    missing = [key for key in keys if f"| `{key}` " not in text]
    assert not missing, missing


def test_helm_is_the_version_the_makefile_pins():
    pinned = re.search(r"^HELM_VERSION := (\S+)", MAKEFILE.read_text(), re.M).group(1).split("-")[0]
    assert cr.helm("version", "--short").stdout.startswith(f"v{pinned}+"), "run `make test-tools`"
