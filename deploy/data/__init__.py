"""Inputs: seeded tensors, images preprocessed as each model expects, and labelled datasets.

Takes a zoo `ModelInfo` (input size, mean/std, interpolation, crop) and a source (a seed, an image
folder, the shipped digits); hands on numpy arrays in the model's layout. The export stage draws its
parity inputs and int8 calibration samples from here, the benchmark its timed inputs and accuracy sets.
"""
