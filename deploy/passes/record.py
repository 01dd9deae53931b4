"""What a pass run reports: its name and how many places it changed (recorded in manifests and results)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PassRecord:
    name: str
    changed: int

    def to_json(self) -> dict:
        return {"name": self.name, "changed": self.changed}
