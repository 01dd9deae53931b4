"""The Python API's `deploy.bench(models, targets, **settings)`: the benchmark matrix from Python values."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models import LoadedModel, ModelRequest

from ..export.api import construct, model_request, split_model_keywords

if TYPE_CHECKING:
    from .results import ResultsDocument


def bench_models(models: Any, targets: str | Sequence[str] = ("onnxruntime",), /, **kwargs: Any) -> ResultsDocument:
    """Benchmark one model or a list of them on `targets`: `BenchSettings`' fields as keywords (`runs`, `warmup_s`,
    `dataset`, `threads`, ...), plus `batches`, `precision`, `out`, `json` (a results file to write) and the models'
    own keywords (applied to each)."""
    from .plan import BenchRequest
    from .results import ResultsFile
    from .run import run_bench
    from .settings import BenchSettings

    described, rest = split_model_keywords(kwargs)
    batches = list(rest.pop("batches", [1]))
    precision = rest.pop("precision", None)
    out = Path(rest.pop("out", "artifacts"))
    json_path = rest.pop("json", None)
    options = rest.pop("options", None)
    target_list = [targets] if isinstance(targets, str) else list(targets)
    given = [m for m in (models if isinstance(models, (list, tuple)) else [models])]
    requests: dict[str, ModelRequest] = {}
    names = []
    for model in given:
        request = model_request(model, **described)
        if isinstance(request, LoadedModel):
            request = request.request
        names.append(request.display_name)
        requests[request.display_name] = request
    settings = construct(BenchSettings, options={t: {k: str(v) for k, v in options.items()} for t in target_list}
                          if options else None, **rest)
    bench = BenchRequest(models=names, targets=target_list, batches=batches, settings=settings, out=out,
                         precision=precision, model_requests=requests)
    return run_bench(bench, ResultsFile(Path(json_path)) if json_path else None)
