"""The NumPy executor's plans (in-place Concats, row-padded depthwise inputs, packed weights) change no result."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgeinfer.backends.numpy import NumpyExecutable, native_kernels  # noqa: E402
from edgeinfer.backends.numpy.executor import node_run  # noqa: E402
from edgeinfer.backends.numpy.kernels import conv as conv_kernel  # noqa: E402
from edgeinfer.compiler import compile_model  # noqa: E402

RNG = np.random.default_rng(7)


class ModelBuilder:
    """A small ONNX graph of Convs and activations, built node by node."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def conv(self, x: str, cin: int, cout: int, k: int = 1, stride: int = 1, pads=(0, 0, 0, 0), group: int = 1,
             act: str | None = None) -> str:  # fmt: skip
        w, b, y = self._name("w"), self._name("b"), self._name("t")
        weight = (RNG.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)).astype(np.float32)
        self.inits += [numpy_helper.from_array(weight, w),
                       numpy_helper.from_array(RNG.standard_normal(cout).astype(np.float32), b)]  # fmt: skip
        self.nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[stride, stride],
                                           pads=list(pads), group=group))  # fmt: skip
        return self.activation(y, act)

    def activation(self, x: str, act: str | None) -> str:
        if act is None:
            return x
        y = self._name("a")
        if act == "relu6":
            lo, hi = self._name("lo"), self._name("hi")
            self.inits += [numpy_helper.from_array(np.array(0, np.float32), lo),
                           numpy_helper.from_array(np.array(6, np.float32), hi)]  # fmt: skip
            self.nodes.append(helper.make_node("Clip", [x, lo, hi], [y]))
        else:
            self.nodes.append(helper.make_node(act, [x], [y]))
        return y

    def max_pool(self, x: str, k: int = 3, stride: int = 2, pads=(0, 0, 0, 0), ceil_mode: int = 0) -> str:
        y = self._name("pool")
        self.nodes.append(helper.make_node("MaxPool", [x], [y], kernel_shape=[k, k], strides=[stride, stride],
                                           pads=list(pads), ceil_mode=ceil_mode))  # fmt: skip
        return y

    def concat(self, xs: list[str]) -> str:
        y = self._name("cat")
        self.nodes.append(helper.make_node("Concat", xs, [y], axis=1))
        return y

    def model(self, out: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "plans", [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits,
        )  # fmt: skip
        # IR version 8 (opset 14's): a newer onnx writes a version an older onnxruntime refuses
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def run_both(
    model: onnx.ModelProto, shape: tuple[int, ...], native: bool = False
) -> tuple[NumpyExecutable, list[np.ndarray]]:
    """The executable (pure NumPy, or with the ``native`` kernels), and the relative L2 errors against
    onnxruntime on three inputs run in turn."""
    ex = NumpyExecutable(compile_model(model), native=native)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    errors = []
    for seed in (0, 1, 0):  # the third run repeats the first: buffers kept between runs must not leak
        x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 3
        (expected,) = sess.run(None, {"x": x})
        got = next(iter(ex.run({"x": x}).values()))
        assert got.shape == expected.shape and got.flags.c_contiguous
        errors.append(float(np.linalg.norm(got - expected) / np.linalg.norm(expected)))
    return ex, errors


def fire(b: ModelBuilder, x: str, cin: int, squeeze: int, expand: int, acts=("Relu", "Relu")) -> str:
    s = b.conv(x, cin, squeeze, act="Relu")
    return b.concat([b.conv(s, squeeze, expand, act=acts[0]), b.conv(s, squeeze, expand, 3, pads=(1, 1, 1, 1),
                                                                    act=acts[1])])  # fmt: skip


@pytest.mark.parametrize("native", [False, True], ids=["numpy", "native"])
def test_fire_modules_concatenate_in_place_with_one_epilogue(native: bool) -> None:
    b = ModelBuilder((1, 8, 13, 11))
    y = fire(b, fire(b, "x", 8, 4, 8), 16, 4, 8)
    ex, errors = run_both(b.model(b.conv(y, 16, 5)), (1, 8, 13, 11), native)
    assert ex.plans()["inplace_concats"] == 2 and ex.plans()["deferred_concat_epilogues"] == 2
    assert max(errors) < 1e-5


@pytest.mark.parametrize("native", [False, True], ids=["numpy", "native"])
def test_concat_of_producers_with_different_activations_keeps_their_epilogues(native: bool) -> None:
    b = ModelBuilder((1, 8, 9, 9))
    y = fire(b, "x", 8, 4, 6, acts=("Relu", "Sigmoid"))
    ex, errors = run_both(b.model(b.conv(y, 12, 3)), (1, 8, 9, 9), native)
    assert ex.plans()["inplace_concats"] == 1 and ex.plans()["deferred_concat_epilogues"] == 0
    assert max(errors) < 1e-5


@pytest.mark.parametrize("native", [False, True], ids=["numpy", "native"])
def test_concat_of_a_grouped_conv_copies_its_result_into_place(native: bool) -> None:
    b = ModelBuilder((1, 8, 9, 9))
    grouped = b.conv("x", 8, 8, 3, pads=(1, 1, 1, 1), group=2, act="Relu")  # no channels-last form
    y = b.concat([grouped, b.conv("x", 8, 4, act="Relu")])
    ex, errors = run_both(b.model(b.conv(y, 12, 3)), (1, 8, 9, 9), native)
    assert ex.plans()["inplace_concats"] == 1
    assert max(errors) < 1e-5


DEPTHWISE = [  # (H, W, kernel, stride, pads)
    (7, 9, 3, 1, (1, 1, 1, 1)),
    (8, 10, 3, 2, (0, 0, 1, 1)),  # TensorFlow's SAME at stride 2
    (9, 9, 3, 2, (1, 1, 1, 1)),
    (9, 11, 5, 1, (2, 2, 2, 2)),
    (6, 6, 3, 1, (0, 0, 0, 0)),
]


@pytest.mark.parametrize("case", DEPTHWISE, ids=str)
def test_depthwise_reads_the_row_padded_buffer_of_its_producer(case: tuple) -> None:
    h, w, k, stride, pads = case
    b = ModelBuilder((1, 8, h, w))
    e = b.conv("x", 8, 24, act="relu6")
    d = b.conv(e, 24, 24, k, stride, pads, group=24, act="relu6")
    ex, errors = run_both(b.model(b.conv(d, 24, 8)), (1, 8, h, w))
    assert ex.plans()["row_padded_depthwise"] == 1
    assert max(errors) < 1e-5


def test_depthwise_after_an_unbounded_producer_keeps_the_padded_copy() -> None:
    """Wrapped taps meet zero weights, which cancel only finite values: a ReLU output may be inf."""
    b = ModelBuilder((1, 8, 7, 7))
    d = b.conv(b.conv("x", 8, 16, act="Relu"), 16, 16, 3, 1, (1, 1, 1, 1), group=16, act="relu6")
    ex, errors = run_both(b.model(d), (1, 8, 7, 7))
    assert ex.plans()["row_padded_depthwise"] == 0
    assert max(errors) < 1e-5


def test_only_convs_with_constant_weights_get_a_weight_cache() -> None:
    """Backend choices are per-node state of the executor: the node's attributes stay as compiled."""
    b = ModelBuilder((1, 4, 5, 5))
    graph = compile_model(b.model(b.conv("x", 4, 4, act="Relu")))
    conv = next(n for n in graph.nodes if n.op == "Conv")
    compiled = dict(conv.attrs)
    assert node_run(conv, graph.constants).state.cache == {}
    assert node_run(conv, {}).state.cache is None
    run = node_run(conv, graph.constants, native=True)
    assert run.kernel is conv_kernel and run.state.native
    ex = NumpyExecutable(graph)
    ex.run({"x": np.ones((1, 4, 5, 5), np.float32)})
    assert conv.attrs == compiled and all(r.node.attrs is n.attrs for r, n in zip(ex._runs, graph.nodes))


@pytest.mark.parametrize("pool", [(3, 2, (0, 0, 0, 0), 0), (3, 2, (1, 1, 1, 1), 0), (2, 2, (0, 0, 0, 0), 1)], ids=str)
@pytest.mark.parametrize("native", [False, True], ids=["numpy", "native"])
def test_epilogues_run_after_the_max_pool_that_reads_them(pool: tuple, native: bool) -> None:
    """A stem conv's ReLU and a fire module's biases + ReLU move past the MaxPool.

    Max commutes exactly with a later bias add and ReLU; against producers that add the bias inside their
    sgemm the sums round differently, so the comparison allows an ulp or so.
    """
    k, stride, pads, ceil_mode = pool
    b = ModelBuilder((1, 3, 17, 15))
    stem = b.max_pool(b.conv("x", 3, 8, 3, 2, act="Relu"), k, stride, pads, ceil_mode)
    y = b.max_pool(fire(b, stem, 8, 4, 6), k, stride, pads, ceil_mode)
    model = b.model(b.conv(y, 12, 5, act="Sigmoid"))
    ex, errors = run_both(model, (1, 3, 17, 15), native)
    assert ex.plans()["epilogues_after_max_pool"] == 2 and ex.plans()["deferred_concat_epilogues"] == 0
    assert max(errors) < 1e-5
    x = np.random.default_rng(3).standard_normal((1, 3, 17, 15)).astype(np.float32)
    plain = NumpyExecutable(compile_model(model), native=native)
    plain._pool_epilogues = {}  # the same graph, epilogues where the producers left them
    plain._runs = [node_run(n, plain.graph.constants, plain.native) for n in plain.graph.nodes]
    for group in plain._finish.values():  # with the producers' own biases and activations
        group.deferred = False
    got, expected = (next(iter(e.run({"x": x}).values())) for e in (ex, plain))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("native", [False, True], ids=["numpy", "native"])
def test_hard_swish_stays_before_the_max_pool(native: bool) -> None:
    b = ModelBuilder((1, 3, 9, 9))
    y = b.max_pool(b.conv("x", 3, 8, 3, 1, (1, 1, 1, 1), act="HardSwish"))
    ex, errors = run_both(b.model(y), (1, 3, 9, 9), native)
    assert ex.plans()["epilogues_after_max_pool"] == 0
    assert max(errors) < 1e-5


def test_explain_names_each_plan() -> None:
    b = ModelBuilder((1, 8, 9, 9))
    y = b.max_pool(fire(b, "x", 8, 4, 6))
    d = b.conv(b.conv(y, 12, 24, act="relu6"), 24, 24, 3, 1, (1, 1, 1, 1), group=24, act="relu6")
    ex = NumpyExecutable(compile_model(b.model(d)), native=False)
    plans = {row["op"] + ":" + next(iter(row["config"]), "-") for row in ex.explain()}
    assert {"Concat:computed_in_place_by", "MaxPool:runs_epilogue_of_its_input", "Conv:writes_channels_of",
            "Conv:row_padded"} <= plans  # fmt: skip


def test_a_stem_conv_writes_the_row_padded_input_of_its_depthwise() -> None:
    b = ModelBuilder((1, 3, 17, 17))
    stem = b.conv("x", 3, 16, 3, 2, (0, 0, 1, 1), act="relu6")  # MobileNetV2's stem, reading the NCHW input
    d = b.conv(stem, 16, 16, 3, 1, (1, 1, 1, 1), group=16, act="relu6")
    ex, errors = run_both(b.model(b.conv(d, 16, 8)), (1, 3, 17, 17))
    assert ex.plans()["row_padded_depthwise"] == 1
    assert max(errors) < 1e-5


@pytest.mark.parametrize("case", DEPTHWISE, ids=str)
def test_native_depthwise_reads_its_input_without_row_padded_buffers(case: tuple) -> None:
    """The native kernel pads on the fly: no row-padded plan, the same results."""
    if not native_kernels.available():
        pytest.skip(f"native kernels: {native_kernels.status()}")
    h, w, k, stride, pads = case
    b = ModelBuilder((1, 8, h, w))
    d = b.conv(b.conv("x", 8, 32, act="relu6"), 32, 32, k, stride, pads, group=32, act="relu6")
    ex, errors = run_both(b.model(b.conv(d, 32, 8)), (1, 8, h, w), native=True)
    assert ex.plans()["row_padded_depthwise"] == 0 and ex.plans()["native_kernels"] == 1
    # (the 1x1 convs' tails are too small for the native epilogue to pay: native_kernels.epilogue_declines)
    assert [row["kernel"] for row in ex.explain()] == ["numpy", "native", "numpy"]
    assert max(errors) < 1e-5


@pytest.mark.parametrize("native", [False, True], ids=["numpy", "native"])
def test_concat_of_depthwise_convs_writes_channel_ranges(native: bool) -> None:
    """With the native kernels a depthwise conv writes its channel range of the Concat directly."""
    b = ModelBuilder((1, 8, 9, 9))
    e = b.conv("x", 8, 16)
    y = b.concat([b.conv(e, 16, 16, 3, 1, (1, 1, 1, 1), group=16, act="relu6"),
                  b.conv(e, 16, 16, 5, 1, (2, 2, 2, 2), group=16, act="Relu")])  # fmt: skip
    ex, errors = run_both(b.model(b.conv(y, 32, 4, act="Relu")), (1, 8, 9, 9), native)
    assert ex.plans()["inplace_concats"] == 1
    assert max(errors) < 1e-5
