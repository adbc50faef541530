"""``edgecls.adapters.tflite_reader``: a ``.tflite`` read with ``struct`` agrees with LiteRT's own object API, and
``edgecls info`` reads one where LiteRT's ``tools`` package is missing (LiteRT 1.x, ``tflite-runtime``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecls.adapters.tflite_graph import TFLiteGraph
from edgecls.adapters.tflite_reader import BUILTIN_OPERATORS, TENSOR_TYPES
from edgecls.base.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]


def test_the_enum_tables_are_the_installed_schemas():
    """Each name is the one LiteRT's generated schema gives its value (a newer schema may add values after ours)."""
    from ai_edge_litert import schema_py_generated as schema

    operators = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    types = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    assert all(operators.get(code, name) == name for code, name in enumerate(BUILTIN_OPERATORS))
    assert all(types.get(code, name) == name for code, name in enumerate(TENSOR_TYPES))
    assert len(BUILTIN_OPERATORS) >= 200 and BUILTIN_OPERATORS[3] == "CONV_2D" and TENSOR_TYPES[9] == "INT8"


@pytest.fixture(scope="module")
def tflite_models(digits_run, digits_quantized) -> list[Path]:
    """FP32 (exported), FP16 and full-integer INT8 of the digits cnn, as edgecls writes them (made once a session)."""
    return digits_quantized.tflite_files(digits_run)


def test_struct_reading_equals_litert_object_api(tflite_models):
    from ai_edge_litert.tools import flatbuffer_utils

    for path in tflite_models:
        graph = TFLiteGraph.read(path)
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
        subgraph = model.subgraphs[0]
        expected_ops = [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in subgraph.operators]
        assert [op.op_type for op in graph.ops] == expected_ops, path.name
        assert [[t.index for t in op.inputs] for op in graph.ops] == [
            [i for i in op.inputs if i >= 0] for op in subgraph.operators
        ]
        for tensor, stored in zip(graph.tensors, subgraph.tensors, strict=True):
            quantization = stored.quantization
            scale = quantization.scale if quantization is not None and quantization.scale is not None else ()
            zero_point = (
                quantization.zeroPoint if quantization is not None and quantization.zeroPoint is not None else ()
            )
            buffer = model.buffers[stored.buffer]
            assert tensor.name == stored.name.decode() and tensor.dtype == flatbuffer_utils.type_to_name(stored.type)
            assert tensor.shape == tuple(stored.shape) and tensor.scale == tuple(float(s) for s in scale)
            assert tensor.zero_point == tuple(int(z) for z in zero_point)
            assert tensor.constant == (buffer.data is not None and len(buffer.data) > 0)
    int8 = TFLiteGraph.read(tflite_models[-1])
    assert int8.float_ops() == [] and len(int8.integer_ops()) == len(int8.ops)  # the cnn is integer-only


def test_an_edit_round_trips_through_litert(tflite_models):
    graph = TFLiteGraph.read(tflite_models[0])
    assert graph.to_bytes() == tflite_models[0].read_bytes()  # nothing edited: the bytes as read
    graph.set_metadata("probe", b"hello")
    from edgecls.runtime.metadata import tflite_metadata

    edited = graph.to_bytes()
    assert tflite_metadata(edited)["probe"] == b"hello"
    assert [op.op_type for op in TFLiteGraph.from_bytes(edited).ops] == [op.op_type for op in graph.ops]


# Blocks what LiteRT 1.x and tflite-runtime lack (ai_edge_litert.tools, the generated schema) and TensorFlow.
NO_TOOLS = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith(("ai_edge_litert.tools", "ai_edge_litert.schema_py_generated", "tensorflow", "flatbuffers")):
            raise ImportError(f"No module named {name!r} (blocked)")
sys.meta_path.insert(0, Block())
from edgecls.evaluate.info import inspect_artifact
infos = [inspect_artifact(path) for path in sys.argv[1:]]
print(json.dumps([{"ops": info.op_counts, "params": info.params, "macs": info.macs, "labels": info.labels,
                   "integer": info.integer_ops, "float": len(info.float_ops)} for info in infos]))
"""


def test_info_needs_no_litert_tools(tflite_models):
    """``edgecls info``'s reading of all three kinds in one interpreter where the tools cannot be imported (a module
    blocked stays blocked for each file, so one process proves it for all three)."""
    from edgecls.evaluate.info import inspect_artifact

    completed = subprocess.run(
        [sys.executable, "-c", NO_TOOLS, *map(str, tflite_models)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    for path, blocked in zip(tflite_models, json.loads(completed.stdout), strict=True):
        here = inspect_artifact(path)
        assert blocked == {
            "ops": here.op_counts,
            "params": here.params,
            "macs": here.macs,
            "labels": here.labels,
            "integer": here.integer_ops,
            "float": len(here.float_ops),
        }, path.name
        assert here.macs and here.labels


@pytest.mark.parametrize("data", [b"", b"TFL3", b"\x10\x00\x00\x00TFL3" + b"\x00" * 8, b"\x1c\x00\x00\x00XYZW" * 4])
def test_truncated_or_foreign_bytes_are_a_model_error(data):
    with pytest.raises(ModelError, match="not a valid TFLite model"):
        TFLiteGraph.from_bytes(data, source="x.tflite")


def test_a_cut_model_is_a_model_error(tflite_models):
    data = tflite_models[0].read_bytes()
    with pytest.raises(ModelError, match="x.tflite: not a valid TFLite model"):
        TFLiteGraph.from_bytes(data[: len(data) // 3], source="x.tflite")
