"""The ONNX frontend and each compiler pass, on small graphs built with onnx.helper.

Numerics are checked against onnxruntime on the same model; structure (what was folded or fused)
against the compiled graph.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgeinfer.backends import numpy as numpy_backend  # noqa: E402
from edgeinfer.compiler import compile_model  # noqa: E402
from edgeinfer.errors import CompileError, UnsupportedOpError  # noqa: E402
from edgeinfer.frontend import onnx_import  # noqa: E402
from edgeinfer.ir import DEVICE, HOST, Graph, Node, TensorInfo  # noqa: E402
from edgeinfer.ops import OPS  # noqa: E402
from edgeinfer.passes.memory_plan import lifetimes, planned_names, view_roots  # noqa: E402
from edgeinfer.passes.shape_inference import infer_shapes  # noqa: E402

F = TensorProto.FLOAT
RNG = np.random.default_rng(1234)


def model(nodes, inputs, outputs, consts=None, opset=17) -> onnx.ModelProto:
    """A model from nodes, (name, shape) inputs, output names and a dict of initializers."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()]
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    m.ir_version = 7 if opset < 15 else 8
    return m


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def run_both(m: onnx.ModelProto, feeds: dict[str, np.ndarray], **kw) -> tuple[Graph, dict, dict]:
    """Compile and run ``m`` on the NumPy backend and on onnxruntime; return graph and both outputs."""
    graph = compile_model(m, **kw)
    ours = numpy_backend.prepare(graph).run(feeds)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    return graph, ours, ref


def assert_matches(ours: dict, ref: dict, tol: float = 1e-5) -> None:
    assert set(ours) == set(ref)
    for name, r in ref.items():
        assert ours[name].shape == r.shape, name
        assert ours[name].dtype == r.dtype, name
        err = np.linalg.norm(ours[name].astype(np.float64) - r) / max(np.linalg.norm(r), 1e-12)
        assert err <= tol, f"{name}: relative L2 error {err:.2e}"


def ops_of(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


# --- constant folding ------------------------------------------------------------------------------


def test_shape_chain_folds_to_constant_reshape_shape():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    consts = {"zero": np.array(0, np.int64), "axes0": np.array([0], np.int64), "minus1": np.array([-1], np.int64)}
    m = model(nodes, [("x", [2, 3, 4, 4])], ["y"], consts)
    graph, ours, ref = run_both(m, {"x": randn(2, 3, 4, 4)})
    assert ops_of(graph) == ["Reshape"]
    shape_input = graph.nodes[0].inputs[1]
    assert graph.constants[shape_input].tolist() == [2, -1]
    assert graph.tensors["y"].shape == (2, 48)
    assert_matches(ours, ref)


def test_shape_inference_pass_computes_what_onnx_left_unknown():
    # Only the input's shape is known: the pass must evaluate the shape arithmetic exactly.
    nodes = [
        Node("shape", "Shape", ["x"], ["s"]),
        Node("slice", "Slice", ["s", "zero", "two"], ["s2"]),
        Node("concat", "Concat", ["s2", "minus1"], ["target"], {"axis": 0}),
        Node("reshape", "Reshape", ["x", "target"], ["r"]),
        Node("relu", "Relu", ["r"], ["y"]),
    ]
    consts = {"zero": np.array([0]), "two": np.array([2]), "minus1": np.array([-1])}
    graph = Graph(nodes, ["x"], ["y"], {"x": TensorInfo("x", (2, 3, 4, 5), "float32")}, consts)
    infer_shapes(graph)
    assert graph.tensors["target"].shape == (3,) and graph.tensors["target"].dtype == "int64"
    assert graph.tensors["r"].shape == (2, 3, 20) and graph.tensors["y"].shape == (2, 3, 20)
    assert not any(t.dynamic for t in graph.tensors.values())


def test_constant_of_shape_and_range_fold():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["k"], value=numpy_helper.from_array(np.array([2.0], np.float32))),
        helper.make_node("Mul", ["x", "k"], ["y"]),
    ]
    graph, ours, ref = run_both(model(nodes, [("x", [1, 2, 3])], ["y"]), {"x": randn(1, 2, 3)})
    assert ops_of(graph) == ["Mul"]
    assert_matches(ours, ref)


def test_no_optimize_keeps_shape_chain_and_still_runs():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["y"])]
    graph, ours, ref = run_both(model(nodes, [("x", [1, 2, 3])], ["y"]), {"x": randn(1, 2, 3)}, optimize=False)
    assert ops_of(graph) == ["Shape", "Reshape"]
    assert_matches(ours, ref)


# --- BatchNormalization ------------------------------------------------------------------------------


def bn_consts(c: int) -> dict[str, np.ndarray]:
    return {
        "gamma": RNG.uniform(0.5, 1.5, c).astype(np.float32),
        "beta": randn(c),
        "mean": randn(c),
        "var": RNG.uniform(0.1, 2.0, c).astype(np.float32),
    }


def test_batchnorm_folds_into_conv():
    consts = {"w": randn(8, 3, 3, 3), "b": randn(8), **bn_consts(8)}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], epsilon=1e-3),
    ]
    graph, ours, ref = run_both(model(nodes, [("x", [1, 3, 8, 8])], ["y"], consts), {"x": randn(1, 3, 8, 8)})
    assert ops_of(graph) == ["Conv"]
    assert graph.nodes[0].outputs == ["y"]
    assert_matches(ours, ref)


@pytest.mark.parametrize("shape", [(2, 4, 5, 5), (3, 4), (1, 4, 3, 2, 2)])
def test_lone_batchnorm_becomes_mul_add(shape):
    nodes = [helper.make_node("BatchNormalization", ["x", "gamma", "beta", "mean", "var"], ["y"])]
    m = model(nodes, [("x", list(shape))], ["y"], bn_consts(4), opset=15)
    graph, ours, ref = run_both(m, {"x": randn(*shape)})
    assert ops_of(graph) == ["Mul", "Add"]
    assert_matches(ours, ref)


def test_batchnorm_conv_with_second_reader_is_not_folded():
    consts = {"w": randn(4, 4, 1, 1), **bn_consts(4)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"]),
        helper.make_node("Add", ["bn", "c"], ["y"]),
    ]
    graph, ours, ref = run_both(model(nodes, [("x", [1, 4, 3, 3])], ["y"], consts), {"x": randn(1, 4, 3, 3)})
    assert "BatchNormalization" not in ops_of(graph) and "Mul" in ops_of(graph)
    assert_matches(ours, ref)


def test_batchnorm_training_mode_is_unsupported():
    nodes = [helper.make_node("BatchNormalization", ["x", "gamma", "beta", "mean", "var"], ["y"], training_mode=1)]
    with pytest.raises(UnsupportedOpError, match="training"):
        compile_model(model(nodes, [("x", [1, 4, 2, 2])], ["y"], bn_consts(4), opset=15))


# --- Conv fusion -------------------------------------------------------------------------------------


def conv_model(tail: list, out: str = "y", extra_inputs=(), consts=None, c: int = 4) -> onnx.ModelProto:
    """x -> Conv(3x3, pad 1) -> c, then ``tail`` nodes."""
    all_consts = {"w": randn(c, c, 3, 3), "b": randn(c), **(consts or {})}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), *tail]
    return model(nodes, [("x", [1, c, 6, 6]), *extra_inputs], [out], all_consts)


@pytest.mark.parametrize(
    "act, node, params",
    [
        ("relu", helper.make_node("Relu", ["c"], ["y"]), None),
        ("leaky_relu", helper.make_node("LeakyRelu", ["c"], ["y"], alpha=0.2), [0.2]),
        ("clip", helper.make_node("Clip", ["c", "lo", "hi"], ["y"]), [0.0, 6.0]),
        ("sigmoid", helper.make_node("Sigmoid", ["c"], ["y"]), None),
        ("hard_sigmoid", helper.make_node("HardSigmoid", ["c"], ["y"], alpha=0.25, beta=0.4), [0.25, 0.4]),
        ("hard_swish", helper.make_node("HardSwish", ["c"], ["y"]), None),
        ("tanh", helper.make_node("Tanh", ["c"], ["y"]), None),
    ],
)
def test_conv_activation_fused(act, node, params):
    consts = {"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)} if act == "clip" else None
    graph, ours, ref = run_both(conv_model([node], consts=consts), {"x": randn(1, 4, 6, 6)})
    assert ops_of(graph) == ["Conv"]
    conv = graph.nodes[0]
    assert conv.attrs["activation"] == act
    if params:
        assert conv.attrs["activation_params"] == pytest.approx(params)
    assert conv.outputs == ["y"]
    assert_matches(ours, ref)


def test_conv_add_relu_fused_with_residual_input():
    tail = [helper.make_node("Add", ["r", "c"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    m = conv_model(tail, extra_inputs=[("r", [1, 4, 6, 6])])
    graph, ours, ref = run_both(m, {"x": randn(1, 4, 6, 6), "r": randn(1, 4, 6, 6)})
    assert ops_of(graph) == ["Conv"]
    assert graph.nodes[0].inputs[3] == "r" and graph.nodes[0].attrs["activation"] == "relu"
    assert_matches(ours, ref)


def test_residual_from_later_node_keeps_topological_order():
    # Z is computed after the Conv in the original order; the fused Conv must move after it.
    tail = [
        helper.make_node("Relu", ["x"], ["z"]),
        helper.make_node("Add", ["c", "z"], ["y"]),
    ]
    graph, ours, ref = run_both(conv_model(tail), {"x": randn(1, 4, 6, 6)})
    assert ops_of(graph) == ["Relu", "Conv"]
    assert_matches(ours, ref)


def test_broadcast_add_is_not_fused():
    tail = [helper.make_node("Add", ["c", "bias"], ["y"])]
    graph, ours, ref = run_both(conv_model(tail, consts={"bias": randn(1, 4, 1, 1)}), {"x": randn(1, 4, 6, 6)})
    assert ops_of(graph) == ["Conv", "Add"]
    assert_matches(ours, ref)


def test_silu_pattern_fused():
    tail = [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    graph, ours, ref = run_both(conv_model(tail), {"x": randn(1, 4, 6, 6)})
    assert ops_of(graph) == ["Conv"] and graph.nodes[0].attrs["activation"] == "silu"
    assert_matches(ours, ref)


def test_activation_not_fused_when_conv_output_has_other_reader():
    tail = [helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Add", ["r", "c"], ["y"])]
    graph, ours, ref = run_both(conv_model(tail), {"x": randn(1, 4, 6, 6)})
    assert ops_of(graph) == ["Conv", "Relu", "Add"]
    assert_matches(ours, ref)


def test_conv_output_that_is_graph_output_is_not_fused():
    m = conv_model([helper.make_node("Relu", ["c"], ["y"])])
    m.graph.output.append(helper.make_empty_tensor_value_info("c"))
    graph, ours, ref = run_both(m, {"x": randn(1, 4, 6, 6)})
    assert ops_of(graph) == ["Conv", "Relu"]
    assert_matches(ours, ref)


# --- frontend: legacy opsets, auto_pad, names --------------------------------------------------------


def legacy_cases():
    """(id, model, feeds) for legacy node forms the frontend must rewrite into opset 17; x is [1, 2, 4, 6]."""
    node = helper.make_node
    cases = [
        ("clip_attrs_opset7", 7, [node("Clip", ["x"], ["y"], min=-0.5, max=0.5)], None),
        ("upsample_attr_opset7", 7, [node("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 2.0, 2.0])], None),
        ("upsample_linear_opset9", 9, [node("Upsample", ["x", "sc"], ["y"], mode="linear")], [1, 1, 2, 3]),
        ("resize_opset10", 10, [node("Resize", ["x", "sc"], ["y"], mode="nearest")], [1, 1, 1.5, 2]),
        ("resize_shrink_opset10", 10, [node("Resize", ["x", "sc"], ["y"], mode="nearest")], [1, 1, 0.5, 0.6]),
        ("slice_attrs_opset9", 9, [node("Slice", ["x"], ["y"], starts=[1, 0], ends=[3, 5], axes=[2, 3])], None),
        ("pad_attrs_opset9", 9, [node("Pad", ["x"], ["y"], pads=[0, 0, 1, 2, 0, 0, 2, 1], value=1.5)], None),
        (
            "squeeze_unsqueeze_attrs_opset11",
            11,
            [node("Squeeze", ["x"], ["s"], axes=[0]), node("Unsqueeze", ["s"], ["y"], axes=[1])],
            None,
        ),
        (
            "split_attr_opset11",
            11,
            [
                node("Split", ["x"], ["a", "b"], axis=3, split=[2, 4]),
                node("ReduceSum", ["b"], ["y"], axes=[3], keepdims=1),
            ],
            None,
        ),
        ("softmax_2d_coercion_opset11", 11, [node("Softmax", ["x"], ["y"], axis=2)], None),
        ("dropout_opset7", 7, [node("Dropout", ["x"], ["d"], ratio=0.3), node("Relu", ["d"], ["y"])], None),
    ]
    x = randn(1, 2, 4, 6)
    for name, opset, nodes, scales in cases:
        consts = {"sc": np.array(scales, np.float32)} if scales else None
        yield name, model(nodes, [("x", [1, 2, 4, 6])], ["y"], consts, opset=opset), {"x": x}


LEGACY = list(legacy_cases())


@pytest.mark.parametrize("converter", ["onnx_converter", "own_rewrites"])
@pytest.mark.parametrize("case", LEGACY, ids=[c[0] for c in LEGACY])
def test_legacy_forms_match_onnxruntime(case, converter, monkeypatch):
    _, m, feeds = case
    if converter == "own_rewrites":  # as if onnx had no adapter: the frontend's rewrites alone must do

        def fail(*args, **kwargs):
            raise RuntimeError("no adapter")

        monkeypatch.setattr(onnx_import.version_converter, "convert_version", fail)
    graph, ours, ref = run_both(m, feeds)
    assert "Upsample" not in ops_of(graph) and "Dropout" not in ops_of(graph)
    for node in graph.nodes:
        assert not {"min", "max", "axes", "split", "pads", "starts", "scales"} & set(node.attrs), node
    assert_matches(ours, ref)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("op", ["Conv", "MaxPool", "AveragePool"])
def test_auto_pad_resolved_into_pads(op, auto_pad):
    if op == "Conv":
        node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], auto_pad=auto_pad)
        consts = {"w": randn(3, 3, 4, 3)}
    else:
        kw = {"count_include_pad": 0} if op == "AveragePool" else {}
        node = helper.make_node(op, ["x"], ["y"], kernel_shape=[3, 2], strides=[2, 2], auto_pad=auto_pad, **kw)
        consts = None
    graph, ours, ref = run_both(model([node], [("x", [1, 3, 7, 8])], ["y"], consts), {"x": randn(1, 3, 7, 8)})
    attrs = graph.nodes[0].attrs
    assert "auto_pad" not in attrs and len(attrs["pads"]) == 4 and len(attrs["kernel_shape"]) == 2
    assert_matches(ours, ref)


def test_convtranspose_output_shape_becomes_pads_and_output_padding():
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[3, 2], output_shape=[10, 6])
    m = model([node], [("x", [1, 1, 3, 3])], ["y"], {"w": randn(1, 2, 3, 3)})
    graph, ours, ref = run_both(m, {"x": randn(1, 1, 3, 3)})
    attrs = graph.nodes[0].attrs
    assert "output_shape" not in attrs and attrs["output_padding"] == [1, 0] and attrs["pads"] == [0, 1, 0, 0]
    assert_matches(ours, ref)


def test_optional_outputs_follow_their_readers():
    # MaxPool Indices read -> num_outputs=2 for the op; Split into equal parts -> num_outputs; unread
    # Dropout mask dropped so the Dropout disappears.
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p", "idx"], kernel_shape=[2, 2]),
        helper.make_node("MaxPool", ["x"], ["q", "unread"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Split", ["q"], ["a", "b"], axis=1),
        helper.make_node("Dropout", ["a"], ["d", "mask"]),
    ]
    m = model(nodes, [("x", [1, 4, 4, 4])], ["p", "idx", "b", "d"], opset=13)
    graph, ours, ref = run_both(m, {"x": randn(1, 4, 4, 4)})
    pool1, pool2, split = graph.nodes
    assert pool1.attrs["num_outputs"] == 2 and pool1.outputs == ["p", "idx"]
    assert "num_outputs" not in pool2.attrs and pool2.outputs == ["q"]
    assert split.attrs["num_outputs"] == 2 and graph.outputs == ["p", "idx", "b", "d"]
    assert_matches(ours, ref)


def test_identity_before_graph_output_keeps_output_name():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["out"])]
    graph, ours, ref = run_both(model(nodes, [("x", [2, 3])], ["out"]), {"x": randn(2, 3)})
    assert ops_of(graph) == ["Relu"] and graph.outputs == ["out"] and graph.nodes[0].outputs == ["out"]
    assert_matches(ours, ref)


def test_unnamed_nodes_get_unique_names_and_dead_code_is_removed():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
        helper.make_node("Sigmoid", ["x"], ["unused"]),
    ]
    graph = compile_model(model(nodes, [("x", [2, 3])], ["y"]))
    assert [n.name for n in graph.nodes] == ["Relu_0", "Relu_1"]
    assert "unused" not in graph.tensors


def test_constant_nodes_become_constants():
    nodes = [
        helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.full((2, 3), 3, np.float32))),
        helper.make_node("Mul", ["x", "k"], ["y"]),
    ]
    graph, ours, ref = run_both(model(nodes, [("x", [2, 3])], ["y"]), {"x": randn(2, 3)})
    assert ops_of(graph) == ["Mul"] and graph.constants["k"].dtype == np.float32
    assert_matches(ours, ref)


# --- errors ------------------------------------------------------------------------------------------


def test_unsupported_op_names_op_node_and_opset():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Det", ["a"], ["y"], name="my_det")]
    with pytest.raises(UnsupportedOpError) as info:
        compile_model(model(nodes, [("x", [3, 3])], ["y"], opset=13))
    msg = str(info.value)
    assert "'Det'" in msg and "my_det" in msg and "opset 13" in msg
    assert (info.value.op, info.value.node, info.value.opset) == ("Det", "my_det", 13)


def test_foreign_domain_op_is_unsupported():
    node = helper.make_node("FusedConv", ["x"], ["y"], domain="com.microsoft", name="fc")
    m = model([node], [("x", [1, 1])], ["y"])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(UnsupportedOpError, match="FusedConv"):
        compile_model(m)


@pytest.mark.parametrize("opset", [6, 18])
def test_opset_out_of_range_is_rejected(opset):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1])], ["y"], opset=opset)
    with pytest.raises(CompileError, match=f"opset {opset}"):
        compile_model(m)


def dynamic_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["y"])],
        "dyn",
        [helper.make_tensor_value_info("images", F, ["N", 3, "height", "width"])],
        [helper.make_tensor_value_info("y", F, ["N", 3, "height", "width"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_dynamic_dims_without_input_shape_raise_compile_error():
    with pytest.raises(CompileError) as info:
        compile_model(dynamic_model())
    msg = str(info.value)
    assert "images" in msg and "--input-shape" in msg and "height" in msg


def test_input_shapes_fix_dynamic_dims():
    graph = compile_model(dynamic_model(), {"images": (2, 3, 5, 7)})
    assert graph.tensors["images"].shape == (2, 3, 5, 7) and graph.tensors["y"].shape == (2, 3, 5, 7)


def test_symbolic_batch_defaults_to_one():
    m = dynamic_model()
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 4, 4
    assert compile_model(m).tensors["y"].shape == (1, 3, 4, 4)


def test_bad_input_shapes_are_rejected():
    with pytest.raises(CompileError, match="rank"):
        compile_model(dynamic_model(), {"images": (1, 3, 4)})
    with pytest.raises(CompileError, match="nope"):
        compile_model(dynamic_model(), {"nope": (1, 3, 4, 4)})


# --- placement, metadata, memory plan ----------------------------------------------------------------


@pytest.mark.skipif("NonMaxSuppression" not in OPS, reason="NonMaxSuppression op not implemented yet")
def test_nms_output_is_dynamic_and_runs_on_cpu():
    nodes = [
        helper.make_node("Relu", ["scores"], ["s"]),
        helper.make_node("NonMaxSuppression", ["boxes", "s", "maxo", "iou"], ["sel"]),
        helper.make_node("Cast", ["sel"], ["y"], to=TensorProto.FLOAT),
    ]
    consts = {"maxo": np.array([5], np.int64), "iou": np.array([0.5], np.float32)}
    graph = compile_model(model(nodes, [("boxes", [1, 6, 4]), ("scores", [1, 1, 6])], ["y"], consts))
    assert [n.placement for n in graph.nodes] == [DEVICE, HOST, HOST]
    assert graph.tensors["sel"].dynamic and graph.tensors["y"].dynamic
    assert not graph.tensors["s"].dynamic
    assert "sel" not in graph.memory_plan.offsets


def test_metadata_and_flops():
    m = conv_model([helper.make_node("Relu", ["c"], ["y"])])
    before = m.SerializeToString()
    graph = compile_model(m)
    assert m.SerializeToString() == before, "compiling must not modify the caller's model"
    meta = graph.metadata
    assert len(meta["source_sha256"]) == 64 and meta["opset"] == 17
    assert meta["node_flops"].keys() == {n.name for n in graph.nodes}
    # 2 * MACs (6*6*4 outputs x 4*3*3 weights) + bias + activation per output
    assert meta["flops"] == 2 * 144 * 36 + 2 * 144
    assert all("flops" not in n.attrs for n in graph.nodes)


def test_pipeline_is_bound_to_the_input_and_stored_in_metadata():
    config = pytest.importorskip("edgeinfer.pipelines.config")
    pipeline = config.resolve_pipeline("squeezenet")
    graph = compile_model(
        model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 3, 20, 30])], ["y"]), pipeline=pipeline
    )
    stored = graph.metadata["pipeline"]
    assert stored["input"] == "x" and stored["size"] == [20, 30] and stored["task"] == pipeline["task"]


def test_compile_from_file_hashes_the_file(tmp_path):
    import hashlib

    path = tmp_path / "m.onnx"
    onnx.save(conv_model([helper.make_node("Relu", ["c"], ["y"])]), str(path))
    graph = compile_model(path)
    assert graph.metadata["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert graph.metadata["source_name"] == "m"


def assert_plan_valid(graph: Graph) -> None:
    """Tensors whose lifetimes overlap never overlap in the arena; offsets are aligned."""
    plan = graph.memory_plan
    spans = lifetimes(graph, plan.alignment)  # a view's bytes are its root's: one span for both
    views = view_roots(graph, planned_names(graph))
    assert {s.name for s in spans} | set(views) == set(plan.offsets)
    assert all(plan.offsets[view] == plan.offsets[root] for view, root in views.items())
    for s in spans:
        assert plan.offsets[s.name] % plan.alignment == 0
        assert plan.offsets[s.name] + s.size <= plan.arena_bytes
    for a, b in itertools.combinations(spans, 2):
        if a.overlaps(b) and a.size and b.size:
            oa, ob = plan.offsets[a.name], plan.offsets[b.name]
            assert oa + a.size <= ob or ob + b.size <= oa, (a, b)


def test_memory_plan_never_overlaps_live_tensors():
    # A random DAG of elementwise ops with skip connections and varied sizes.
    nodes, names = [], ["x"]
    shapes = {"x": (1, 8, 16, 16)}
    for i in range(40):
        a = names[RNG.integers(len(names))]
        if RNG.random() < 0.3:
            out = f"p{i}"
            nodes.append(helper.make_node("MaxPool", [a], [out], kernel_shape=[2, 2], strides=[1, 1]))
            shapes[out] = (1, 8, shapes[a][2] - 1, shapes[a][3] - 1)
        else:
            same = [n for n in names if shapes[n] == shapes[a]]
            b = same[RNG.integers(len(same))]
            out = f"t{i}"
            nodes.append(helper.make_node("Add", [a, b], [out]))
            shapes[out] = shapes[a]
        names.append(out)
    outputs = [n for n in names[-3:]]
    graph = compile_model(model(nodes, [("x", list(shapes["x"]))], outputs))
    assert_plan_valid(graph)
    plan = graph.memory_plan
    assert 0 < plan.arena_bytes < plan.naive_bytes
    assert not set(plan.offsets) & (set(graph.inputs) | set(graph.outputs) | set(graph.constants))


@pytest.mark.skipif("TopK" not in OPS, reason="TopK op not implemented yet")
def test_cpu_tail_stays_on_cpu_and_device_consumers_stay_on_device():
    """After TopK (CPU only), a Mul fed only by it stays on the CPU (no upload + download for one op);
    an Add that also reads a device result goes back to the device."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("TopK", ["r", "k"], ["values", "indices"], axis=1),
        helper.make_node("Mul", ["values", "two"], ["doubled"]),
        helper.make_node("ReduceMax", ["r"], ["peak"], axes=[1], keepdims=1),
        helper.make_node("Add", ["doubled", "peak"], ["y"]),
        helper.make_node("Neg", ["doubled"], ["z"]),
    ]
    consts = {"k": np.array([3], np.int64), "two": np.array(2.0, np.float32)}
    graph = compile_model(model(nodes, [("x", [1, 8])], ["y", "z"], consts))
    placement = {n.op: n.placement for n in graph.nodes}
    assert placement == {"Relu": DEVICE, "TopK": HOST, "Mul": HOST, "ReduceMax": DEVICE, "Add": DEVICE, "Neg": HOST}


def test_views_share_their_input_bytes_which_live_until_the_last_reader_of_either(tmp_path):
    """Reshape/Flatten outputs get their input's offset; the input's span is extended to the view's readers,
    so nothing written meanwhile lands on those bytes."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Reshape", ["a", "shape"], ["v"]),
        helper.make_node("Sigmoid", ["x"], ["b"]),  # written while v is alive: must not take a's bytes
        helper.make_node("Flatten", ["b"], ["b2"], axis=1),
        helper.make_node("Flatten", ["v"], ["w"], axis=1),
        helper.make_node("Add", ["w", "b2"], ["y"]),
    ]
    graph_proto = helper.make_graph(
        nodes, "views", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
        [numpy_helper.from_array(np.array([1, 4, 64], np.int64), "shape")],
    )  # fmt: skip
    path = tmp_path / "views.onnx"
    onnx.save(helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    graph = compile_model(path)
    plan = graph.memory_plan
    assert plan.offsets["v"] == plan.offsets["a"] == plan.offsets["w"]
    assert plan.offsets["b"] != plan.offsets["a"]
    assert_plan_valid(graph)
