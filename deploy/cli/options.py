"""`--option [TARGET.]KEY=VALUE`: runtime adapters' settings from the command line, per target."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtimes import RuntimeOptions


def option_values(items: list[str] | None, targets: list[str]) -> dict[str, dict[str, str]]:
    """`--option [TARGET.]KEY=VALUE` items per target: a bare KEY goes to every target whose adapter has it."""
    from deploy.errors import DeployError
    from runtimes import get_backend

    chosen: dict[str, dict[str, str]] = {target: {} for target in targets}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DeployError(f"--option {item!r}: write KEY=VALUE (or TARGET.KEY=VALUE)")
        target, dot, name = key.partition(".")
        if dot and target in chosen:
            chosen[target][name] = value.strip()
            continue
        if dot:
            raise DeployError(f"--option {item!r}: {target} is not a target of this run ({', '.join(targets)})")
        takers = [t for t in targets if key in get_backend(t).options_type.__dataclass_fields__]
        if not takers and len(targets) == 1:
            takers = targets  # the adapter's own error then names its options
        if not takers:
            raise DeployError(f"--option {key}: none of {', '.join(targets)} has that option; "
                              "`python -m deploy doctor` lists each target's")
        for target in takers:
            chosen[target][key] = value.strip()
    return chosen


def runtime_options(target: str, items: list[str] | None) -> RuntimeOptions | None:
    """`--option` items for one target as its adapter's typed options (None when none are given)."""
    from runtimes import get_backend

    values = option_values(items, [target])[target]
    return get_backend(target).parse_options(values) if values else None
