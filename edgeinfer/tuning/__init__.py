"""``edgeinfer tune``: find each kernel template's best knobs on this device, guided by a learned cost model.

The paper's central idea (Wang et al., 2019): kernel templates whose knobs are chosen per device by an
ML-guided schedule search, shipped as tables. One tuning run:

1. ``workloads.py`` plans a pack on the device and collects its distinct tunable (template, workload) pairs,
   each with one node that has it;
2. ``search.py`` proposes configs from the template's knob space (``KNOB_SPACES``, defined next to each
   planner), ranked by ``cost_model.py`` (gradient-boosted trees trained on every measurement so far,
   warm-started from the records of earlier runs and the tables of devices of the same family), with random
   exploration;
3. ``measure.py`` builds the node alone with the config, checks its output against the NumPy reference, and
   times it with the device's profiling events (warm-up, repeats, median); a config that fails to build, is
   refused by the planner, exceeds a device limit or computes a wrong output is recorded as invalid;
4. ``records.py`` appends every measurement to a log (a rerun resumes from it) and ``tuner.py`` writes the
   best valid config per workload into a tuned-config table that ``Session`` picks up.
"""

from edgeinfer.tuning.report import coverage_report
from edgeinfer.tuning.tuner import TuneOptions, tune

__all__ = ["TuneOptions", "coverage_report", "tune"]
