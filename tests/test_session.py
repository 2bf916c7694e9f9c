"""Session API: inputs/outputs, validation errors that say expected vs got, devices."""

from __future__ import annotations

import numpy as np
import pytest

import edgeinfer
import edgeinfer.pipelines
from edgeinfer import errors
from edgeinfer.backends.base import Executable
from edgeinfer.errors import InputError, PipelineError
from edgeinfer.pack import write_pack


@pytest.fixture
def session(tiny, tmp_path) -> edgeinfer.Session:
    path = tmp_path / "tiny.pack"
    write_pack(tiny, path)
    return edgeinfer.Session(path, device="cpu")


def x_input() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32)


def test_inputs_outputs_described(session):
    assert [(s.name, s.shape, s.dtype) for s in session.inputs] == [("x", (1, 3, 4, 4), "float32")]
    assert [s.name for s in session.outputs] == ["y"]
    assert session.backend == "cpu"


def test_run_with_dict_and_with_array(session):
    x = x_input()
    expected = np.maximum(x, 0) + np.arange(3, dtype=np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(session.run({"x": x})["y"], expected)
    np.testing.assert_allclose(session.run(x)["y"], expected)


def test_wrong_name(session):
    with pytest.raises(ValueError, match=r"unknown input 'images'; expected inputs: x \[1x3x4x4\] float32"):
        session.run({"images": x_input()})


def test_missing_input(session):
    with pytest.raises(ValueError, match="missing input x"):
        session.run({})


def test_wrong_shape(session):
    with pytest.raises(ValueError, match=r"shape \[1, 3, 5, 4\]; expected \[1, 3, 4, 4\]"):
        session.run({"x": np.zeros((1, 3, 5, 4), np.float32)})


def test_wrong_dtype(session):
    with pytest.raises(ValueError, match="dtype float64; expected float32"):
        session.run({"x": np.zeros((1, 3, 4, 4), np.float64)})


def test_not_an_array(session):
    with pytest.raises(ValueError, match="must be a numpy array"):
        session.run({"x": [[1.0]]})


def test_image_on_pack_without_pipeline(session):
    with pytest.raises(ValueError, match="no image pipeline"):
        session.run(np.zeros((10, 10, 3), np.uint8))


def test_unknown_device(tiny, tmp_path):
    write_pack(tiny, tmp_path / "t.pack")
    with pytest.raises(edgeinfer.DeviceError, match="unknown backend 'tpu'"):
        edgeinfer.Session(tmp_path / "t.pack", device="tpu")


def test_env_var_selects_device(tiny, tmp_path, monkeypatch):
    write_pack(tiny, tmp_path / "t.pack")
    monkeypatch.setenv("EDGEINFER_DEVICE", "cpu")
    assert edgeinfer.Session(tmp_path / "t.pack").device == "cpu"


def test_explain_lists_every_node(session):
    rows = session.explain()
    assert [r["name"] for r in rows] == ["relu0", "add0"]
    assert all({"placement", "kernel", "config", "config_source"} <= set(r) for r in rows)


def test_session_uses_only_the_backend_interface(session):
    """The NumPy executable implements the interface; its defaults say: no device-side inputs or pre-processing."""
    executable = session._executable
    assert isinstance(executable, Executable)
    assert executable.device_input("x") is None
    assert executable.device_preprocessor({"input": "x"}) is None
    executable.close()  # nothing to free on the host: it still runs
    rows = session.profile({"x": x_input()}, repeat=1)
    assert {row["name"] for row in rows} >= {node.name for node in session.graph.nodes}
    with pytest.raises(InputError, match="no device-side inputs"):
        executable.run({}, filled_on_device=frozenset({"x"}))


def test_an_executable_must_implement_run_explain_and_profile():
    class RunsOnly(Executable):
        def run(self, feeds, filled_on_device=frozenset()):
            return {}

    with pytest.raises(TypeError, match="explain"):
        RunsOnly()


def test_every_error_class_is_an_edgeinfer_error():
    classes = [obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, Exception)]
    assert PipelineError in classes
    assert all(issubclass(cls, errors.EdgeInferError) for cls in classes)
    assert issubclass(PipelineError, ValueError)  # as before: callers catching ValueError still do
    with pytest.raises(PipelineError, match="unknown pipeline preset"):
        edgeinfer.pipelines.resolve_pipeline(preset="no-such-preset")
