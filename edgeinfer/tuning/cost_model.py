"""A learned cost model: gradient-boosted trees predicting a config's log latency from the workload's sizes and
the config's knobs (one model per template, as AutoTVM's XGBoost model, here scikit-learn's).

Trained on every valid measurement so far: this run's, the device's earlier runs' (the record log) and, with a
lower weight, the tuned tables of devices of the same family (their best configs and times), so a new device
starts from what its siblings learned (transfer across workloads and devices). It only ranks candidates: every
config that enters a table is measured and checked."""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

# Measurements from other devices count this much (their absolute times differ; their rankings carry over).
OTHER_DEVICE_WEIGHT = 0.3
MIN_SAMPLES = 6  # below this the model ranks no better than chance: the search explores at random


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return math.log2(1.0 + max(float(value), 0.0))
    # a categorical knob (VEC "B"/"N"/..., MODE "rows"/"flat"): a stable code; trees split on it
    return float(zlib.crc32(str(value).encode()) % 1009)


# Config knobs that size the work of one work-item, and workload fields that size the output: their products
# give every template the same derived features (outputs per work-item, work-items, work-groups), which the
# trees would otherwise have to learn from few samples.
TILE_KNOBS = ("TM", "TN", "NV", "TY", "TC", "TP", "NB", "TW", "WM", "WN")
OUTPUT_FIELDS = ("M", "N", "H", "W", "G")


def derived(workload: dict[str, Any], config: dict[str, Any]) -> list[float]:
    """log2 of (outputs per work-item, work-items, work-items per group, work-groups)."""
    tile = math.prod(float(config[k]) for k in TILE_KNOBS if isinstance(config.get(k), (int, float)))
    outputs = math.prod(float(workload[k]) for k in OUTPUT_FIELDS if isinstance(workload.get(k), (int, float)))
    if "M" not in workload:
        outputs *= float(workload.get("Co") or workload.get("C") or 1)
    items = max(outputs / tile, 1.0)
    local = config.get("local")
    group = float(math.prod(local)) if isinstance(local, list) and local else 1.0
    return [math.log2(tile), math.log2(items), math.log2(group), math.log2(max(items / group, 1.0))]


def features(workload: dict[str, Any], config: dict[str, Any], keys: list[str]) -> list[float]:
    """One row: the derived sizes, then the workload's and the config's fields in ``keys`` order; ``local`` and
    other lists spread over three columns; -1 where a config lacks a knob."""
    merged = {**{f"w.{k}": v for k, v in workload.items()}, **{f"c.{k}": v for k, v in config.items()}}
    row = derived(workload, config)
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


class CostModel:
    """Predicts log(ms) of (workload, config) for one template; needs scikit-learn (``pip install
    'edgeinfer[tune]'``)."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._model = None
        self._keys: list[str] = []

    def fit(self, samples: list[tuple[dict[str, Any], dict[str, Any], float, float]]) -> bool:
        """Train on (workload, config, ms, weight); False (and no model) with too few samples."""
        if len(samples) < MIN_SAMPLES:
            self._model = None
            return False
        from sklearn.ensemble import GradientBoostingRegressor

        self._keys = feature_keys([(w, c) for w, c, _, _ in samples])
        x = np.array([features(w, c, self._keys) for w, c, _, _ in samples])
        y = np.log(np.array([ms for _, _, ms, _ in samples]))
        weights = np.array([weight for *_, weight in samples])
        self._model = GradientBoostingRegressor(
            n_estimators=120, max_depth=4, learning_rate=0.1, subsample=0.9, random_state=self.seed
        )
        self._model.fit(x, y, sample_weight=weights)
        return True

    @property
    def ready(self) -> bool:
        return self._model is not None

    def predict(self, workload: dict[str, Any], configs: list[dict[str, Any]]) -> np.ndarray:
        """Predicted log(ms) of each config (lower is faster)."""
        x = np.array([features(workload, c, self._keys) for c in configs])
        return self._model.predict(x)


def require_sklearn() -> None:
    """Fail early, saying what to install, where the model cannot be trained."""
    try:
        import sklearn  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "edgeinfer tune's cost model needs scikit-learn: pip install 'edgeinfer[tune]' (or use --search random)"
        ) from e
