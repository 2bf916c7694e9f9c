"""The channel-blocked layout (NCHW16c) of the OpenCL backend: the layout pass (which nodes go blocked, where
the conversions sit), every blocked kernel and tile shape against the NumPy backend, and the host fallback of a
blocked node. Runs on the first usable OpenCL device with the layout forced on (CPU devices use it by default).
"""

from __future__ import annotations

import numpy as np
import pytest

cl = pytest.importorskip("pyopencl", reason="pyopencl is not installed")

from conftest import usable_opencl_device  # noqa: E402
from edgeinfer.backends import numpy_backend  # noqa: E402
from edgeinfer.backends.opencl import layout  # noqa: E402
from edgeinfer.ir import Graph, Node, TensorInfo  # noqa: E402
from edgeinfer.ops import get_op  # noqa: E402
from edgeinfer.passes.memory_plan import plan_memory  # noqa: E402

DEVICE = usable_opencl_device()
needs_device = pytest.mark.skipif(DEVICE is None, reason="no usable OpenCL device (see `edgeinfer devices`)")
RNG = np.random.default_rng(3)


@pytest.fixture(autouse=True)
def blocked_layout(monkeypatch):
    monkeypatch.setenv(layout.LAYOUT_ENV, "nchw16c")


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


def test_conversions_round_trip_with_zero_padding():
    x = randn(2, 20, 3, 5)
    blocked = layout.to_blocked(x)
    assert blocked.shape == (2, 2, 3, 5, 16)
    assert not blocked[:, 1, :, :, 4:].any()  # channels 20..31 are padding
    np.testing.assert_array_equal(blocked[0, 1, 2, 4, :4], x[0, 16:, 2, 4])
    np.testing.assert_array_equal(layout.from_blocked(blocked, 20), x)


def test_layout_setting(monkeypatch):
    monkeypatch.delenv(layout.LAYOUT_ENV)
    assert layout.wanted("cpu") and not layout.wanted("gpu")
    monkeypatch.setenv(layout.LAYOUT_ENV, "nchw16c")
    assert layout.wanted("gpu")
    monkeypatch.setenv(layout.LAYOUT_ENV, "nhwc")
    with pytest.raises(ValueError, match="EDGEINFER_OPENCL_LAYOUT='nhwc'"):
        layout.wanted("cpu")


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


def test_layout_pass_blocks_conv_chains_and_converts_at_their_edges():
    graph, _ = chain_graph()
    before = [(node.name, list(node.inputs), list(node.outputs)) for node in graph.nodes]
    blocked = layout.apply(graph)
    assert [(node.name, node.inputs, node.outputs) for node in graph.nodes] == before  # the pack's graph unchanged
    ops = {node.name: node for node in blocked.nodes}
    for name in ("pw", "depthwise", "add", "other", "concat"):
        assert layout.LAYOUT_ATTR in ops[name].attrs, name
    assert blocked.tensors["e#nchw16c"].shape == (1, 3, 6, 6, 16)  # 16 + 20 channels: 3 blocks
    # Div may turn the padding lanes into inf/NaN: it reads plain, through one conversion; the last conv then
    # has a plain input and no blocked reader, so it stays plain.
    assert ops["e::to_nchw"].op == layout.FROM_BLOCKED and ops["div"].inputs[0] == "e"
    assert layout.LAYOUT_ATTR not in ops["last"].attrs and ops["last"].outputs == ["y"]
    assert set(blocked.memory_plan.offsets) >= {"a#nchw16c", "e#nchw16c", "e"}


def test_concat_with_a_ragged_input_before_the_last_stays_plain():
    feeds = {"x": randn(1, 8, 4, 4)}
    constants = {**conv_constants("w1", 20, 8, 1), **conv_constants("w2", 16, 8, 1)}
    nodes = [conv("a", "x", "w1", "a"), conv("b", "x", "w2", "b"),
             Node("concat", "Concat", ["a", "b"], ["y"], {"axis": 1})]  # fmt: skip
    graph = build_graph(nodes, feeds, constants)
    assert layout.choose_blocked(graph) == {}  # two isolated convs once the Concat cannot join


@needs_device
def test_chain_matches_numpy_with_conversions_and_a_host_fallback(monkeypatch):
    from edgeinfer.backends import opencl
    from edgeinfer.backends.opencl import kernels
    from edgeinfer.backends.opencl.kernels import NoKernel

    graph, feeds = chain_graph()
    expected = numpy_backend.prepare(graph).run(feeds)["y"]
    executable = opencl.prepare(graph, DEVICE.spec)
    rows = {row["name"]: row for row in executable.explain()}
    assert rows["pw"]["kernel"] == "pw16" and rows["depthwise"]["kernel"] == "dw16"
    assert rows["e::to_nchw"]["kernel"] == "layout"
    assert rel_l2(executable.run(feeds)["y"], expected) <= 1e-5

    def refuse(node, ctx):
        raise NoKernel("refused by the test")

    monkeypatch.setitem(kernels.BLOCKED_PLANNERS, "Conv", refuse)  # blocked convs on the host, via plain copies
    fallback = opencl.prepare(graph, DEVICE.spec)
    assert {row["name"] for row in fallback.explain() if row["placement"] == "cpu"} == {"pw", "depthwise", "other"}
    assert rel_l2(fallback.run(feeds)["y"], expected) <= 1e-5


# (kind, C, Co, H, W, attrs, config, batch, residual): every knob, partial pixel tiles, ragged channel blocks and
# NB groups, strides, padding, dilation; "plain" reads a plain input (the stem case).
CASES = [
    ("pw16", 16, 40, 5, 7, {}, {"TP": 12, "NB": 2}, 1, False),
    ("pw16", 20, 24, 5, 7, {}, {"TP": 7, "NB": 3}, 2, True),
    ("pw16", 48, 16, 3, 3, {}, {"TP": 4, "NB": 1}, 1, True),
    ("direct16", 16, 40, 9, 11, {"pads": [1, 1, 1, 1]}, {"TP": 6, "NB": 2}, 2, True),
    ("direct16", 24, 16, 9, 11, {"pads": [0, 2, 1, 0], "strides": [2, 2]}, {"TP": 4, "NB": 1}, 1, False),
    ("direct16", 16, 32, 9, 11, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, {"TP": 8, "NB": 3}, 1, True),
    ("plain", 3, 32, 15, 15, {"pads": [1, 1, 1, 1], "strides": [2, 2]}, {"TP": 6, "NB": 2}, 2, False),
    ("dw16", 16, 16, 9, 11, {"pads": [1, 1, 1, 1]}, {"TW": 4, "TY": 2}, 2, True),
    ("dw16", 40, 40, 9, 11, {"pads": [1, 1, 1, 1], "strides": [2, 2]}, {"TW": 8, "TY": 1}, 1, False),
    ("dw16", 24, 24, 12, 12, {"pads": [2, 2, 2, 2]}, {"TW": 2, "TY": 4}, 1, True),
    ("dw16", 16, 16, 9, 9, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, {"TW": 4, "TY": 1}, 1, False),
]


@needs_device
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[6]}" for c in CASES])
def test_every_blocked_kernel_variant_matches_numpy(case, monkeypatch):
    """A first conv (pointwise, so that its output is blocked, or none for "plain") feeds the conv under test,
    which adds a residual Z when asked and ends in a Relu; a last pointwise conv gives the blocked output a
    blocked reader (not fused with a depthwise conv under test: conv_sep16 has its own test). Forced to the case's
    config through the tuner's overrides."""
    from edgeinfer.backends import opencl

    monkeypatch.setattr(layout, "SEPARABLE_MAX_BLOCKS", 0)

    kind, c, co, h, w, attrs, config, batch, residual = case
    feeds = {"x": randn(batch, c, h, w)}
    k = 1 if kind == "pw16" else 3
    constants = conv_constants("wt", co, 1 if kind == "dw16" else c, k)
    constants.update(conv_constants("first", c, c, 1))
    constants.update(conv_constants("last", 16, co, 1))
    attrs = {**attrs, "activation": "relu"}
    if kind == "dw16":
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
    template = "direct16" if kind == "plain" else kind
    executable = opencl.prepare(graph, DEVICE.spec, overrides={template: config})
    row = next(row for row in executable.explain() if row["name"] == "under_test")
    assert row["kernel"] == template and row["config_source"] == "override", row
    assert rel_l2(executable.run(feeds)["y"], expected) <= 1e-5


@needs_device
@pytest.mark.parametrize("pool", [
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]},
    {"kernel_shape": [2, 3], "strides": [1, 2], "pads": [0, 1, 1, 0], "dilations": [2, 1]},
])  # fmt: skip
@pytest.mark.parametrize("resize", [
    {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
    {"mode": "nearest"},
])  # fmt: skip
def test_max_pool_and_nearest_resize_run_blocked(pool, resize):
    from edgeinfer.backends import opencl

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
    assert kernels["pool"] == "pool16" and kernels["resize"] == "resize16", kernels
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
@pytest.mark.parametrize("case", SEPARABLE_CASES, ids=[f"{c[0]}-{c[1]}-{c[5]}" for c in SEPARABLE_CASES])
def test_separable_kernel_variants_match_numpy(case):
    from edgeinfer.backends import opencl

    c, co, h, w, dw_attrs, config, batch, residual = case
    graph, feeds = separable_graph(c, co, h, w, dw_attrs, batch, residual)
    expected = numpy_backend.prepare(graph).run(feeds)["y"]
    executable = opencl.prepare(graph, DEVICE.spec, overrides={"sep16": config})
    row = next(row for row in executable.explain() if row["name"] == "dw+pw")
    assert row["kernel"] == "sep16" and row["config_source"] == "override", row
    assert rel_l2(executable.run(feeds)["y"], expected) <= 1e-5


@needs_device
def test_separable_node_without_a_kernel_runs_on_the_host(monkeypatch):
    from edgeinfer.backends import opencl
    from edgeinfer.backends.opencl import kernels
    from edgeinfer.backends.opencl.kernels import NoKernel

    graph, feeds = separable_graph(24, 16, 8, 9, {"pads": [1, 1, 1, 1], "strides": [2, 2]}, 2, True)
    expected = numpy_backend.prepare(graph).run(feeds)["y"]

    def refuse(node, ctx):
        raise NoKernel("refused by the test")

    monkeypatch.setitem(kernels.BLOCKED_PLANNERS, layout.SEPARABLE, refuse)
    executable = opencl.prepare(graph, DEVICE.spec)
    assert [row["name"] for row in executable.explain() if row["placement"] == "cpu"] == ["dw+pw"]
    assert rel_l2(executable.run(feeds)["y"], expected) <= 1e-5


@needs_device
@pytest.mark.parametrize("op, attrs", [
    ("GlobalAveragePool", {}), ("GlobalMaxPool", {}), ("AveragePool", {"kernel_shape": [5, 7]}),
])  # fmt: skip
@pytest.mark.parametrize("on_host", [False, True])
def test_global_pools_read_blocked_and_write_plain(op, attrs, on_host, monkeypatch):
    from edgeinfer.backends import opencl
    from edgeinfer.backends.opencl import kernels
    from edgeinfer.backends.opencl.kernels import NoKernel

    feeds = {"x": randn(2, 8, 5, 7)}
    constants = conv_constants("w1", 20, 8, 1)  # 20 channels: a ragged last block
    graph = build_graph([conv("first", "x", "w1", "a"), Node("pool", op, ["a"], ["y"], attrs)], feeds, constants)
    blocked = layout.apply(graph)
    pool = next(node for node in blocked.nodes if node.name == "pool")
    assert pool.inputs == ["a#nchw16c"] and pool.outputs == ["y"]  # no conversion of the large input
    assert not any(node.op == layout.FROM_BLOCKED for node in blocked.nodes)
    expected = numpy_backend.prepare(graph).run(feeds)["y"]
    if on_host:

        def refuse(node, ctx):
            raise NoKernel("refused by the test")

        monkeypatch.setitem(kernels.BLOCKED_PLANNERS, op, refuse)
    executable = opencl.prepare(graph, DEVICE.spec)
    row = next(row for row in executable.explain() if row["name"] == "pool")
    assert row["kernel"] == ("numpy" if on_host else "pool16"), row
    assert rel_l2(executable.run(feeds)["y"], expected) <= 1e-6
