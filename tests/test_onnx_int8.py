"""ONNX Runtime's INT8 kernel path, chosen per CPU and model (edgecls.runtime.onnx_int8): correct first, then faster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecls.runtime import onnx_int8
from edgecls.runtime.engines import OnnxEngine
from edgecls.runtime.onnx_int8 import Cpu, choose_kernels

AVX2_EPYC = Cpu("x86_64", "AMD EPYC", frozenset({"avx2", "fma", "sse4_2"}))
VNNI_XEON = Cpu("x86_64", "Intel Xeon", frozenset({"avx2", "avx512f", "avx512_vnni", "amx_int8"}))
ALDER_LAKE = Cpu("x86_64", "12th Gen Intel Core", frozenset({"avx2", "avx_vnni"}))
PI5 = Cpu("aarch64", "Cortex-A76", frozenset({"fp", "asimd", "asimddp"}))


def timings(signed_ms: float, unsigned_ms: float):
    calls = []

    def measure() -> tuple[float, float]:
        calls.append(1)
        return signed_ms, unsigned_ms

    measure.calls = calls
    return measure


@pytest.mark.parametrize("signed_ms, unsigned_ms", [(1.0, 9.0), (9.0, 1.0)])
def test_without_vnni_full_range_weights_run_signed_whatever_the_timing_says(signed_ms, unsigned_ms):
    measure = timings(signed_ms, unsigned_ms)
    choice = choose_kernels(AVX2_EPYC, full_range_weights=True, measure=measure)
    assert choice.kernels == "signed" and "saturate" in choice.reason
    assert measure.calls == []  # correctness is not weighed against speed


@pytest.mark.parametrize(
    "cpu, full_range", [(AVX2_EPYC, False), (VNNI_XEON, True), (VNNI_XEON, False), (ALDER_LAKE, True)]
)
def test_where_both_paths_are_correct_the_faster_is_taken(cpu, full_range):
    slow_signed = choose_kernels(cpu, full_range_weights=full_range, measure=timings(3.57, 0.37))
    fast_signed = choose_kernels(cpu, full_range_weights=full_range, measure=timings(0.49, 0.70))
    assert (slow_signed.kernels, fast_signed.kernels) == ("unsigned", "signed")
    assert (slow_signed.signed_ms, slow_signed.unsigned_ms) == (3.57, 0.37)
    assert "3.57 ms signed vs 0.37 ms unsigned" in slow_signed.reason


@pytest.mark.parametrize("full_range", [True, False])
def test_arm_keeps_onnx_runtimes_own_default(full_range):
    measure = timings(1.0, 0.1)
    choice = choose_kernels(PI5, full_range_weights=full_range, measure=measure)
    assert choice.kernels == "default" and measure.calls == []


# -- the weights as the file holds them --------------------------------------------------------------------------


def _qdq_matmul(path: Path, weight: int, *, raw: bool = True) -> Path:
    """x (1, 64) → INT8 Q/DQ → MatMul by INT8 weights ±``weight`` in alternating columns → INT8 Q/DQ."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    levels = np.full((64, 4), weight, np.int8)
    levels[:, 1::2] = max(-weight, -128) if weight > 0 else 127  # the other end of the range in alternate columns
    constants = {"w_scale": np.float32(0.01), "x_scale": np.float32(0.05), "y_scale": np.float32(20.0)}
    constants["zero"] = np.int8(0)
    initializers = [numpy_helper.from_array(np.asarray(value), name) for name, value in constants.items()]
    if raw:
        initializers.append(numpy_helper.from_array(levels, "w"))
    else:  # INT8 levels written as int32_data varints (what some exporters write)
        initializers.append(helper.make_tensor("w", TensorProto.INT8, levels.shape, levels.flatten().tolist()))
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "zero"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "zero"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "w_scale", "zero"], ["wf"]),
        helper.make_node("MatMul", ["xf", "wf"], ["y"]),
        helper.make_node("QuantizeLinear", ["y", "y_scale", "zero"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "y_scale", "zero"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _float_matmul(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((64, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["scores"])],
        "float",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("weight, full_range", [(127, True), (-128, True), (65, True), (64, False), (63, False)])
def test_the_weight_range_is_read_from_the_file(tmp_path, weight, full_range, raw):
    weights = onnx_int8.qdq_weights(_qdq_matmul(tmp_path / "m.onnx", weight, raw=raw))
    assert weights.quantized and weights.int8_weights == 1
    assert weights.max_abs == abs(weight) and weights.full_range is full_range


def test_a_float_graph_has_no_int8_weights(tmp_path):
    weights = onnx_int8.qdq_weights(_float_matmul(tmp_path / "f.onnx"))
    assert not weights.quantized and weights.int8_weights == 0


# -- the engine: the path it takes, said in its provider, cached -------------------------------------------------


@pytest.fixture
def fake_machine(monkeypatch, tmp_path):
    """A CPU and an interleaved timing of our choosing; the verdict cache in a fresh folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(onnx_int8.FORCE_VARIABLE, raising=False)
    state = {"cpu": AVX2_EPYC, "timing": (1.0, 2.0), "measured": 0}

    def time_interleaved(run_signed, run_unsigned):
        run_signed(), run_unsigned()  # both sessions really run
        state["measured"] += 1
        return state["timing"]

    monkeypatch.setattr(onnx_int8, "this_cpu", lambda: state["cpu"])
    monkeypatch.setattr(onnx_int8, "time_interleaved", time_interleaved)
    return state


def _signed_option(engine: OnnxEngine) -> str:
    """The session's ``session.qdqisint8allowed`` entry ("" where the runtime set none)."""
    try:
        return engine._session.get_session_options().get_session_config_entry("session.qdqisint8allowed")
    except Exception:  # onnxruntime raises its own type for an entry never set
        return ""


def test_the_engine_takes_the_signed_path_without_vnni_for_full_range_weights(tmp_path, fake_machine):
    fake_machine["timing"] = (9.0, 1.0)  # unsigned "faster": not asked, it would be wrong
    engine = OnnxEngine(_qdq_matmul(tmp_path / "qat.onnx", 127), threads=1)
    assert engine.int8_kernels.kernels == "signed" and fake_machine["measured"] == 0
    assert engine.provider == "CPUExecutionProvider (INT8 signed kernels)" and _signed_option(engine) == "1"


def test_the_engine_times_both_paths_where_both_are_correct_and_caches_the_verdict(tmp_path, fake_machine):
    path = _qdq_matmul(tmp_path / "ptq.onnx", 63)  # 7-bit weights: unsigned kernels cannot saturate
    fake_machine["timing"] = (3.57, 0.37)
    first = OnnxEngine(path, threads=1)
    assert first.int8_kernels.kernels == "unsigned" and _signed_option(first) == "0"
    assert first.provider == "CPUExecutionProvider (INT8 unsigned kernels)" and fake_machine["measured"] == 1
    fake_machine["timing"] = (0.1, 9.0)  # a second session reads the verdict, measures nothing
    again = OnnxEngine(path, threads=1)
    assert again.int8_kernels.kernels == "unsigned" and again.int8_kernels.reason.endswith("(cached)")
    assert fake_machine["measured"] == 1
    OnnxEngine(path, threads=2)  # another thread count is another verdict
    assert fake_machine["measured"] == 2
    fake_machine["cpu"] = VNNI_XEON  # another CPU too
    fake_machine["timing"] = (0.49, 0.70)
    assert OnnxEngine(path, threads=1).int8_kernels.kernels == "signed" and fake_machine["measured"] == 3


def test_the_engine_leaves_arm_and_float_graphs_to_onnx_runtime(tmp_path, fake_machine):
    fake_machine["cpu"] = PI5
    arm = OnnxEngine(_qdq_matmul(tmp_path / "qat.onnx", 127), threads=1)
    assert arm.int8_kernels.kernels == "default" and _signed_option(arm) == "" and fake_machine["measured"] == 0
    fake_machine["cpu"] = AVX2_EPYC
    plain = OnnxEngine(_float_matmul(tmp_path / "float.onnx"), threads=1)
    assert plain.int8_kernels is None and plain.provider == "CPUExecutionProvider" and _signed_option(plain) == ""


def test_a_forced_path_wins(tmp_path, fake_machine, monkeypatch):
    monkeypatch.setenv(onnx_int8.FORCE_VARIABLE, "unsigned")
    engine = OnnxEngine(_qdq_matmul(tmp_path / "ptq.onnx", 63), threads=1)
    assert engine.int8_kernels.kernels == "unsigned" and fake_machine["measured"] == 0


def _paths_the_runtime_may_choose_here() -> list[str]:
    """Every path ``choose_kernels`` can return for full 8-bit weights on this machine's CPU, whatever it measures."""
    cpu = onnx_int8.this_cpu()
    return sorted(
        {
            choose_kernels(cpu, full_range_weights=True, measure=lambda ms=ms: ms).kernels
            for ms in ((1.0, 2.0), (2.0, 1.0))
        }
    )


@pytest.mark.parametrize("weight", [127, 63])
def test_int8_onnx_computes_what_its_graph_says_on_every_path_the_runtime_may_choose(tmp_path, monkeypatch, weight):
    """A Q/DQ MatMul whose INT8 input and weights sit at the ends of their ranges (QAT's and TensorRT's full 8-bit
    weights) gives the exact product, 64 · 127 · weight steps rounded to the output's grid, on each INT8 path the
    runtime may take on this CPU; on an x86 CPU without VNNI ONNX Runtime's unsigned kernels returned 0 for all four
    (saturated UINT8 × INT8 pair sums), which is why the runtime never takes them there for such weights."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(onnx_int8.FORCE_VARIABLE, raising=False)
    path = _qdq_matmul(tmp_path / "qdq.onnx", weight)
    paths = _paths_the_runtime_may_choose_here()
    chosen = OnnxEngine(path, threads=1).int8_kernels.kernels  # what it takes here, measured
    assert chosen in paths
    for kernels in paths:
        if kernels != "default":
            monkeypatch.setenv(onnx_int8.FORCE_VARIABLE, kernels)
        engine = OnnxEngine(path, threads=1)
        assert engine.int8_kernels.kernels == kernels
        scores = engine.run(np.full((1, 64), 127 * 0.05, np.float32))
        exact = 64 * 127 * 0.05 * weight * 0.01
        expected = np.round(exact / 20.0) * 20.0 * np.array([1, -1, 1, -1])
        assert np.array_equal(scores[0], expected.astype(np.float32)), (kernels, scores, expected)
