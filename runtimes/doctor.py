"""What runtimes this machine has, their versions and devices, and why a missing one is missing (`deploy doctor`)."""

from __future__ import annotations

from typing import Any

from . import Availability, Backend, get_backend, target_names


def runtime_report() -> list[dict[str, Any]]:
    rows = []
    for name in target_names():
        backend, status = probe(name)
        extra = getattr(backend, "pip_extra", None)
        rows.append({
            "runtime": name, "installed": status.available, "version": status.version,
            "devices": list(status.devices), "providers": list(status.providers),
            "can_build": status.can_build, "can_run": status.can_run,
            "precisions": list(getattr(backend, "precisions", ())), "reason": status.reason,
            "install": f"pip install -e .[{extra}]" if extra else "(default install)",
            "options": backend.options_type().to_json() if backend else {},
        })
    return rows


def probe(name: str) -> tuple[Backend | None, Availability]:
    """A backend and its availability; a broken install must not take the caller down with it."""
    try:
        backend = get_backend(name)
        return backend, backend.availability()
    except Exception as exc:
        return None, Availability(False, None, f"probing failed: {type(exc).__name__}: {exc}")


def format_report(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        state = ("ready" if row["can_run"] else "build only") if row["installed"] else "missing"
        version = row["version"] or "-"
        lines.append(f"{row['runtime']:<12} {state:<10} {version:<14} "
                     f"build={'yes' if row['can_build'] else 'no':<3} run={'yes' if row['can_run'] else 'no':<3} "
                     f"precisions={','.join(row['precisions'])}")
        if row["devices"]:
            lines.append(f"{'':<12} devices: {', '.join(row['devices'])}")
        if row["providers"]:
            lines.append(f"{'':<12} providers here: {', '.join(row['providers'])}")
        if row["reason"]:
            lines.append(f"{'':<12} why: {row['reason']}")
        if row["options"]:
            defaults = ", ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                                 for k, v in row["options"].items())
            lines.append(f"{'':<12} --option (defaults): {defaults}")
        if not row["installed"]:
            lines.append(f"{'':<12} install: {row['install']}")
    return "\n".join(lines)
