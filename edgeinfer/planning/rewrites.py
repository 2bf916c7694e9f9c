"""Device-independent rewrites of a graph's plans, made after every node is planned and before anything is
allocated: a conv writes the residual Add after it (:func:`fuse_residual_adds`), plans whose outputs nothing reads
are emptied (:func:`drop_unread`), producers write straight into their Concat's output (:func:`zero_copy_concats`).

They take the node records and the graph, and the device facts they depend on as plain ints; what they return tells
the executor how to allocate (:class:`Rewritten`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeinfer.ir import Graph
from edgeinfer.planning.context import i32
from edgeinfer.planning.layout import SEPARABLE
from edgeinfer.planning.plan import (
    NO_RESIDUAL,
    RESIDUAL_AFTER_ACTIVATION,
    BufferCopy,
    KernelPlan,
    Launch,
    NodeRecord,
    TensorArg,
)

CONV_OPS = ("Conv", SEPARABLE)


@dataclass
class Rewritten:
    """What the rewrites changed that the executor must know."""

    redirected: dict[int, str] = field(default_factory=dict)  # record index -> the tensor its launch writes instead
    own_buffers: set[str] = field(default_factory=set)  # planned tensors that need a buffer outside the arena
    aliases: dict[str, tuple[str, int]] = field(default_factory=dict)  # tensor -> (Concat output, byte offset)


def rewrite_plans(records: list[NodeRecord], graph: Graph, align: int, guard: int) -> Rewritten:
    """Every rewrite, in order, on ``records`` (changed in place). ``align``: the bytes a device buffer's start must
    be a multiple of; ``guard``: the bytes of guard band around each tensor (context.guard_bytes)."""
    redirected, own_buffers = fuse_residual_adds(records, graph, guard)
    drop_unread(records, graph, redirected)
    return Rewritten(redirected, own_buffers, zero_copy_concats(records, graph, align))


def fuse_residual_adds(records: list[NodeRecord], graph: Graph, guard: int) -> tuple[dict[int, str], set[str]]:
    """y = Add(act(Conv(x)), r) right after its Conv (YOLOX's CSP bottlenecks, SiLU before the Add, so the
    compiler's Z fusion, which adds before the activation, does not apply): the conv launch writes act(conv) + r
    into y (its epilogue's RESIDUAL_AFTER_ACTIVATION) and the Add has no launch. Returns (record index of each such
    conv -> y, the tensors y that need a buffer of their own).

    The conv then writes y one node early. That is safe for the memory plan where y's arena range does not meet
    any tensor the conv reads (guard bands included): the tensors alive at the conv and dead at the Add are the
    conv's inputs, and its own output, which nothing writes or reads any more. Where it does meet one (the plan
    mostly puts y where the conv's input x was), y gets a buffer outside the arena."""
    plan = graph.memory_plan
    consumers = graph.consumers()
    redirected: dict[int, str] = {}
    own_buffers: set[str] = set()

    def extent(name: str) -> tuple[int, int] | None:
        offset = plan.offsets.get(name)
        return None if offset is None else (offset - guard, offset + graph.tensors[name].nbytes + guard)

    for index in range(1, len(records)):
        add, conv = records[index], records[index - 1]
        # (convs only: Gemm and MatMul launches have the epilogue too, but their Adds were never measured)
        if add.node.op != "Add" or add.plan is None or conv.plan is None or conv.node.op not in CONV_OPS:
            continue
        c_out, y = conv.node.outputs[0], add.node.outputs[0]
        others = [name for name in add.node.inputs if name != c_out]
        if len(add.node.inputs) != 2 or len(others) != 1 or c_out in graph.outputs:
            continue
        other = others[0]
        shapes = {graph.tensors[name].shape for name in (other, c_out, y)}
        if (other in graph.constants or len(consumers.get(c_out, [])) != 1 or not conv.plan.launches
                or graph.tensors[other].dynamic or graph.tensors[y].dtype not in ("float32", "float16")
                or len(shapes) != 1):  # fmt: skip
            continue
        # The last launch writes the output through its epilogue (a split-K sum after its partial products).
        launch = conv.plan.launches[-1]
        epilogue = launch.epilogue if isinstance(launch, Launch) else None
        if epilogue is None or int(launch.args[epilogue.has_z_slot]) != NO_RESIDUAL:
            continue
        if not launch.args[epilogue.z_slot] == launch.args[epilogue.y_slot] == TensorArg(c_out):
            continue
        reads = conv.plan.tensors() - {c_out} | {other}
        target = extent(y)
        if target is not None and any(
            (r := extent(name)) is not None and r[0] < target[1] and target[0] < r[1] for name in reads
        ):
            own_buffers.add(y)  # the plan put y where the conv's input was: y gets a buffer of its own
        args = list(launch.args)
        args[epilogue.z_slot], args[epilogue.y_slot] = TensorArg(other), TensorArg(y)
        args[epilogue.has_z_slot] = i32(RESIDUAL_AFTER_ACTIVATION)
        launch.args = args
        if "HAS_Z" in launch.defines:  # a template that compiles its residual mode in (blocked.cl)
            launch.defines = {**launch.defines, "HAS_Z": RESIDUAL_AFTER_ACTIVATION}
        conv.plan.config = {**conv.plan.config, "residual_add": add.node.name}
        add.plan = KernelPlan("fused", {"into": conv.node.name}, "default", [])
        redirected[index - 1] = y
    return redirected, own_buffers


def drop_unread(records: list[NodeRecord], graph: Graph, redirected: dict[int, str]) -> None:
    """Empty the plans of device nodes whose outputs nothing reads (e.g. a Slice that the next Slice reads
    through, tensor.plan_slice): what is read is what the launches and host nodes name."""
    live = set(graph.outputs)
    for index, record in reversed(list(enumerate(records))):
        if record.plan is None:
            live.update(name for name in record.node.inputs if name)
            continue
        outputs = [*record.node.outputs, redirected.get(index, "")]
        if record.plan.launches and not any(name in live for name in outputs if name):
            record.plan = KernelPlan(record.plan.template, {**record.plan.config, "dropped": "output unread"},
                                     record.plan.config_source, [])  # fmt: skip
            continue
        live.update(record.plan.tensors())


def zero_copy_concats(records: list[NodeRecord], graph: Graph, align: int) -> dict[str, tuple[str, int]]:
    """Let producers write straight into their Concat's output: input -> (concat output, byte offset).

    An input qualifies when it is a device-computed intermediate read by that Concat alone, the axes
    before the concat axis are all 1 (so it is one contiguous slice of the output) and its offset is a
    multiple of ``align`` (a valid buffer start). Such a Concat output gets its own buffer rather than an arena
    slot: the memory plan does not know it is written before the Concat runs.
    """
    consumers = graph.consumers()
    producers = {name: i for i, record in enumerate(records) for name in record.node.outputs if name}
    outside = set(graph.inputs) | set(graph.outputs) | set(graph.constants)
    aliases: dict[str, tuple[str, int]] = {}
    roots: set[str] = set()
    for record in records:
        node = record.node
        if node.op != "Concat" or record.plan is None:
            continue
        out = graph.tensors[node.outputs[0]]
        axis = int(node.attrs.get("axis", 0)) % len(out.shape)
        if any(size != 1 for size in out.shape[:axis]):
            continue
        slice_bytes = out.nbytes // max(out.shape[axis], 1)
        offset, aliased = 0, set()
        for name in node.inputs:
            info = graph.tensors.get(name)
            size = graph.constants[name].shape[axis] if name in graph.constants else info.shape[axis]
            producer = producers.get(name)
            if (name not in outside and name not in roots and name not in aliased and not info.dynamic
                    and len(consumers.get(name, [])) == 1 and node.inputs.count(name) == 1
                    and producer is not None and records[producer].plan is not None
                    and offset % align == 0 and info.nbytes > 0):  # fmt: skip
                aliases[name] = (node.outputs[0], offset)
                aliased.add(name)
            offset += size * slice_bytes
        if aliased:
            roots.add(node.outputs[0])
            launches = [launch for launch in record.plan.launches if not _copies_one_of(launch, aliased)]
            config = {"zero_copy_inputs": len(aliased), "copies": len(launches)}
            record.plan = KernelPlan("tensor", config, "default", launches)
    return aliases


def device_tensors(records: list[NodeRecord]) -> set[str]:
    """Every tensor that some device launch reads or writes (constants included)."""
    names: set[str] = set()
    for record in records:
        if record.plan is None:
            continue
        for launch in record.plan.launches:
            if isinstance(launch, BufferCopy):
                names.update((launch.src, launch.dst))
            else:
                names.update(a.name for a in launch.args if isinstance(a, TensorArg))
    return names


def _copies_one_of(launch: Launch | BufferCopy, names: set[str]) -> bool:
    """Whether ``launch`` is a Concat copy whose source is one of ``names``."""
    return isinstance(launch, Launch) and isinstance(launch.args[0], TensorArg) and launch.args[0].name in names
