"""Diagnosis: where an engine spends its time and where it loses precision, each traced to the model's modules.

Takes an artifact folder and its loaded runner (profiles: `profile`, with `attribution` mapping ONNX nodes to
module groups, `nodes` the artifact's node map, `records` the typed `LayerProfile`), or a model and a target's
graphs (precision: the fp32 graph and the same graph at low precision, from the export stage's passes) and the
inputs to run them on; hands on a `LayerProfile` (per part and unit of the model: share of the latency next to
share of the MACs, runtime op types, slowest nodes) for `bench --profile` and `python -m deploy profile`, and
per-layer findings (`PrecisionReport`: each layer's signal-to-noise against fp32, the error it adds, the
PyTorch module it came from) for `python -m deploy debug-precision`.
"""
