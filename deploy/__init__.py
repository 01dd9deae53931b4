"""Export, rewrite, build and measure vision transformers on edge runtimes.

Takes a model (a zoo name, a fine-tuned checkpoint, a Hugging Face folder, a factory or an `nn.Module`) and hands
on verified engines, benchmark results and predictions. The Python API is the stages themselves, callable:
`from deploy import export, bench, predict` (see `deploy.export.api`, `deploy.bench.api`, `deploy.predict`).
The command line is `python -m deploy` (`deploy.cli`).
"""

__version__ = "0.2.0"  # the one place the version is written (pyproject reads it); manifests and results record it
