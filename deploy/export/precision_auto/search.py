"""`--precision auto`, step by step: build and gate the runtime's candidates, search mixed precision where full int8
misses the goal, prune a Q/DQ placement where int8 is not faster, time every candidate interleaved, choose.

    base candidates -> mixed (rank layers, k worst in float) -> placement -> interleaved timing -> choice

Every build counts against `--auto-budget`; a candidate over it is recorded as skipped. The timing is
`--passes auto`'s (`AutotuneSettings`, `deploy.timing.interleaved_rounds`): all candidates loaded together, timed
in rounds whose order reverses every other round, each scored by its best round's median. The winner is the
simplest passing candidate (fp32 first, in `candidates`' order) within the tie margin of the fastest passing one,
so a reduced precision must beat fp32 by more than the noise to be published.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from runtimes import Runner
from runtimes.base import first_line

from ...errors import DeployError
from ...timing import CandidateLatency, TimingSettings, input_feeds, interleaved_rounds
from ..accuracy import predict, topk
from .candidates import MIXED_TARGETS, QDQ_TARGETS, Recipe, base_recipes
from .mixed import MixedSearch, rank_layers
from .placement import Placement, place
from .record import (
    CandidateAccuracy,
    CandidateSeeded,
    CandidateStatus,
    LayerNoise,
    PrecisionAutoRecord,
    PrecisionCandidate,
    pareto_front,
)
from .trial import SearchContext, Trial, build_trial

log = logging.getLogger("deploy")
RANKED_IN_RECORD = 10  # the noisiest layers the manifest lists
# Each round times a candidate for at least this long (and at least `runs` inferences): eight runs of a 0.3 ms
# digits model are 2.4 ms, shorter than one scheduler slice of a process competing for the core.
ROUND_S = 0.2


@dataclass(frozen=True)
class PrecisionSearch:
    winner: Trial
    record: PrecisionAutoRecord


@dataclass
class _Search:
    context: SearchContext
    trials: list[Trial] = field(default_factory=list)
    skipped: list[tuple[Recipe, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, CandidateAccuracy] = field(default_factory=dict)  # measured after timing (fp32's)

    @property
    def budget(self) -> int:
        return self.context.request.auto_budget

    def build(self, recipe: Recipe) -> Trial | None:
        """One candidate built and gated, or None (and recorded as skipped) once the budget is spent."""
        if len(self.trials) >= self.budget:
            self.skipped.append((recipe, f"not built: --auto-budget {self.budget} spent"))
            return None
        trial = build_trial(self.context, recipe, len(self.trials))
        self.trials.append(trial)
        outcome = "error" if trial.error else "passes" if trial.passed else "misses the goal"
        log.info("precision auto: built %s (%d/%d) in %.0f s: %s%s", recipe.label, len(self.trials), self.budget,
                 trial.build_s, outcome, f" ({trial.reason})" if trial.reason and not trial.passed else "")
        return trial


def search_precision(context: SearchContext) -> PrecisionSearch:
    """Every candidate built, gated and timed; the winner and the record of all of them."""
    if not context.availability.can_run:
        raise DeployError(f"--precision auto measures each candidate on this machine, and {context.target} cannot "
                          f"run here: {context.availability.reason}")
    started = time.perf_counter()
    search = _Search(context)
    for recipe in base_recipes(context.target, context.job.backend.precisions, context.labelled is not None):
        search.build(recipe)
    if context.target == "openvino" and context.labelled is None:
        search.notes.append("NNCF's quantize_with_accuracy_control was not tried: it needs labelled images")
    ranking = _mixed(search)
    placement = _placement(search)
    latencies = _time(search)
    record = _record(search, latencies, ranking, placement, time.perf_counter() - started)
    winner = next(t for t in search.trials if _label(search, t) == record.winner)
    return PrecisionSearch(winner, record)


def _mixed(search: _Search) -> list[LayerNoise] | None:
    """Where every int8 candidate misses the goal: the k noisiest layers in float."""
    context = search.context
    int8 = [t for t in search.trials if t.recipe.precision == "int8" and not t.error]
    if context.target not in MIXED_TARGETS or not int8 or any(t.passed for t in int8):
        if int8 and any(t.passed for t in int8):
            search.notes.append("int8 with layers in float was not searched: full int8 meets the goal")
        return None
    if len(search.trials) >= search.budget:
        search.notes.append(f"int8 with layers in float was not searched: --auto-budget {search.budget} spent")
        return None
    base = max(int8, key=_closeness)
    ranking = rank_layers(context, base.recipe)
    if not ranking:
        search.notes.append("int8 with layers in float was not searched: no quantized layer to rank")
        return None
    MixedSearch(base.recipe, [layer.module for layer in ranking]).run(search.build)
    return ranking[:RANKED_IN_RECORD]


def _closeness(trial: Trial) -> float:
    """How near an int8 candidate came to the goal: its agreement (or top-1) on the images, else its cosine."""
    parity = trial.parity
    if parity is not None and parity.real_data is not None:
        return parity.real_data.agreement + parity.real_data.top1
    return parity.cosine or 0.0 if parity is not None else 0.0


def _placement(search: _Search) -> Placement | None:
    """For a Q/DQ graph: profile the passing int8 candidate with the fewest float layers, prune its placement."""
    context = search.context
    passing = [t for t in search.trials if t.recipe.precision == "int8" and t.passed and t.graph is not None]
    if context.target not in QDQ_TARGETS or not passing:
        return None
    base = min(passing, key=lambda t: len(t.recipe.keep_float))
    try:
        placement = place(context, base, runs=max(10, context.settings.runs * 2))
    except Exception as exc:  # a profile that fails leaves the candidates as they are
        search.notes.append(f"placement rule not applied: {type(exc).__name__}: {first_line(exc)}")
        return None
    if placement is None:
        search.notes.append(f"placement rule not applied: {context.target} cannot profile per node here")
        return None
    floating = tuple(dict.fromkeys((*base.recipe.keep_float, *placement.floating)))
    if placement.all_float:
        search.notes.append(f"placement rule: no layer kind of {base.recipe.label} is {placement.record.threshold:g}x "
                            "faster in int8 than in float: a placed graph would be fp32, so none was built")
    elif len(floating) > len(base.recipe.keep_float):
        search.build(base.recipe.with_float(floating, kind="placement"))
    else:
        search.notes.append(f"placement rule: every layer kind of {base.recipe.label} is at least "
                            f"{placement.record.threshold:g}x faster in int8; nothing to leave float")
    return placement


def _label(search: _Search, trial: Trial) -> str:
    """A candidate's label, made unique within the search."""
    index = search.trials.index(trial)
    label = trial.recipe.label
    same = [t for t in search.trials[:index] if t.recipe.label == label]
    return f"{label} #{len(same) + 1}" if same else label


def _time(search: _Search) -> dict[str, CandidateLatency]:
    """Every candidate that runs, timed interleaved; a candidate that will not load here is marked an error."""
    context = search.context
    settings = context.settings
    timing = TimingSettings(warmup_s=settings.warmup_s, runs=settings.runs, duration_s=ROUND_S, min_runs=settings.runs,
                            buffers=2, seed=context.job.seed)
    batch = settings.batch if settings.batch in context.request.batch else min(context.request.batch)
    feeds = input_feeds(context.job.source.input_specs[0].name, context.job.input_size, batch, timing)
    with contextlib.ExitStack() as active:
        runners: dict[str, Runner] = {}
        for index, trial in enumerate(search.trials):
            if not trial.runnable:
                continue
            try:
                runner = active.enter_context(trial.runner())
            except Exception as exc:
                search.trials[index] = _failed(trial, f"cannot run here: {first_line(exc)}")
                continue
            runners[_label(search, trial)] = runner
        if not runners:
            raise DeployError("--precision auto: no candidate runs here: " + "; ".join(
                f"{t.recipe.label}: {t.reason}" for t in search.trials))
        timed = interleaved_rounds(runners, feeds, timing, settings.rounds, warm_once=True)
        _measure_accuracy(search, runners)
    return {label: timed.latency(label) for label in runners}


def _failed(trial: Trial, reason: str) -> Trial:
    return replace(trial, passed=False, error=True, reason=reason)


def _measure_accuracy(search: _Search, runners: dict[str, Runner]) -> None:
    """The goal's figures for candidates the gate did not measure on the images (fp32), for the table."""
    context = search.context
    labelled, reference = context.labelled, context.reference
    if labelled is None or reference is None:
        return
    for trial in search.trials:
        label = _label(search, trial)
        if label not in runners or (trial.parity is not None and trial.parity.real_data is not None):
            continue
        logits = predict(_infer(runners[label], trial), labelled.images,
                         max(trial.build.batches or context.request.batch) if trial.build else 1)
        search.figures[label] = CandidateAccuracy(
            labelled.name, len(labelled), topk(logits, labelled.labels, 1), topk(reference, labelled.labels, 1),
            float((logits.argmax(-1) == reference.argmax(-1)).mean()))


def _infer(runner: Runner, trial: Trial) -> Callable[[np.ndarray], np.ndarray]:
    name, output = trial.job.source.input_specs[0].name, trial.job.source.output_names[0]
    return lambda x: runner.infer({name: x})[output]


def _accuracy(search: _Search, trial: Trial) -> CandidateAccuracy | None:
    parity = trial.parity
    if parity is not None and parity.real_data is not None:
        real = parity.real_data
        return CandidateAccuracy(real.dataset, real.images, real.top1, real.reference_top1, real.agreement)
    return search.figures.get(_label(search, trial))


def _choose(search: _Search, latencies: dict[str, CandidateLatency]) -> tuple[Trial, str]:
    """The simplest passing candidate within the tie margin of the fastest passing one, and why."""
    margin = search.context.settings.tie_margin
    passing = [t for t in search.trials if t.passed and _label(search, t) in latencies]
    if not passing:
        raise DeployError("--precision auto: no candidate meets the goal: " + "; ".join(
            f"{t.recipe.label}: {t.reason}" for t in search.trials))

    def score(trial: Trial) -> float:
        return latencies[_label(search, trial)].score

    fastest = min(passing, key=score)
    winner = next(t for t in passing if score(t) <= score(fastest) * (1 + margin))
    fp32 = next((t for t in passing if t.recipe.precision == "fp32"), None)
    if winner.recipe.precision == "fp32":
        if fastest is winner:
            others = [t for t in passing if t is not winner]
            beaten = f"; the fastest other passing candidate, {min(others, key=score).recipe.label}, is " \
                     f"{score(min(others, key=score)):.3f} ms" if others else ""
            return winner, f"nothing faster than fp32 meets the goal: fp32 published ({score(winner):.3f} ms{beaten})"
        return winner, (f"nothing meets the goal more than {margin:.0%} faster than fp32: fp32 published "
                        f"({score(winner):.3f} ms; {fastest.recipe.label} {score(fastest):.3f} ms is within the "
                        "margin)")
    versus = f", {score(winner) / score(fp32):.2f}x fp32's {score(fp32):.3f} ms" if fp32 else ""
    return winner, f"fastest meeting the goal: {score(winner):.3f} ms{versus}"


def _record(search: _Search, latencies: dict[str, CandidateLatency], ranking: list[LayerNoise] | None,
            placement: Placement | None, seconds: float) -> PrecisionAutoRecord:
    context = search.context
    winner, reason = _choose(search, latencies)
    win_ms = latencies[_label(search, winner)].score
    candidates = []
    for trial in search.trials:
        label = _label(search, trial)
        latency = latencies.get(label)
        parity = trial.parity
        status: CandidateStatus = ("chosen" if trial is winner else "error" if trial.error else "passed" if trial.passed
                  else "failed")
        why = (reason if trial is winner else trial.reason if status in ("error", "failed")
               else f"meets the goal, {latency.score:.3f} ms: {latency.score / win_ms:.2f}x the published one's"
               if latency else "meets the goal")
        candidates.append(PrecisionCandidate(
            label, trial.recipe.precision, trial.recipe.describe(context.target), status, why,
            list(trial.recipe.keep_float), _accuracy(search, trial),
            CandidateSeeded(parity.max_abs_rel, parity.cosine) if parity is not None and parity.cosine is not None
            and parity.max_abs_rel is not None else None, latency, build_s=round(trial.build_s, 1)))
    candidates += [PrecisionCandidate(r.label, r.precision, r.describe(context.target), "skipped", why,
                                      list(r.keep_float)) for r, why in search.skipped]
    goal, labelled = context.job.goal, context.labelled
    front = pareto_front(candidates, by_drop=goal.max_drop is not None and labelled is not None)
    for candidate in candidates:
        candidate.pareto = candidate.label in front
    settings = context.settings
    return PrecisionAutoRecord(
        goal=(f"{goal.describe()} on {len(labelled)} {labelled.name} images" if labelled is not None else
              "the parity tolerances on seeded inputs (no labelled images: accuracy not measured)"),
        accuracy_measured=labelled is not None, winner=_label(search, winner), precision=winner.recipe.precision,
        reason=reason, statistic=(f"best per-round median, batch {settings.batch}; {settings.rounds} interleaved "
                                  f"rounds of at least {settings.runs} runs and {ROUND_S:g} s each"),
        budget=search.budget, builds=len(search.trials), seconds=round(seconds, 1), settings=settings.to_json(),
        candidates=candidates, dataset=labelled.name if labelled is not None else None,
        images=len(labelled) if labelled is not None else None, ranking=ranking,
        max_drop=goal.max_drop if labelled is not None else None,
        min_agreement=goal.min_agreement if labelled is not None else None,
        placement=placement.record if placement else None, notes=search.notes)
