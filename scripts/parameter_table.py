"""Write the synthesis-parameter table (contract/params.py) into the documentation.

    python -m scripts.parameter_table          # rewrite the marked blocks
    python -m scripts.parameter_table --check  # exit 1 if any block differs (tests/unit/test_contract.py)

Each file holds the table between `<!-- parameter-table -->` and `<!-- /parameter-table -->`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from contract.params import markdown_table

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/adapter-api.md", "docs/predictor-api.md")
BEGIN, END = "<!-- parameter-table -->", "<!-- /parameter-table -->"
_BLOCK = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)


def render(text: str) -> str:
    if not _BLOCK.search(text):
        raise ValueError(f"no {BEGIN} ... {END} block")
    return _BLOCK.sub(lambda _: f"{BEGIN}\n{markdown_table()}\n{END}", text)


def stale_documents(root: Path = ROOT) -> list[str]:
    return [name for name in DOCUMENTS if render((root / name).read_text()) != (root / name).read_text()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report documents whose table is stale")
    args = parser.parse_args()
    stale = stale_documents()
    if args.check:
        for name in stale:
            print(f"{name}: the parameter table differs from contract/params.py", file=sys.stderr)
        return 1 if stale else 0
    for name in stale:
        path = ROOT / name
        path.write_text(render(path.read_text()))
        print(f"updated {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
