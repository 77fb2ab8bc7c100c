"""Print the requirements of pyproject.toml's base dependencies plus the named extras, one per line.

The images install these (pinned by requirements.lock) before copying the code, so that the
dependency layer changes only when pyproject.toml or the lock does:
    python scripts/extra_requirements.py pyproject.toml adapter > /tmp/requirements.txt
"""

from __future__ import annotations

import sys
import tomllib


def requirements(pyproject_path: str, extras: list[str]) -> list[str]:
    with open(pyproject_path, "rb") as handle:
        project = tomllib.load(handle)["project"]
    own_name = project["name"]
    listed = list(project["dependencies"])
    for extra in extras:
        listed += project["optional-dependencies"][extra]
    # An extra may name other extras of this project ("chatterbox-serve[adapter]"): those are listed too.
    return [r for r in listed if not r.startswith(own_name)]


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1], sys.argv[2:])))
