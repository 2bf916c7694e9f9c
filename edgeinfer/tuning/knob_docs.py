"""The knob spaces as a Markdown table (docs/knobs.md is this module's output; a test keeps them equal):
``python -m edgeinfer.tuning.knob_docs > docs/knobs.md``."""

from __future__ import annotations

from edgeinfer.planning import KNOB_SPACES


def render() -> str:
    lines = [
        "# Knob spaces of the OpenCL kernel templates",
        "",
        "Generated from `KNOB_SPACES` (each template's space is defined next to its planner in",
        "`edgeinfer/planning/conv.py` and `blocked.py`) by `python -m edgeinfer.tuning.knob_docs > docs/knobs.md`.",
        "`edgeinfer tune` searches these spaces; a space is pruned per workload and per device (register budget of",
        "the device's ISA class, work-group limit), so the candidates of one workload are a subset.",
        "",
        "| template | knob | meaning |",
        "|---|---|---|",
    ]
    for template in sorted(KNOB_SPACES):
        for knob, meaning in KNOB_SPACES[template].knobs.items():
            lines.append(f"| `{template}` | `{knob}` | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
