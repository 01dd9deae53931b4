"""Graph passes over exported ONNX models, each named, counted and switchable.

Takes the cleaned-up ONNX export and a list of pass names; hands on the rewritten graph and what each
pass changed. `base` says what a pass is, the rule modules define them (one per concern: attention,
conv, normalization, pooling, precision), `pipeline` runs them.
"""

from .base import GraphPass, PassRecord, register_pass, rule_pass
from .pipeline import available_passes, get_pass, run_passes

__all__ = ["GraphPass", "PassRecord", "available_passes", "get_pass", "register_pass", "rule_pass", "run_passes"]
