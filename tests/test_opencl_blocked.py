"""The channel-blocked layout (NCHW<B>c) of the OpenCL backend: the block per ISA class, the layout pass (which
nodes go blocked, where the conversions sit), every blocked kernel and tile shape against the NumPy backend at
blocks 16, 8 and 4, the register budget of the knob spaces, and the host fallback of a blocked node. Runs on the
first usable OpenCL device with the layout forced on (CPU devices use it by default).
"""

from __future__ import annotations

import numpy as np
import pytest

cl = pytest.importorskip("pyopencl", reason="pyopencl is not installed")

from conftest import usable_opencl_device  # noqa: E402
from edgeinfer.backends import numpy as numpy_backend  # noqa: E402
from edgeinfer.cpu_isa import ISA_CLASSES, isa_class  # noqa: E402
from edgeinfer.ir import Graph, Node, TensorInfo  # noqa: E402
from edgeinfer.ops import get_op  # noqa: E402
from edgeinfer.passes.memory_plan import plan_memory  # noqa: E402
from edgeinfer.planning import layout  # noqa: E402
from edgeinfer.planning.blocked import default_tiles, registers_needed  # noqa: E402

DEVICE = usable_opencl_device()
needs_device = pytest.mark.skipif(DEVICE is None, reason="no usable OpenCL device (see `edgeinfer devices`)")
RNG = np.random.default_rng(3)


@pytest.fixture(autouse=True)
def blocked_layout(monkeypatch):
    monkeypatch.setenv(layout.LAYOUT_ENV, "nchw16c")


def force_block(monkeypatch, block: int) -> None:
    monkeypatch.setenv(layout.LAYOUT_ENV, f"nchw{block}c")


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def build_graph(nodes: list[Node], feeds: dict[str, np.ndarray], constants: dict[str, np.ndarray]) -> Graph:
    """A graph of ``nodes`` whose tensor shapes come from running the NumPy ops; the last node's output is the
    graph output."""
    env = {**feeds, **constants}
    tensors = {name: TensorInfo(name, value.shape, str(value.dtype)) for name, value in env.items()}
    for node in nodes:
        outputs = get_op(node.op).fn([env[name] if name else None for name in node.inputs], node.attrs)
        for name, value in zip(node.outputs, outputs):
            env[name] = value
            tensors[name] = TensorInfo(name, value.shape, str(value.dtype))
    graph = Graph(nodes, list(feeds), [nodes[-1].outputs[0]], tensors, constants)
    plan_memory(graph)
    return graph


def rel_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


def conv(name: str, x: str, w: str, y: str, z: str = "", **attrs) -> Node:
    inputs = [x, w, f"{w}_b"] + ([z] if z else [])
    return Node(name, "Conv", inputs, [y], attrs)


def conv_constants(name: str, co: int, ci: int, k: int) -> dict[str, np.ndarray]:
    return {name: randn(co, ci, k, k) * 0.3, f"{name}_b": randn(co)}


@pytest.mark.parametrize("block", layout.BLOCKS)
def test_conversions_round_trip_with_zero_padding(block):
    x = randn(2, 3 * block - 2, 3, 5)
    blocked = layout.to_blocked(x, block)
    assert blocked.shape == (2, 3, 3, 5, block)
    assert not blocked[:, 2, :, :, block - 2 :].any()  # the last two channels of the last block are padding
    np.testing.assert_array_equal(blocked[0, 1, 2, 4], x[0, block : 2 * block, 2, 4])
    np.testing.assert_array_equal(layout.from_blocked(blocked, 3 * block - 2), x)


def test_layout_setting(monkeypatch):
    monkeypatch.delenv(layout.LAYOUT_ENV)
    assert layout.wanted("cpu") and not layout.wanted("gpu")
    assert layout.block_for("gpu", ISA_CLASSES["simt"]) == 0
    monkeypatch.setenv(layout.LAYOUT_ENV, "nchw16c")
    assert layout.wanted("gpu")
    monkeypatch.setenv(layout.LAYOUT_ENV, "nhwc")
    with pytest.raises(ValueError, match="EDGEINFER_OPENCL_LAYOUT='nhwc'"):
        layout.wanted("cpu")


def test_the_block_follows_the_isa_class(monkeypatch):
    """One block per vector register: 16 on AVX-512, 8 on AVX2/AVX, 4 on SSE/NEON; forced by nchw<B>c."""
    monkeypatch.delenv(layout.LAYOUT_ENV)
    expected = {"avx512": 16, "avx2": 8, "avx": 8, "sse": 4, "neon": 4}
    assert {name: layout.block_for("cpu", isa_class(name)) for name in expected} == expected
    monkeypatch.setenv(layout.LAYOUT_ENV, "blocked")
    assert layout.block_for("cpu", isa_class("avx2")) == 8
    monkeypatch.setenv(layout.LAYOUT_ENV, "nchw8c")
    assert layout.block_for("cpu", isa_class("avx512")) == 8 and layout.block_for("gpu", ISA_CLASSES["simt"]) == 8
    monkeypatch.setenv(layout.LAYOUT_ENV, "nchw")
    assert layout.block_for("cpu", isa_class("avx512")) == 0
    graph, _ = chain_graph()
    blocked = layout.for_device(graph, "cpu", isa_class("avx512"))
    assert blocked is graph
    monkeypatch.delenv(layout.LAYOUT_ENV)
    blocked = layout.for_device(graph, "cpu", isa_class("sse"))
    assert blocked.tensors["e#nchw4c"].shape == (1, 9, 6, 6, 4)  # 16 + 20 channels: 9 blocks of 4


@pytest.mark.parametrize("isa", ["avx512", "avx2", "sse", "neon"])
@pytest.mark.parametrize("block", layout.BLOCKS)
def test_knob_spaces_and_defaults_fit_the_register_budget(isa, block):
    """Every config a blocked knob space offers, and the heuristic default, keeps its register tile within the ISA's
    vector registers; the spaces are not empty, and a larger budget offers larger tiles."""
    from edgeinfer.planning import KNOB_SPACES, PlanContext

    ctx = PlanContext(None, None, "cpu", 4096, isa=isa_class(isa))
    workloads = {
        "pw": {"C": 96, "Co": 144, "H": 28, "W": 28, "KH": 1, "KW": 1, "S": 1, "XB": 1},
        "direct": {"C": 64, "Co": 128, "H": 13, "W": 13, "KH": 3, "KW": 3, "S": 1, "XB": 1},
        "dw": {"C": 144, "H": 56, "W": 56, "K": 3, "S": 1},
        "sep": {"C": 32, "Co": 64, "H": 14, "W": 14, "K": 3, "S": 1},
    }
    for kind, workload in workloads.items():
        configs = KNOB_SPACES[f"{kind}{block}"].candidates(workload, ctx)
        assert configs, (kind, block, isa)
        needed = [registers_needed(kind, config, block, ctx.isa) for config in configs]
        assert max(needed) <= ctx.isa.registers, (kind, block, isa)
        default = default_tiles(kind, workload, block, ctx.isa)
        assert registers_needed(kind, default, block, ctx.isa) <= ctx.isa.registers
    wide = KNOB_SPACES[f"pw{block}"].candidates(workloads["pw"], PlanContext(None, None, "cpu", 4096,
                                                                             isa=isa_class("avx512")))  # fmt: skip
    narrow = KNOB_SPACES[f"pw{block}"].candidates(workloads["pw"], ctx)
    assert max(c["TP"] * c["NB"] for c in narrow) <= max(c["TP"] * c["NB"] for c in wide)


def test_shipped_blocked_configs_lie_in_their_knob_spaces():
    """The AVX-512 tables' blocked entries (block 16) are candidates of their knob spaces on AVX-512: planners take
    a table config only if it is (PlanContext.in_knob_space), so a narrower space would silently drop them."""
    import json

    from edgeinfer.planning import KNOB_SPACES, PlanContext
    from edgeinfer.tuned_configs import data_dir

    ctx = PlanContext(None, None, "cpu", 4096, isa=isa_class("avx512"))
    checked = 0
    for path in sorted((data_dir("tuned_configs") / "opencl").glob("*avx512*.json")):
        for entry in json.loads(path.read_text())["entries"]:
            if entry["template"] in ("pw16", "direct16", "dw16", "sep16"):
                candidates = KNOB_SPACES[entry["template"]].candidates(entry["workload"], ctx)
                assert entry["config"] in candidates, (path.name, entry)
                checked += 1
    assert checked > 100


def test_register_budget_counts_vectors_per_block():
    """A 16-wide block is two AVX2 registers: the AVX-512 default 12 x 2 spills there, so the default shrinks."""
    avx2, avx512 = isa_class("avx2"), isa_class("avx512")
    tile = {"TP": 12, "NB": 2}
    assert registers_needed("pw", tile, 16, avx512) == 26
    assert registers_needed("pw", tile, 16, avx2) == 53  # 2 x (24 + 2) + the broadcast
    workload = {"C": 96, "Co": 144, "H": 28, "W": 28}
    assert default_tiles("pw", workload, 16, avx512) == tile
    assert default_tiles("pw", workload, 8, avx2) == {"TP": 6, "NB": 2}
    assert default_tiles("pw", workload, 16, avx2) == {"TP": 6, "NB": 1}


def chain_graph():
    """x -> pointwise -> depthwise -> Add(residual) -> Concat(with a ragged last input) -> Div -> conv -> y."""
    feeds = {"x": randn(1, 16, 6, 6)}
    constants = {**conv_constants("w1", 16, 16, 1), **conv_constants("w3", 20, 16, 1), **conv_constants("w4", 8, 36, 3)}
    constants["dw"], constants["dw_b"] = randn(16, 1, 3, 3), randn(16)
    constants["two"] = np.array(2.0, np.float32)
    nodes = [
        conv("pw", "x", "w1", "a"),
        conv("depthwise", "a", "dw", "b", group=16, pads=[1, 1, 1, 1]),
        Node("add", "Add", ["a", "b"], ["c"]),
        conv("other", "c", "w3", "d"),
        Node("concat", "Concat", ["c", "d"], ["e"], {"axis": 1}),
        Node("div", "Div", ["e", "two"], ["f"]),
        conv("last", "f", "w4", "y", pads=[1, 1, 1, 1]),
    ]
    return build_graph(nodes, feeds, constants), feeds


@pytest.mark.parametrize("block", [16, 8])
def test_layout_pass_blocks_conv_chains_and_converts_at_their_edges(block):
    graph, _ = chain_graph()
    before = [(node.name, list(node.inputs), list(node.outputs)) for node in graph.nodes]
    blocked = layout.apply(graph, block)
    assert [(node.name, node.inputs, node.outputs) for node in graph.nodes] == before  # the pack's graph unchanged
    ops = {node.name: node for node in blocked.nodes}
    for name in ("pw", "depthwise", "add", "other", "concat"):
        assert layout.LAYOUT_ATTR in ops[name].attrs and ops[name].attrs[layout.LAYOUT_ATTR]["block"] == block, name
    suffix = f"#nchw{block}c"
    assert blocked.tensors["e" + suffix].shape == (1, -(-36 // block), 6, 6, block)  # 16 + 20 channels
    # Div may turn the padding lanes into inf/NaN: it reads plain, through one conversion; the last conv then
    # has a plain input and no blocked reader, so it stays plain.
    assert ops["e::to_nchw"].op == layout.FROM_BLOCKED and ops["div"].inputs[0] == "e"
    assert layout.LAYOUT_ATTR not in ops["last"].attrs and ops["last"].outputs == ["y"]
    assert set(blocked.memory_plan.offsets) >= {"a" + suffix, "e" + suffix, "e"}


@pytest.mark.parametrize("block", [16, 8])
def test_concat_with_a_ragged_input_before_the_last_stays_plain(block):
    feeds = {"x": randn(1, 8, 4, 4)}
    constants = {**conv_constants("w1", 20, 8, 1), **conv_constants("w2", 16, 8, 1)}
    nodes = [conv("a", "x", "w1", "a"), conv("b", "x", "w2", "b"),
             Node("concat", "Concat", ["a", "b"], ["y"], {"axis": 1})]  # fmt: skip
    graph = build_graph(nodes, feeds, constants)
    assert layout.choose_blocked(graph, block) == {}  # two isolated convs once the Concat cannot join
    assert layout.choose_blocked(graph, 4)  # 20 channels are 5 whole blocks of 4


@needs_device
@pytest.mark.parametrize("block", layout.BLOCKS)
def test_chain_matches_numpy_with_conversions_and_a_host_fallback(block, monkeypatch):
    from edgeinfer.backends import opencl
    from edgeinfer.planning import NoKernel, registry

    force_block(monkeypatch, block)
    graph, feeds = chain_graph()
    expected = numpy_backend.prepare(graph).run(feeds)["y"]
    executable = opencl.prepare(graph, DEVICE.spec)
    rows = {row["name"]: row for row in executable.explain()}
    assert rows["pw"]["kernel"] == f"pw{block}" and rows["depthwise"]["kernel"] == f"dw{block}"
    assert rows["e::to_nchw"]["kernel"] == "layout"
    assert rel_l2(executable.run(feeds)["y"], expected) <= 1e-5

    def refuse(node, ctx):
        raise NoKernel("refused by the test")

    monkeypatch.setitem(registry.BLOCKED_PLANNERS, "Conv", refuse)  # blocked convs on the host, via plain copies
    fallback = opencl.prepare(graph, DEVICE.spec)
    assert {row["name"] for row in fallback.explain() if row["placement"] == "cpu"} == {"pw", "depthwise", "other"}
    assert rel_l2(fallback.run(feeds)["y"], expected) <= 1e-5


# (kind, C, Co, H, W, attrs, config, batch, residual): every knob, partial pixel tiles, ragged channel blocks and
# NB groups, strides, padding, dilation; "plain" reads a plain input (the stem case).
CASES = [
    ("pw", 16, 40, 5, 7, {}, {"TP": 12, "NB": 2}, 1, False),
    ("pw", 20, 24, 5, 7, {}, {"TP": 7, "NB": 3}, 2, True),
    ("pw", 48, 16, 3, 3, {}, {"TP": 4, "NB": 1}, 1, True),
    ("direct", 16, 40, 9, 11, {"pads": [1, 1, 1, 1]}, {"TP": 6, "NB": 2}, 2, True),
    ("direct", 24, 16, 9, 11, {"pads": [0, 2, 1, 0], "strides": [2, 2]}, {"TP": 4, "NB": 1}, 1, False),
    ("direct", 16, 32, 9, 11, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, {"TP": 8, "NB": 3}, 1, True),
    ("plain", 3, 32, 15, 15, {"pads": [1, 1, 1, 1], "strides": [2, 2]}, {"TP": 6, "NB": 2}, 2, False),
    ("dw", 16, 16, 9, 11, {"pads": [1, 1, 1, 1]}, {"TW": 4, "TY": 2}, 2, True),
    ("dw", 40, 40, 9, 11, {"pads": [1, 1, 1, 1], "strides": [2, 2]}, {"TW": 8, "TY": 1}, 1, False),
    ("dw", 24, 24, 12, 12, {"pads": [2, 2, 2, 2]}, {"TW": 2, "TY": 4}, 1, True),
    ("dw", 16, 16, 9, 9, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, {"TW": 4, "TY": 1}, 1, False),
]


def with_blocks(cases: list) -> list:
    """Each case at block 16 and at 8 or 4 in turn (every kind meets every block; PoCL builds cost seconds each)."""
    return [pytest.param(case, block, id=f"{ids}-b{block}") for index, (case, ids) in enumerate(cases)
            for block in (16, (8, 4)[index % 2])]  # fmt: skip


@needs_device
@pytest.mark.parametrize("case, block", with_blocks([(c, f"{c[0]}-{c[1]}-{c[2]}-{c[6]}") for c in CASES]))
def test_every_blocked_kernel_variant_matches_numpy(case, block, monkeypatch):
    """A first conv (pointwise, so that its output is blocked, or none for "plain") feeds the conv under test,
    which adds a residual Z when asked and ends in a Relu; a last pointwise conv gives the blocked output a
    blocked reader (not fused with a depthwise conv under test: conv_sep_blocked has its own test). Forced to the case's
    config through the tuner's overrides."""
    from edgeinfer.backends import opencl

    monkeypatch.setattr(layout, "SEPARABLE_MAX_BLOCKS", 0)
    force_block(monkeypatch, block)

    kind, c, co, h, w, attrs, config, batch, residual = case
    feeds = {"x": randn(batch, c, h, w)}
    k = 1 if kind == "pw" else 3
    constants = conv_constants("wt", co, 1 if kind == "dw" else c, k)
    constants.update(conv_constants("first", c, c, 1))
    constants.update(conv_constants("last", 16, co, 1))
    attrs = {**attrs, "activation": "relu"}
    if kind == "dw":
        attrs["group"] = c
    nodes = [] if kind == "plain" else [conv("first", "x", "first", "a")]
    source = "x" if kind == "plain" else "a"
    if residual:  # Z: a tensor shaped like the output, from its own conv
        z_attrs = {key: attrs[key] for key in ("pads", "strides", "dilations") if key in attrs}
        constants.update(conv_constants("zw", co, c, k))
        nodes.append(conv("zconv", source, "zw", "z", **z_attrs))
    nodes += [conv("under_test", source, "wt", "b", "z" if residual else "", **attrs), conv("last", "b", "last", "y")]
    graph = build_graph(nodes, feeds, constants)
    expected = numpy_backend.prepare(graph).run(feeds)["y"]
    template = f"{'direct' if kind == 'plain' else kind}{block}"
    executable = opencl.prepare(graph, DEVICE.spec, overrides={template: config})
    row = next(row for row in executable.explain() if row["name"] == "under_test")
    assert row["kernel"] == template and row["config_source"] == "override", row
    assert rel_l2(executable.run(feeds)["y"], expected) <= 1e-5


@needs_device
@pytest.mark.parametrize("pool, block", [  # each pool at one block (16 also in test_opencl.py's YOLOX-nano)
    ({"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, 16),
    ({"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]}, 8),
    ({"kernel_shape": [2, 3], "strides": [1, 2], "pads": [0, 1, 1, 0], "dilations": [2, 1]}, 4),
])  # fmt: skip
@pytest.mark.parametrize("resize", [
    {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
    {"mode": "nearest"},
])  # fmt: skip
def test_max_pool_and_nearest_resize_run_blocked(pool, block, resize, monkeypatch):
    from edgeinfer.backends import opencl

    force_block(monkeypatch, block)
    feeds = {"x": randn(2, 16, 11, 13)}
    constants = {**conv_constants("w1", 24, 16, 1), **conv_constants("w2", 8, 24, 1)}
    constants["scales"] = np.array([1, 1, 2, 1.5], np.float32)
    nodes = [
        conv("first", "x", "w1", "a"),
        Node("pool", "MaxPool", ["a"], ["b"], pool),
        Node("resize", "Resize", ["b", "", "scales"], ["c"], resize),
        conv("last", "c", "w2", "y"),
    ]
    graph = build_graph(nodes, feeds, constants)
    expected = numpy_backend.prepare(graph).run(feeds)["y"]
    executable = opencl.prepare(graph, DEVICE.spec)
    kernels = {row["name"]: row["kernel"] for row in executable.explain()}
    assert kernels["pool"] == f"pool{block}" and kernels["resize"] == f"resize{block}", kernels
    assert rel_l2(executable.run(feeds)["y"], expected) <= 1e-5


def separable_graph(c: int, co: int, h: int, w: int, dw_attrs: dict, batch: int, residual: bool, extra_reader=False):
    """x -> pointwise "first" -> depthwise "dw" (its own activation) -> 1x1 "pw" (+ Z, Relu) -> 1x1 "last" -> y;
    with ``extra_reader`` the depthwise output also feeds an Add into the output path."""
    feeds = {"x": randn(batch, c, h, w)}
    constants = {**conv_constants("first", c, c, 1), **conv_constants("pw", co, c, 1)}
    constants.update(conv_constants("last", 16, co, 1))
    constants["dw"], constants["dw_b"] = randn(c, 1, 3, 3), randn(c)
    nodes = [conv("first", "x", "first", "a"), conv("dw", "a", "dw", "m", group=c, **dw_attrs)]
    if residual:  # Z: shaped like the 1x1 conv's output, from a conv with the depthwise conv's geometry
        geometry = {key: dw_attrs[key] for key in ("pads", "strides", "dilations") if key in dw_attrs}
        constants.update(conv_constants("zw", co, c, 3))
        nodes.append(conv("zconv", "a", "zw", "z", **geometry))
    nodes.append(conv("pw", "m", "pw", "b", "z" if residual else "", activation="relu"))
    if extra_reader:
        constants.update(conv_constants("back", co, c, 1))
        nodes += [conv("back", "m", "back", "n"), Node("join", "Add", ["b", "n"], ["b2"])]
    nodes.append(conv("last", "b2" if extra_reader else "b", "last", "y"))
    return build_graph(nodes, feeds, constants), feeds


def test_separable_pairs_fuse_into_one_node():
    graph, _ = separable_graph(24, 40, 8, 8, {"pads": [1, 1, 1, 1], "activation": "clip",
                                              "activation_params": [0.0, 6.0]}, 1, True)  # fmt: skip
    graph.metadata["node_flops"] = {"dw": 100, "pw": 1000}
    blocked = layout.apply(graph)
    fused = [node for node in blocked.nodes if node.op == layout.SEPARABLE]
    assert [node.name for node in fused] == ["dw+pw"] and "dw" not in {node.name for node in blocked.nodes}
    assert fused[0].inputs == ["a#nchw16c", "dw", "dw_b", "pw", "pw_b", "z#nchw16c"]
    assert "m#nchw16c" not in blocked.tensors  # the depthwise output is never stored
    assert blocked.metadata["node_flops"]["dw+pw"] == 1100
    depthwise, pointwise = layout.separable_parts(fused[0])
    assert depthwise.inputs == ["a#nchw16c", "dw", "dw_b"] and depthwise.attrs["activation"] == "clip"
    assert pointwise.inputs == ["m#nchw16c", "pw", "pw_b", "z#nchw16c"] and pointwise.outputs == ["b#nchw16c"]


def test_separable_pairs_stay_apart_when_the_output_is_wide_or_read_twice(monkeypatch):
    wide, _ = separable_graph(16, 40, 6, 6, {"pads": [1, 1, 1, 1]}, 1, False)
    monkeypatch.setattr(layout, "SEPARABLE_MAX_BLOCKS", 2)  # 40 channels: 3 output blocks
    assert not any(node.op == layout.SEPARABLE for node in layout.apply(wide).nodes)
    monkeypatch.setattr(layout, "SEPARABLE_MAX_BLOCKS", 4)
    shared, _ = separable_graph(16, 16, 6, 6, {"pads": [1, 1, 1, 1]}, 1, False, extra_reader=True)
    assert not any(node.op == layout.SEPARABLE for node in layout.apply(shared).nodes)


@needs_device
def test_cpus_without_fma_multiply_and_add(monkeypatch):
    """On an ISA class without FMA (SSE, AVX-only) programs get HAS_FMA=0, so common.cl's MAC multiplies and adds
    instead of calling the exact fma() that PoCL emulates in software (MobileNetV2 on the SSE stand-in: 478 -> 53
    ms); the kernels still match NumPy that way. Classes with FMA keep fma()."""
    from edgeinfer.backends.opencl.runtime import build_flags, select_device
    from edgeinfer.cpu_isa import ISA_ENV

    cl_device = select_device(DEVICE.spec).device
    for isa, no_fma in (("sse", True), ("avx", True), ("avx2", False), ("avx512", False)):
        monkeypatch.setenv(ISA_ENV, isa)
        assert ("-DHAS_FMA=0" in build_flags(cl_device).split()) == no_fma or cl_device.type & cl.device_type.GPU
    monkeypatch.setenv(ISA_ENV, "sse")
    for case in (CASES[1], CASES[3], CASES[7]):  # pw, direct, dw at block 4
        test_every_blocked_kernel_variant_matches_numpy(case, 4, monkeypatch)
    test_separable_kernel_variants_match_numpy(SEPARABLE_CASES[1], 4, monkeypatch)


# (C, Co, H, W, depthwise attrs, config, batch, residual): partial pixel tiles, padded input channels, ragged NB
# groups and NB past the output blocks, stride, dilation (the checked tap path), activations on both parts.
SEPARABLE_CASES = [
    (16, 16, 9, 11, {"pads": [1, 1, 1, 1], "activation": "clip", "activation_params": [0.0, 6.0]},
     {"TP": 4, "NB": 1}, 2, True),
    (24, 40, 9, 11, {"pads": [1, 1, 1, 1], "strides": [2, 2], "activation": "silu"}, {"TP": 8, "NB": 2}, 1, False),
    (40, 24, 12, 12, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, {"TP": 6, "NB": 3}, 1, True),
    (32, 64, 7, 7, {"pads": [1, 1, 1, 1], "activation": "relu"}, {"TP": 7, "NB": 4}, 1, True),
]  # fmt: skip


@needs_device
@pytest.mark.parametrize("case, block", with_blocks([(c, f"{c[0]}-{c[1]}-{c[5]}") for c in SEPARABLE_CASES]))
def test_separable_kernel_variants_match_numpy(case, block, monkeypatch):
    from edgeinfer.backends import opencl

    force_block(monkeypatch, block)
    monkeypatch.setattr(layout, "SEPARABLE_MAX_BLOCKS", 16)  # every case fused at every block (64 channels at 4)
    c, co, h, w, dw_attrs, config, batch, residual = case
    graph, feeds = separable_graph(c, co, h, w, dw_attrs, batch, residual)
    expected = numpy_backend.prepare(graph).run(feeds)["y"]
    executable = opencl.prepare(graph, DEVICE.spec, overrides={f"sep{block}": config})
    row = next(row for row in executable.explain() if row["name"] == "dw+pw")
    assert row["kernel"] == f"sep{block}" and row["config_source"] == "override", row
    assert rel_l2(executable.run(feeds)["y"], expected) <= 1e-5


@needs_device
def test_separable_node_without_a_kernel_runs_on_the_host(monkeypatch):
    from edgeinfer.backends import opencl
    from edgeinfer.planning import NoKernel, registry

    graph, feeds = separable_graph(24, 16, 8, 9, {"pads": [1, 1, 1, 1], "strides": [2, 2]}, 2, True)
    expected = numpy_backend.prepare(graph).run(feeds)["y"]

    def refuse(node, ctx):
        raise NoKernel("refused by the test")

    monkeypatch.setitem(registry.BLOCKED_PLANNERS, layout.SEPARABLE, refuse)
    executable = opencl.prepare(graph, DEVICE.spec)
    assert [row["name"] for row in executable.explain() if row["placement"] == "cpu"] == ["dw+pw"]
    assert rel_l2(executable.run(feeds)["y"], expected) <= 1e-5


@needs_device
@pytest.mark.parametrize("op, attrs", [
    ("GlobalAveragePool", {}), ("GlobalMaxPool", {}), ("AveragePool", {"kernel_shape": [5, 7]}),
])  # fmt: skip
@pytest.mark.parametrize("on_host, block", [(False, 16), (False, 4), (True, 8)])
def test_global_pools_read_blocked_and_write_plain(op, attrs, on_host, block, monkeypatch):
    from edgeinfer.backends import opencl
    from edgeinfer.planning import NoKernel, registry

    force_block(monkeypatch, block)
    feeds = {"x": randn(2, 8, 5, 7)}
    constants = conv_constants("w1", 20, 8, 1)  # 20 channels: a ragged last block
    graph = build_graph([conv("first", "x", "w1", "a"), Node("pool", op, ["a"], ["y"], attrs)], feeds, constants)
    blocked = layout.apply(graph, block)
    pool = next(node for node in blocked.nodes if node.name == "pool")
    assert pool.inputs == [f"a#nchw{block}c"] and pool.outputs == ["y"]  # no conversion of the large input
    assert not any(node.op == layout.FROM_BLOCKED for node in blocked.nodes)
    expected = numpy_backend.prepare(graph).run(feeds)["y"]
    if on_host:

        def refuse(node, ctx):
            raise NoKernel("refused by the test")

        monkeypatch.setitem(registry.BLOCKED_PLANNERS, op, refuse)
    executable = opencl.prepare(graph, DEVICE.spec)
    row = next(row for row in executable.explain() if row["name"] == "pool")
    assert row["kernel"] == ("numpy" if on_host else f"pool{block}"), row
    assert rel_l2(executable.run(feeds)["y"], expected) <= 1e-6
