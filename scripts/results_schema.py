"""Write deploy/bench/results.schema.json, the JSON Schema of results files, from their types.

    python scripts/results_schema.py [--check]

`--check` exits 1 if the shipped file differs from what the types generate (the suite checks it too).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.bench import results  # noqa: E402

SHIPPED = Path(results.__file__).parent / "results.schema.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the shipped file")
    args = parser.parse_args(argv)
    text = json.dumps(results.results_json_schema(), indent=2) + "\n"
    if args.check:
        same = SHIPPED.read_text() == text
        print(f"{SHIPPED}: {'up to date' if same else 'differs from the types: run without --check'}")
        return 0 if same else 1
    SHIPPED.write_text(text)
    print(f"wrote {SHIPPED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
