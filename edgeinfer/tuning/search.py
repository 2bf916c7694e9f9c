"""The search over one task's knob space: model-guided (exploit the cost model's best guesses, explore at
random) or plain random, on a budget of measured trials. The measure function is passed in, so the same
search runs on a device (tuner.py) and on a table of earlier measurements (benchmarks/tuner_search.py)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgeinfer.tuning.cost_model import CostModel, Sample
from edgeinfer.tuning.measure import Measurement
from edgeinfer.tuning.records import config_key

MeasureFn = Callable[[dict[str, Any]], Measurement]


@dataclass
class SearchState:
    """What one task's search has measured (earlier runs' measurements included, so a rerun resumes)."""

    workload: dict[str, Any]
    source: str = ""  # the device key: this search's measurements join the log's of the same device as samples
    measured: dict[str, tuple[dict[str, Any], Measurement]] = field(default_factory=dict)  # config_key -> ...
    trials: int = 0  # measured in this run

    def add(self, config: dict[str, Any], result: Measurement) -> None:
        self.measured[config_key(config)] = (dict(config), result)

    @property
    def best(self) -> tuple[dict[str, Any], float] | None:
        valid = [(c, m.ms) for c, m in self.measured.values() if m.valid]
        return min(valid, key=lambda item: item[1]) if valid else None


class StopSearch(Exception):
    """The time budget ran out (or the user interrupted): keep what was measured."""


def search(
    state: SearchState,
    candidates: list[dict[str, Any]],
    measure: MeasureFn,
    trials: int,
    *,
    strategy: str = "model",
    samples: list[Sample] | None = None,
    rng: random.Random | None = None,
    batch: int = 4,
    explore: float = 0.1,
    model: CostModel | None = None,
    on_measured: Callable[[dict[str, Any], Measurement], None] | None = None,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
) -> SearchState:
    """Measure up to ``trials`` not-yet-measured ``candidates`` (in batches of ``batch``), chosen at random
    (``strategy="random"``) or by the cost model trained on ``samples`` (the template's other measurements) plus
    everything measured so far, a fraction ``explore`` of each batch still at random. ``model``: the template's
    (cost_model.CostModel); ``on_batch`` sees each batch before it is measured (the tuner builds its programs in
    parallel). ``measure`` may raise StopSearch."""
    rng = rng or random.Random(0)
    model = model or CostModel(seed=rng.randrange(2**31))
    samples = list(samples or [])
    pending = [c for c in candidates if config_key(c) not in state.measured]
    rng.shuffle(pending)
    while state.trials < trials and pending:
        size = min(batch, trials - state.trials, len(pending))
        chosen = _next_batch(state, pending, size, strategy, samples, model, rng, explore)
        if on_batch is not None:
            on_batch(chosen)
        for config in chosen:
            pending.remove(config)
            result = measure(config)
            state.add(config, result)
            state.trials += 1
            if result.valid:
                samples.append(Sample(state.workload, config, result.ms, 1.0, state.source))
            if on_measured is not None:
                on_measured(config, result)
    return state


def _next_batch(state, pending, size, strategy, samples, model, rng, explore) -> list[dict[str, Any]]:
    if strategy == "random" or not model.fit(samples, state.workload):
        return pending[:size]  # pending is shuffled
    explored = sum(rng.random() < explore for _ in range(size))
    scores = model.predict(state.workload, pending)
    ranked = [pending[i] for i in sorted(range(len(pending)), key=lambda i: scores[i])]
    chosen = ranked[: size - explored]
    rest = [c for c in pending if all(c is not other for other in chosen)]
    return chosen + rng.sample(rest, min(explored, len(rest)))
