"""What the cost model sees of one (workload, config): the geometry of the launch the planner makes of it.

Raw knobs say little across workloads (TP=7 is a good tile on a 28-pixel row, a poor one on a 16-pixel row); the
launch they give says more: how many work-items, how many outputs and vector accumulators one work-item holds,
how much of the register file that is, how many loads feed each FMA, and how much work partial tiles waste. The
geometry is computed from the workload's sizes with the planners' own rules (blocked.py: channel blocks, register
budget, which dimension a work-item walks), not by planning a graph, because the records of other workloads and
devices that the model learns from (the log, the family's tables) carry no graph to plan; tests/test_tune.py
checks it against the launches the planners make.
"""

from __future__ import annotations

import math
import re
from typing import Any

from edgeinfer.cpu_isa import IsaClass
from edgeinfer.planning.blocked import registers_needed, vectors_per_block
from edgeinfer.planning.layout import blocks

BLOCKED_TEMPLATE = re.compile(r"^(pw|direct|dw|sep)(\d+)$")  # pw16, direct8, dw4, sep16 (blocked.py)
# Knobs that tile one output dimension, with the workload fields that size it (first present wins); used where a
# template's launch is not modelled exactly (the NCHW GPU templates).
TILED_DIMENSIONS = {"TM": ("M", "Co"), "TN": ("N", "W"), "TY": ("H",), "TC": ("C",), "TP": ("W",), "TW": ("W",)}
TILE_KNOBS = ("TM", "TN", "NV", "TY", "TC", "TP", "NB", "TW", "WM", "WN")
OUTPUT_FIELDS = ("M", "N", "H", "W", "G")
GEOMETRY = ("outputs_per_item", "work_items", "items_per_group", "work_groups", "accumulators", "register_use",
            "loads_per_fma", "tail_waste")  # fmt: skip


def launch_geometry(template: str, workload: dict[str, Any], config: dict[str, Any], isa: IsaClass) -> dict[str, float]:
    """The planned launch of ``config`` on ``workload`` (batch 1), keys ``GEOMETRY``: outputs one work-item computes,
    work-items, work-items per group, work-groups, vector accumulators it keeps live, the share of ``isa``'s vector
    registers its inner loop needs, loads per FMA (1/a + 1/b for an a x b register tile) and the fraction of the
    computed outputs that fall outside the tensor (partial tiles, padded channel blocks)."""
    blocked = BLOCKED_TEMPLATE.match(template)
    geometry = _blocked(blocked[1], int(blocked[2]), workload, config, isa) if blocked else _generic(workload, config)
    local = config.get("local")
    group = float(math.prod(local)) if isinstance(local, list) and local else 1.0
    geometry["items_per_group"] = group
    geometry["work_groups"] = max(geometry["work_items"] / group, 1.0)
    return geometry


def _blocked(kind: str, block: int, workload: dict[str, Any], config: dict[str, Any], isa: IsaClass):
    """blocked.py's launches: pw walks TP pixels of the flattened plane, direct/sep a whole output row in tiles of
    TP pixels, dw a whole row in tiles of TW pixels over TY rows; NB output blocks per work-item (dw: one)."""
    h, w = workload["H"], workload["W"]
    per_vector = vectors_per_block(isa, block)
    if kind == "dw":
        tw, ty = int(config["TW"]), int(config["TY"])
        channel_blocks = blocks(workload["C"], block)
        items = -(-h // ty) * channel_blocks
        computed = -(-h // ty) * ty * -(-w // tw) * tw * channel_blocks * block
        real = h * w * workload["C"]
        return {"outputs_per_item": ty * w * block, "work_items": items, "accumulators": tw * ty * per_vector,
                "register_use": registers_needed(kind, config, block, isa) / isa.registers,
                "loads_per_fma": 1 / tw + 1 / ty, "tail_waste": computed / real - 1}  # fmt: skip
    tp, nb = int(config["TP"]), int(config["NB"])
    output_blocks = blocks(workload["Co"], block)
    groups_of_nb = -(-output_blocks // nb)
    if kind == "pw":  # one tile of TP pixels of the flattened plane per work-item
        items, per_item, covered_pixels = -(-(h * w) // tp) * groups_of_nb, tp, -(-(h * w) // tp) * tp
    else:  # direct, sep: one output row per work-item, in tiles of TP pixels
        items, per_item, covered_pixels = h * groups_of_nb, w, h * -(-w // tp) * tp
    computed = covered_pixels * groups_of_nb * nb * block
    real = h * w * workload["Co"]
    return {"outputs_per_item": per_item * nb * block, "work_items": items, "accumulators": tp * nb * per_vector,
            "register_use": registers_needed(kind, config, block, isa) / isa.registers,
            "loads_per_fma": 1 / tp + 1 / nb, "tail_waste": computed / real - 1}  # fmt: skip


def _generic(workload: dict[str, Any], config: dict[str, Any]):
    """The NCHW templates (conv2d, depthwise, gemm): a work-item computes the product of its tile knobs; each tile
    knob rounds its output dimension up to whole tiles."""
    tile_sizes = [float(config[k]) for k in TILE_KNOBS if isinstance(config.get(k), (int, float))]
    tile = math.prod(tile_sizes)
    outputs = math.prod(float(workload[k]) for k in OUTPUT_FIELDS if isinstance(workload.get(k), (int, float)))
    if "M" not in workload:
        outputs *= float(workload.get("Co") or workload.get("C") or 1)
    waste = 1.0
    for knob, fields in TILED_DIMENSIONS.items():
        extent = next((workload[f] for f in fields if isinstance(workload.get(f), (int, float))), None)
        if isinstance(config.get(knob), (int, float)) and extent:
            waste *= -(-extent // config[knob]) * config[knob] / extent
    a, b = sorted([1.0, 1.0, *tile_sizes])[-2:]  # the two largest tile sizes: the register tile's sides
    return {"outputs_per_item": tile, "work_items": max(outputs / tile, 1.0), "accumulators": tile,
            "register_use": tile / 64.0, "loads_per_fma": 1 / a + 1 / b, "tail_waste": waste - 1}  # fmt: skip


def geometry_row(template: str, workload: dict[str, Any], config: dict[str, Any], isa: IsaClass) -> list[float]:
    """``launch_geometry`` as model inputs: sizes and counts on a log2 scale, shares as they are."""
    geometry = launch_geometry(template, workload, config, isa)
    logged = ("outputs_per_item", "work_items", "items_per_group", "work_groups", "accumulators")
    return [math.log2(max(geometry[k], 1.0)) if k in logged else float(geometry[k]) for k in GEOMETRY]
