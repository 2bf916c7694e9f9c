"""ONNX → IR import: the only runtime module that imports ``onnx``.

The importer brings any opset 7–17 model into the canonical opset-17 form that every op and backend
assumes (see docs/architecture.md): it tries onnx's version converter first, then rewrites every
legacy node form itself (attributes that became inputs, ``Upsample``, opset-10 ``Resize``, old
``Softmax`` axis semantics, ...) because converters are missing for some ops and wrong for others.
Initializers and ``Constant`` nodes become ``Graph.constants``; symbolic input dimensions are fixed
from ``input_shapes``; onnx's shape inference then records every tensor shape it can, and the
``shape_inference`` pass completes the rest. ``auto_pad`` is resolved into explicit ``pads``.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference, version_converter

from edgeinfer.errors import CompileError, UnsupportedOpError
from edgeinfer.ir import Graph, Node, TensorInfo
from edgeinfer.ops import OPS

MIN_OPSET, MAX_OPSET = 7, 17
DEFAULT_DOMAINS = ("", "ai.onnx")
# Ops the passes remove or rewrite, so they may be missing from the NumPy op registry.
REWRITTEN_OPS = {"BatchNormalization", "Dropout", "Identity"}
POOL_OPS = {"MaxPool", "AveragePool", "LpPool"}


def load_model(model: onnx.ModelProto | str | Path) -> tuple[onnx.ModelProto, str, str]:
    """Load a model and return it with the sha256 of its serialized bytes and a display name."""
    if isinstance(model, onnx.ModelProto):
        data = model.SerializeToString()
        return model, hashlib.sha256(data).hexdigest(), model.graph.name or "model"
    path = Path(model)
    if path.is_dir():
        raise CompileError(f"ONNX model {str(path)!r} is a directory; expected an .onnx file")
    if not path.is_file():
        raise CompileError(f"ONNX model file {str(path)!r} does not exist")
    data = path.read_bytes()
    if not data:
        raise CompileError(f"ONNX model file {str(path)!r} is empty; expected a serialized ONNX model")
    try:
        proto = onnx.load_model_from_string(data)
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
            onnx.load_external_data_for_model(proto, str(path.parent))
    except Exception as e:  # protobuf raises several unrelated types on garbage
        raise CompileError(f"{str(path)!r} is not a readable ONNX model: {e}") from e
    return proto, hashlib.sha256(data).hexdigest(), path.stem


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset for the default ONNX domain."""
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            return int(imp.version)
    raise CompileError("model imports no opset for the default ONNX domain")


def import_onnx(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Graph:
    """Convert a loaded ONNX model into a canonical opset-17 :class:`Graph` with shapes where known."""
    opset = default_opset(model)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise CompileError(f"model uses ONNX opset {opset}; edgeinfer supports opsets {MIN_OPSET} to {MAX_OPSET}")
    for node in model.graph.node:
        if node.domain not in DEFAULT_DOMAINS:
            version = next((i.version for i in model.opset_import if i.domain == node.domain), 0)
            raise UnsupportedOpError(
                f"{node.domain}.{node.op_type}",
                node.name or node.op_type,
                version,
                "only ops of the default ONNX domain are supported",
            )
    model, effective_opset = _upgrade(model, opset)
    _Normalizer(model.graph, effective_opset, opset).run()
    for imp in model.opset_import:  # every node is in opset-17 form now; let onnx's inference know
        if imp.domain in DEFAULT_DOMAINS:
            imp.version = MAX_OPSET
    model.ir_version = max(model.ir_version, 8)
    _fix_input_shapes(model.graph, input_shapes or {})
    inferred = _infer_onnx_shapes(model)
    return _to_ir(model.graph, inferred, opset)


def _upgrade(model: onnx.ModelProto, opset: int) -> tuple[onnx.ModelProto, int]:
    """Run onnx's version converter; keep a copy of the original when it fails (the normalizer covers that).

    Returns the model and the opset its nodes now follow.
    """
    if opset < MAX_OPSET:
        try:
            converted = version_converter.convert_version(model, MAX_OPSET)
        except Exception:  # the converter raises bare RuntimeErrors/ValidationErrors for missing adapters
            converted = None
        if converted is not None:
            if opset < 11:
                _fix_converted_resize(converted)
            return converted, MAX_OPSET
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out, opset


def _fix_converted_resize(model: onnx.ModelProto) -> None:
    """The converter turns Upsample/Resize-10 into Resize-11 without the asymmetric coordinate mode."""
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    for n in model.graph.node:
        if n.op_type == "Resize" and not any(a.name == "coordinate_transformation_mode" for a in n.attribute):
            scales = consts.get(n.input[2]) if len(n.input) > 2 else None
            _set_legacy_resize_attrs(n, scales)


def _set_legacy_resize_attrs(node: onnx.NodeProto, scales: np.ndarray | None) -> None:
    """Upsample and Resize-10 map pixels asymmetrically; nearest rounds down when enlarging, up when shrinking
    (what onnxruntime does for those opsets)."""
    mode = _del_attrs(node, "mode").get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    _set_attr(node, "mode", "linear" if mode in ("linear", "bilinear") else mode)
    _set_attr(node, "coordinate_transformation_mode", "asymmetric")
    if mode == "nearest":
        if scales is None or not ((scales >= 1).all() or (scales <= 1).all()):
            raise UnsupportedOpError(
                node.op_type,
                node.name,
                10,
                "legacy nearest resize needs constant scales that all enlarge or all shrink",
            )
        _set_attr(node, "nearest_mode", "floor" if (scales >= 1).all() else "ceil")


def _set_attr(node: onnx.NodeProto, name: str, value: Any) -> None:
    _del_attrs(node, name)
    node.attribute.append(helper.make_attribute(name, value))


def _del_attrs(node: onnx.NodeProto, *names: str) -> dict[str, Any]:
    """Remove attributes and return their values."""
    found = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in names}
    keep = [a for a in node.attribute if a.name not in names]
    del node.attribute[:]
    node.attribute.extend(keep)
    return found


class _Normalizer:
    """Rewrites legacy node forms into opset-17 form, whether or not the version converter ran.

    Most legacy forms show in the node itself (an attribute that later became an input); the others
    (Softmax's 2-D coercion, Resize-10) are recognised from ``opset``, the opset the nodes follow now.
    """

    def __init__(self, graph: onnx.GraphProto, opset: int, source_opset: int):
        self.graph, self.opset, self.source_opset = graph, opset, source_opset
        self.names = {n for node in graph.node for n in (*node.input, *node.output)}
        self.names |= {t.name for t in graph.initializer} | {i.name for i in graph.input}
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.node_names: set[str] = set()
        # Tensors something reads: optional outputs nobody reads may be dropped.
        self.read = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}

    def run(self) -> None:
        nodes: list[onnx.NodeProto] = []
        for index, node in enumerate(self.graph.node):
            self._name_node(node, index)
            nodes.extend(self._normalize(node))
        del self.graph.node[:]
        self.graph.node.extend(nodes)

    def _name_node(self, node: onnx.NodeProto, index: int) -> None:
        """Give every node a stable unique name: its own, else ``<Op>_<index>``."""
        name = node.name or f"{node.op_type}_{index}"
        base, k = name, 1
        while name in self.node_names:
            name, k = f"{base}_{k}", k + 1
        node.name = name
        self.node_names.add(name)

    def _fresh(self, hint: str) -> str:
        name, k = hint, 1
        while name in self.names:
            name, k = f"{hint}_{k}", k + 1
        self.names.add(name)
        return name

    def _const(self, node: onnx.NodeProto, what: str, value: np.ndarray) -> str:
        """Add an initializer for a former attribute of ``node`` and return its name."""
        name = self._fresh(f"{node.name}/{what}")
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self.consts[name] = value
        return name

    def _unsupported(self, node: onnx.NodeProto, detail: str) -> UnsupportedOpError:
        return UnsupportedOpError(node.op_type, node.name, self.source_opset, detail)

    def _attr_to_input(self, node: onnx.NodeProto, attr: str, position: int) -> None:
        """Move int-list attribute ``attr`` to input ``position`` (padding skipped inputs with "")."""
        found = _del_attrs(node, attr)
        if attr not in found:
            return
        inputs = list(node.input) + [""] * max(0, position - len(node.input))
        inputs[position:position] = [self._const(node, attr, np.asarray(found[attr], dtype=np.int64))]
        del node.input[:]
        node.input.extend(inputs)

    def _normalize(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        op = node.op_type
        if op == "Constant":
            self._constant_to_initializer(node)
            return []
        if op == "Clip":
            found = _del_attrs(node, "min", "max")
            if found:
                lo, hi = found.get("min", -np.inf), found.get("max", np.inf)
                del node.input[1:]
                node.input.extend([self._const(node, "min", np.float32(lo)), self._const(node, "max", np.float32(hi))])
        elif op in ("Squeeze", "Unsqueeze", "ReduceSum"):
            self._attr_to_input(node, "axes", 1)
        elif op == "Split":
            self._attr_to_input(node, "split", 1)
            if len(node.input) < 2 or not node.input[1]:
                # Equal parts: the op cannot see its node's output count, so it reads it from num_outputs.
                _set_attr(node, "num_outputs", len(node.output))
        elif op == "TopK":
            k = _del_attrs(node, "k")
            if k:
                node.input.append(self._const(node, "k", np.asarray([k["k"]], dtype=np.int64)))
        elif op == "Pad":
            found = _del_attrs(node, "pads", "value")
            if "pads" in found:
                node.input.append(self._const(node, "pads", np.asarray(found["pads"], dtype=np.int64)))
                node.input.append(self._const(node, "value", np.float32(found.get("value", 0.0))))
        elif op == "Slice" and len(node.input) == 1:
            found = _del_attrs(node, "starts", "ends", "axes")
            for key in ("starts", "ends", "axes"):
                if key in found:
                    node.input.append(self._const(node, key, np.asarray(found[key], dtype=np.int64)))
        elif op == "Upsample" or (op == "Resize" and len(node.input) <= 2):
            self._legacy_resize(node)
        elif op == "Resize":
            self._drop_empty_inputs(node, (1, 2))
        elif op == "Scatter":
            node.op_type = "ScatterElements"
        elif op == "Dropout":
            self._dropout(node)
        elif op == "BatchNormalization":
            self._batchnorm(node)
        elif op in ("Softmax", "LogSoftmax", "Hardmax") and self.opset < 13:
            return self._legacy_softmax(node)
        return [node]

    def _constant_to_initializer(self, node: onnx.NodeProto) -> None:
        attr = node.attribute[0]
        if attr.name == "value":
            value = numpy_helper.to_array(attr.t)
        elif attr.name in ("value_float", "value_floats"):
            value = np.asarray(helper.get_attribute_value(attr), dtype=np.float32)
        elif attr.name in ("value_int", "value_ints"):
            value = np.asarray(helper.get_attribute_value(attr), dtype=np.int64)
        else:
            raise self._unsupported(node, f"Constant with {attr.name!r} is not supported")
        tensor = numpy_helper.from_array(value, node.output[0])
        self.graph.initializer.append(tensor)
        self.consts[node.output[0]] = value

    def _drop_empty_inputs(self, node: onnx.NodeProto, positions: tuple[int, ...]) -> None:
        """Opset 11 needed empty-tensor placeholders for Resize's roi/scales; opset 17 uses "" instead."""
        for i in positions:
            if i < len(node.input) and node.input[i] in self.consts and self.consts[node.input[i]].size == 0:
                node.input[i] = ""

    def _legacy_resize(self, node: onnx.NodeProto) -> None:
        """Upsample (attribute or input scales) and Resize-10 become Resize(X, "", scales)."""
        found = _del_attrs(node, "scales", "height_scale", "width_scale")
        if "scales" in found:
            scales_name = self._const(node, "scales", np.asarray(found["scales"], dtype=np.float32))
        elif len(node.input) > 1:
            scales_name = node.input[1]
        else:
            raise self._unsupported(node, "Upsample without scales")
        node.op_type = "Resize"
        del node.input[1:]
        node.input.extend(["", scales_name])
        _set_legacy_resize_attrs(node, self.consts.get(scales_name))

    def _dropout(self, node: onnx.NodeProto) -> None:
        """Inference Dropout is the identity with an all-true mask.

        A constant training_mode=True is accepted only with ratio 0 (still the identity); a training_mode
        computed at run time stays an input, for the op to check.
        """
        _del_attrs(node, "ratio", "is_test", "seed")
        training = node.input[2] if len(node.input) > 2 else ""
        if training in self.consts and bool(self.consts[training]):
            ratio = self.consts.get(node.input[1]) if node.input[1] else None
            if ratio is None or float(ratio) != 0.0:
                raise self._unsupported(node, "Dropout in training mode draws a random mask; inference only")
        if not training or training in self.consts:
            del node.input[1:]
        if not any(o in self.read for o in node.output[1:]):
            del node.output[1:]

    def _batchnorm(self, node: onnx.NodeProto) -> None:
        found = _del_attrs(node, "spatial", "consumed_inputs", "is_test", "momentum", "training_mode")
        if found.get("spatial", 1) != 1:
            raise self._unsupported(node, "BatchNormalization with spatial=0 is not supported")
        if found.get("training_mode", 0) != 0:
            raise self._unsupported(node, "BatchNormalization in training mode is not supported (inference only)")
        if any(o in self.read for o in node.output[1:]):
            raise self._unsupported(node, "BatchNormalization running statistics outputs are not supported")
        del node.output[1:]

    def _legacy_softmax(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """Before opset 13 these ops flattened the input to 2-D at ``axis``: Flatten → op(-1) → Reshape back."""
        axis = _del_attrs(node, "axis").get("axis", 1)
        x, y = node.input[0], node.output[0]
        flat, shape, out2d = (self._fresh(f"{node.name}/{s}") for s in ("flat", "shape", "out2d"))
        return [
            helper.make_node("Flatten", [x], [flat], name=f"{node.name}/flatten", axis=axis),
            helper.make_node(node.op_type, [flat], [out2d], name=node.name, axis=-1),
            helper.make_node("Shape", [x], [shape], name=f"{node.name}/shape"),
            helper.make_node("Reshape", [out2d, shape], [y], name=f"{node.name}/reshape"),
        ]


def _fix_input_shapes(graph: onnx.GraphProto, input_shapes: dict[str, tuple[int, ...]]) -> None:
    """Make every graph input's shape concrete: ``input_shapes`` first, then batch dim 1; else fail."""
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    unknown = set(input_shapes) - {i.name for i in inputs}
    if unknown:
        raise CompileError(
            f"--input-shape names {sorted(unknown)}, but the model's inputs are {[i.name for i in inputs]}"
        )
    for value in inputs:
        given = input_shapes.get(value.name)
        if not value.type.tensor_type.HasField("shape"):
            if given is None:
                raise CompileError(
                    f"input {value.name!r} has no shape in the model; give it with "
                    f"--input-shape {value.name}=1x3xHxW (input_shapes in Python)"
                )
            value.type.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension() for _ in given)
        dims = value.type.tensor_type.shape.dim
        if given is not None:
            given = tuple(int(d) for d in given)
            if len(given) != len(dims):
                raise CompileError(f"input {value.name!r} has rank {len(dims)}, but --input-shape gives {given}")
            for i, (d, g) in enumerate(zip(dims, given)):
                if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != g:
                    raise CompileError(
                        f"input {value.name!r} has dimension {i} = {d.dim_value} in the model, "
                        f"but --input-shape gives {g}"
                    )
        else:
            given = tuple(_default_dim(value.name, i, d, dims) for i, d in enumerate(dims))
        for d, g in zip(dims, given):
            d.Clear()
            d.dim_value = g
    # Stale symbolic shapes elsewhere would only conflict with the now-concrete ones.
    del graph.value_info[:]
    for out in graph.output:
        out.type.tensor_type.ClearField("shape")


def _default_dim(name: str, index: int, dim: Any, dims: Any) -> int:
    """A static dimension as is, a symbolic batch dimension as 1; any other symbolic one is an error."""
    if dim.HasField("dim_value") and dim.dim_value > 0:
        return int(dim.dim_value)
    if index == 0:
        return 1
    example = "x".join(
        "1" if i == 0 else str(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or f"D{i}")
        for i, d in enumerate(dims)
    )
    raise CompileError(
        f"input {name!r} has an unresolved dimension {index} ({dim.dim_param or '?'!r}); fix it "
        f"with --input-shape {name}={example} (numbers for the names; input_shapes= in Python)"
    )


def _infer_onnx_shapes(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Concrete shapes onnx's own inference finds; the shape_inference pass computes what it misses."""
    try:
        inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # inference is an optimisation here; the evaluating pass is exact without it
        return {}
    g = inferred.graph
    found: dict[str, TensorInfo] = {}
    for v in (*g.input, *g.value_info, *g.output):
        info = _tensor_info(v)
        if info is not None:
            found[v.name] = info
    return found


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo | None:
    t = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not t.elem_type or not t.HasField("shape"):
        return None
    if not all(d.HasField("dim_value") for d in t.shape.dim):
        return None
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name
    return TensorInfo(value.name, tuple(int(d.dim_value) for d in t.shape.dim), dtype)


def _to_ir(graph: onnx.GraphProto, inferred: dict[str, TensorInfo], opset: int) -> Graph:
    constants: dict[str, np.ndarray] = {}
    for t in graph.initializer:
        arr = numpy_helper.to_array(t).copy()
        arr.setflags(write=False)
        constants[t.name] = arr
    inputs = [i.name for i in graph.input if i.name not in constants]
    tensors = {name: info for name, info in inferred.items() if name not in constants}
    for name, arr in constants.items():
        tensors[name] = TensorInfo(name, tuple(arr.shape), arr.dtype.name)
    for value in graph.input:
        if value.name in inputs:
            info = _tensor_info(value)
            if info is None:
                raise CompileError(f"input {value.name!r} is not a tensor with a known element type")
            tensors[value.name] = info
    nodes = []
    for proto in graph.node:
        node = Node(proto.name, proto.op_type, list(proto.input), list(proto.output), _attrs(proto, opset))
        if node.op not in OPS and node.op not in REWRITTEN_OPS:
            raise UnsupportedOpError(node.op, node.name, opset, "edgeinfer has no implementation of this op")
        if node.op in ("Conv", "ConvTranspose") or node.op in POOL_OPS:
            _resolve_window(node, tensors, constants)
        nodes.append(node)
    return Graph(
        nodes=nodes,
        inputs=inputs,
        outputs=[o.name for o in graph.output],
        tensors=tensors,
        constants=constants,
        metadata={"opset": opset},
    )


def _attrs(node: onnx.NodeProto, opset: int) -> dict[str, Any]:
    """Attributes as JSON values; tensor attributes as numpy arrays."""
    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            raise UnsupportedOpError(
                node.op_type, node.name, opset, f"attribute {a.name!r} holds a subgraph; control flow is not supported"
            )
        if a.type == onnx.AttributeProto.TENSOR:
            out[a.name] = numpy_helper.to_array(a.t).copy()
            continue
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list):
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        out[a.name] = value
    return out


def _resolve_window(node: Node, tensors: dict[str, TensorInfo], constants: dict[str, np.ndarray]) -> None:
    """Fill ``kernel_shape`` from the weights and turn ``auto_pad`` into explicit ``pads``."""
    if node.op in ("Conv", "ConvTranspose") and "kernel_shape" not in node.attrs:
        w = constants[node.inputs[1]].shape if node.inputs[1] in constants else None
        if w is None and node.inputs[1] in tensors:
            w = tensors[node.inputs[1]].shape
        if w is None:
            raise CompileError(
                f"{node.op} node {node.name!r}: cannot tell the kernel shape (weights "
                f"{node.inputs[1]!r} have no known shape)"
            )
        node.attrs["kernel_shape"] = [int(d) for d in w[2:]]
    auto_pad = node.attrs.pop("auto_pad", "NOTSET")
    kernel = node.attrs["kernel_shape"]
    rank = len(kernel)
    if node.op == "ConvTranspose" and "output_shape" in node.attrs:
        _resolve_output_shape(node, tensors, auto_pad)
        return
    if auto_pad == "NOTSET":
        return
    if auto_pad == "VALID":
        node.attrs["pads"] = [0] * (2 * rank)
        return
    if node.inputs[0] not in tensors:
        raise CompileError(f"{node.op} node {node.name!r}: auto_pad={auto_pad} needs the input shape, which is unknown")
    spatial = tensors[node.inputs[0]].shape[2:]
    strides = node.attrs.get("strides", [1] * rank)
    dilations = node.attrs.get("dilations", [1] * rank)
    begins, ends = [], []
    for i in range(rank):
        extent = (kernel[i] - 1) * dilations[i] + 1
        if node.op == "ConvTranspose":
            out_pad = node.attrs.get("output_padding", [0] * rank)[i]
            total = strides[i] * (spatial[i] - 1) + out_pad + extent - spatial[i] * strides[i]
            small, large = total // 2, total - total // 2
            begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        else:
            out = math.ceil(spatial[i] / strides[i])
            total = max((out - 1) * strides[i] + extent - spatial[i], 0)
            small, large = total // 2, total - total // 2
            begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        begins.append(begin)
        ends.append(end)
    node.attrs["pads"] = begins + ends


def _resolve_output_shape(node: Node, tensors: dict[str, TensorInfo], auto_pad: str) -> None:
    """ConvTranspose ``output_shape`` becomes explicit ``pads`` plus ``output_padding`` (extra rows at the end)."""
    if node.inputs[0] not in tensors:
        raise CompileError(f"ConvTranspose node {node.name!r}: output_shape needs the input shape, which is unknown")
    spatial = tensors[node.inputs[0]].shape[2:]
    rank = len(spatial)
    wanted = [int(v) for v in node.attrs.pop("output_shape")][-rank:]
    strides = node.attrs.get("strides", [1] * rank)
    dilations = node.attrs.get("dilations", [1] * rank)
    out_pad = list(node.attrs.get("output_padding", [0] * rank))
    begins, ends = [], []
    for i in range(rank):
        extent = (node.attrs["kernel_shape"][i] - 1) * dilations[i] + 1
        total = strides[i] * (spatial[i] - 1) + out_pad[i] + extent - wanted[i]
        small, large = total // 2, total - total // 2
        begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        if begin < 0:
            raise UnsupportedOpError(node.op, node.name, 17, f"output_shape {wanted} needs padding before the data")
        if end < 0:
            out_pad[i] -= end
            end = 0
        begins.append(begin)
        ends.append(end)
    node.attrs["pads"] = begins + ends
    node.attrs["output_padding"] = out_pad
