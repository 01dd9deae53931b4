"""Print vit-deploy's pip requirements for one image: core dependencies plus extras, minus what the base
image already provides.

The NVIDIA images (tensorrt, jetson) start from a base that ships TensorRT. Their builder stage runs

    python docker/requirements.py --extra tensorrt --exclude tensorrt > /dist/requirements.txt

and the runtime stage installs that file plus the project wheel with `--no-deps`, so pip never sees a
`tensorrt` requirement and cannot download a second TensorRT over the base's. The list comes from
pyproject.toml, so a dependency added there reaches these images without editing a Dockerfile.

Every excluded name must match a requirement: if the extra is renamed or its TensorRT requirement
changes, the build stops here instead of silently installing (or skipping) the wrong thing.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tomllib

_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"cannot read a project name from requirement {requirement!r}")
    return canonical(match.group(1))


def requirements(pyproject: dict, extras: list[str], exclude: list[str]) -> list[str]:
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise ValueError(f"no extra {', '.join(unknown)} in pyproject.toml; extras: {', '.join(sorted(optional))}")
    wanted = list(project.get("dependencies", []))
    for extra in extras:
        wanted.extend(optional[extra])
    own = canonical(project["name"])
    if any(requirement_name(r) == own for r in wanted):
        raise ValueError(f"an extra refers to {project['name']} itself; list its requirements directly")
    excluded = {canonical(name) for name in exclude}
    missing = excluded - {requirement_name(r) for r in wanted}
    if missing:
        raise ValueError(f"--exclude {', '.join(sorted(missing))} matches no requirement of "
                         f"{project['name']} with extras {extras or '(none)'}")
    kept: list[str] = []
    for requirement in wanted:
        if requirement_name(requirement) not in excluded and requirement not in kept:
            kept.append(requirement)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--extra", action="append", default=[], help="an extra to include (repeatable)")
    parser.add_argument("--exclude", action="append", default=[],
                        help="a distribution the base image provides (repeatable)")
    args = parser.parse_args(argv)
    try:
        with args.pyproject.open("rb") as fh:
            listed = requirements(tomllib.load(fh), args.extra, args.exclude)
    except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(listed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
