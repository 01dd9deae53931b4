"""`bench --resume --json FILE`: the request a results file records, with any flags given beside it checked.

The file's plan (models, targets, batches, precisions, artifact folder) and settings are what the run
continues with; a flag given next to `--resume` must agree with the file, or the command is refused,
naming the difference (cells measured two ways would not be comparable).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deploy.bench import BenchRequest

# bench flag -> BenchSettings field it sets
SETTING_FLAGS = {"warmup": "warmup_s", "runs": "runs", "duration": "duration_s", "buffers": "buffers",
                 "threads": "threads", "seed": "seed", "dataset": "dataset", "limit": "dataset_limit",
                 "passes": "passes", "weights": "weights", "profile": "layer_profile", "num_classes": "num_classes",
                 "img_size": "img_size", "model_factory": "model_factory"}


def resumed_request(args: argparse.Namespace) -> BenchRequest:
    from deploy.bench import BenchRequest, load_results
    from deploy.errors import DeployError

    path = Path(args.json)
    if not path.exists():
        raise DeployError(f"--resume: {path} does not exist (drop --resume to start a new run there)")
    document = load_results(path)
    plan = document.plan
    if plan is None:
        raise DeployError(f"--resume: {path} records no plan (it predates plan recording); give the MODEL names "
                          "and the flags of the original run")
    recorded: dict[str, Any] = {"MODEL names": plan.models, "--target": plan.targets, "--batch": plan.batches,
                                "--precision": plan.precision, "--out": plan.out}
    given: dict[str, Any] = {"MODEL names": args.models or None, "--target": args.target, "--batch": args.batch,
                             "--precision": args.precision, "--out": args.out}
    settings = asdict(document.settings)
    for flag, name in SETTING_FLAGS.items():
        recorded[f"--{flag}"], given[f"--{flag}"] = settings[name], getattr(args, flag)
    recorded["--device"], given["--device"] = document.settings.device, ",".join(args.device) if args.device else None
    differ = [f"{flag} {given[flag]!r} here, {recorded[flag]!r} in the file" for flag in given
              if given[flag] is not None and _normal(given[flag]) != _normal(recorded[flag])]
    if differ:
        raise DeployError(f"--resume: {path} was run otherwise ({'; '.join(differ)}); drop those flags to continue "
                          "the file's run, or write a new --json")
    return BenchRequest(models=plan.models, targets=plan.targets, batches=plan.batches, settings=document.settings,
                        out=Path(plan.out or "artifacts"), precision=plan.precision,
                        precisions={t: tuple(p) for t, p in plan.precisions.items()} if plan.precisions else None,
                        device=document.environment.device)


def _normal(value: Any) -> Any:
    """Lists compare as sets (`--batch 4 --batch 1` is the file's [1, 4]); paths as strings."""
    if isinstance(value, (list, tuple)):
        return sorted(map(str, value))
    return str(value) if isinstance(value, Path) else value
