"""Diagnosis: where an engine loses precision (and, with the profiles, where it spends its time).

Takes a model and a target's graphs (the fp32 graph and the same graph at low precision, from the export
stage's passes) and the inputs to run them on; hands on per-layer findings (`PrecisionReport`: each
layer's signal-to-noise against fp32, the error it adds, the PyTorch module it came from) for
`python -m deploy debug-precision`.
"""
