"""A learned cost model: gradient-boosted trees ranking a template's configs (one model per template, as AutoTVM's
XGBoost model, here scikit-learn's).

Trained on every valid measurement so far: this run's, the device's earlier runs' (the record log) and, with a
lower weight, the tuned tables of devices of the same family (their best configs and times), so a new device
starts from what its siblings learned (transfer across workloads and devices). It only ranks candidates: every
config that enters a table is measured and checked.

What it learns is a ranking, not a latency: each sample's target is its rank among the samples of the same
workload on the same device (0 the fastest, towards 1 the slowest), so workloads whose times differ tenfold, and
devices whose clocks differ, teach one scale, and a one-off slow measurement counts as one rank, not as a tenfold
outlier. Its inputs are the geometry of the planned launch (features.py) besides the raw knobs and sizes. The
workload being tuned weighs more than the others once it has measurements of its own (measured on 684 PoCL and
1,054 H200 configs: benchmarks/RESULTS.md 6e)."""

from __future__ import annotations

import json
import math
import zlib
from typing import Any, NamedTuple

import numpy as np

from edgeinfer.cpu_isa import ISA_CLASSES, IsaClass
from edgeinfer.tuning.features import geometry_row

# Measurements from other devices count this much (their absolute times differ; their rankings carry over).
OTHER_DEVICE_WEIGHT = 0.3
# The workload being tuned counts this many times a sample of another workload (its own ranking is what matters).
OWN_WORKLOAD_WEIGHT = 3.0
MIN_SAMPLES = 6  # below this the model ranks no better than chance: the search explores at random


class Sample(NamedTuple):
    """One valid measurement the model learns from; ``source`` names where it was measured (a device key), so that
    ranks are taken among measurements of one workload on one device."""

    workload: dict[str, Any]
    config: dict[str, Any]
    ms: float
    weight: float = 1.0
    source: str = ""


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return math.log2(1.0 + max(float(value), 0.0))
    # a categorical knob (VEC "B"/"N"/..., MODE "rows"/"flat"): a stable code; trees split on it
    return float(zlib.crc32(str(value).encode()) % 1009)


def features(
    template: str, workload: dict[str, Any], config: dict[str, Any], keys: list[str], isa: IsaClass
) -> list[float]:
    """One row: the launch geometry (features.py), then the workload's and the config's fields in ``keys`` order;
    ``local`` and other lists spread over three columns; -1 where a config lacks a knob."""
    merged = {**{f"w.{k}": v for k, v in workload.items()}, **{f"c.{k}": v for k, v in config.items()}}
    row = geometry_row(template, workload, config, isa)
    for key in keys:
        value = merged.get(key)
        if key.endswith("]"):  # "c.local[1]"
            base, index = key[:-1].split("[")
            items = merged.get(base)
            row.append(_number(items[int(index)]) if isinstance(items, list) and len(items) > int(index) else -1.0)
        else:
            row.append(-1.0 if value is None else _number(value))
    return row


def feature_keys(samples: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    keys: set[str] = set()
    for workload, config in samples:
        keys.update(f"w.{k}" for k in workload)
        for k, v in config.items():
            if isinstance(v, list):
                keys.update(f"c.{k}[{i}]" for i in range(3))
            else:
                keys.add(f"c.{k}")
    return sorted(keys)


def workload_ranks(samples: list[Sample]) -> np.ndarray:
    """Each sample's rank among the samples of its workload and source: the share of them that are faster (0 for
    the fastest, and for a workload's only sample, such as a table's winner)."""
    groups: dict[str, list[float]] = {}
    keys = [json.dumps([s.workload, s.source], sort_keys=True) for s in samples]
    for key, sample in zip(keys, samples):
        groups.setdefault(key, []).append(sample.ms)
    return np.array([sum(ms < s.ms for ms in groups[key]) / len(groups[key]) for key, s in zip(keys, samples)])


class CostModel:
    """Ranks configs of ``template`` on a device of ISA class ``isa`` (lower is faster); needs scikit-learn
    (``pip install 'edgeinfer[tune]'``)."""

    def __init__(self, template: str = "", isa: IsaClass = ISA_CLASSES["simt"], seed: int = 0):
        self.template, self.isa, self.seed = template, isa, seed
        self._model = None
        self._keys: list[str] = []

    def fit(self, samples: list[Sample], workload: dict[str, Any] | None = None) -> bool:
        """Train on ``samples``, those of ``workload`` (the one being tuned) weighted up; False (and no model)
        with too few samples."""
        if len(samples) < MIN_SAMPLES:
            self._model = None
            return False
        from sklearn.ensemble import GradientBoostingRegressor

        self._keys = feature_keys([(s.workload, s.config) for s in samples])
        x = np.array([features(self.template, s.workload, s.config, self._keys, self.isa) for s in samples])
        weights = np.array([s.weight * (OWN_WORKLOAD_WEIGHT if s.workload == workload else 1.0) for s in samples])
        self._model = GradientBoostingRegressor(
            n_estimators=100, max_depth=3, learning_rate=0.1, subsample=0.9, random_state=self.seed
        )
        self._model.fit(x, workload_ranks(samples), sample_weight=weights)
        return True

    @property
    def ready(self) -> bool:
        return self._model is not None

    def predict(self, workload: dict[str, Any], configs: list[dict[str, Any]]) -> np.ndarray:
        """Predicted rank of each config among the workload's configs (lower is faster)."""
        x = np.array([features(self.template, workload, c, self._keys, self.isa) for c in configs])
        return self._model.predict(x)


def require_sklearn() -> None:
    """Fail early, saying what to install, where the model cannot be trained."""
    try:
        import sklearn  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "edgeinfer tune's cost model needs scikit-learn: pip install 'edgeinfer[tune]' (or use --search random)"
        ) from e
