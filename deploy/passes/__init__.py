"""Graph passes over exported ONNX models, each named, counted and switchable."""

from .base import GraphPass, PassRecord, available_passes, get_pass, register_pass, rule_pass, run_passes

__all__ = ["GraphPass", "PassRecord", "available_passes", "get_pass", "register_pass", "rule_pass", "run_passes"]
