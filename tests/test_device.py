"""The device side: board and state readers on recorded boards, TensorRT options and their wiring.

``tests/data/device/<board>/`` holds what a Raspberry Pi 4, a Pi 5, a Jetson Nano
and a Jetson Orin Nano show: ``proc/device-tree/model`` (NUL-terminated), the
thermal zones, cpufreq and devfreq files, ``etc/nv_tegra_release``, and under
``commands/`` the output of ``vcgencmd``/``nvpmodel`` (argv joined by ``_``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecls.base.errors import ConfigError
from edgecls.runtime import tensorrt
from edgecls.runtime.device import (
    MachineInfo,
    machine_info,
    placement,
    read_board,
    read_device_state,
)
from edgecls.runtime.engines import OnnxEngine, load_engine
from edgecls.runtime.targets import get_target

DEVICE_DATA = Path(__file__).parent / "data" / "device"
BOARDS = ("rpi4", "rpi5", "jetson-nano", "jetson-orin-nano")


def recorded_runner(board: str, calls: list[list[str]]):
    def run(argv: list[str]) -> str | None:
        calls.append(argv)
        recorded = DEVICE_DATA / board / "commands" / ("_".join(argv) + ".txt")
        return recorded.read_text() if recorded.is_file() else None

    return run


def board_machine(board: str) -> MachineInfo:
    return MachineInfo(board, "aarch64", read_board(root=DEVICE_DATA / board), "Linux", "3.11", 4)


# --- board and device state, per recorded board ---------------------------------


def test_board_names_lose_the_device_tree_nul():
    names = {board: read_board(root=DEVICE_DATA / board) for board in BOARDS}
    assert names == {
        "rpi4": "Raspberry Pi 4 Model B Rev 1.4",
        "rpi5": "Raspberry Pi 5 Model B Rev 1.0",
        "jetson-nano": "NVIDIA Jetson Nano Developer Kit",
        "jetson-orin-nano": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
    }
    assert (DEVICE_DATA / "rpi5/proc/device-tree/model").read_bytes().endswith(b"\x00")


def test_raspberry_pi_4_state():
    calls: list[list[str]] = []
    state = read_device_state(root=DEVICE_DATA / "rpi4", run=recorded_runner("rpi4", calls))
    assert state["kind"] == "raspberry-pi" and state["governor"] == "ondemand"
    assert (state["cpu_mhz"], state["cpu_min_mhz"], state["cpu_max_mhz"]) == (1800, 600, 1800)
    assert state["soc_temp_c"] == pytest.approx(54.53) and state["firmware_temp_c"] == pytest.approx(54.0)
    assert state["throttle_flags"]["parsed"] and state["throttled"] is False
    assert sorted(calls) == [["vcgencmd", "get_throttled"], ["vcgencmd", "measure_temp"]]


def test_raspberry_pi_5_state_tells_now_from_since_boot():
    calls: list[list[str]] = []
    state = read_device_state(root=DEVICE_DATA / "rpi5", run=recorded_runner("rpi5", calls))
    flags = state["throttle_flags"]
    assert state["kind"] == "raspberry-pi" and state["cpu_max_mhz"] == 2400
    # 0x80000: the soft temperature limit was hit since boot, nothing is capped now.
    assert flags["soft_temperature_limit_since_boot"] and not flags["soft_temperature_limit_now"]
    assert state["throttled"] is False
    assert state["soc_temp_c"] == pytest.approx(61.85) and state["firmware_temp_c"] == pytest.approx(61.7)
    assert ["nvpmodel", "-q"] not in calls


def test_raspberry_pi_temperature_from_the_firmware_without_thermal_zones(tmp_path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    state = read_device_state(root=tmp_path, run=recorded_runner("rpi5", []))
    assert "temperatures_c" not in state and state["soc_temp_c"] == pytest.approx(61.7)


def test_jetson_nano_state_ignores_the_fixed_pmic_zone():
    calls: list[list[str]] = []
    state = read_device_state(root=DEVICE_DATA / "jetson-nano", run=recorded_runner("jetson-nano", calls))
    assert state["kind"] == "jetson" and state["power_mode"] == {"name": "MAXN", "id": 0}
    assert state["temperatures_c"]["PMIC-Die"] == 100.0  # recorded as the board shows it ...
    assert state["soc_temp_c"] == pytest.approx(41.0)  # ... but no sensor: not the SoC's temperature
    assert state["clocks_locked"] is False  # jetson_clocks not run: CPUs may idle at 102 MHz
    assert state["l4t"] == "R32.7.1" and state["governor"] == "schedutil"
    assert all(argv[0] != "vcgencmd" for argv in calls)


def test_jetson_orin_nano_state_ignores_disabled_zones():
    state = read_device_state(root=DEVICE_DATA / "jetson-orin-nano", run=recorded_runner("jetson-orin-nano", []))
    assert state["power_mode"] == {"name": "MAXN_SUPER", "id": 2}
    assert state["temperatures_c"]["cv0-thermal"] == -256.0
    assert state["soc_temp_c"] == pytest.approx(48.0)
    assert state["clocks_locked"] is True and state["l4t"] == "R36.4.3"
    assert state["cpu_mhz"] == pytest.approx(1728.0) and state["throttled"] is False


def test_state_survives_missing_commands():
    state = read_device_state(root=DEVICE_DATA / "jetson-nano", run=lambda argv: None)
    assert "power_mode" not in state and state["soc_temp_c"] == pytest.approx(41.0)


# --- where a result was measured ------------------------------------------------


@pytest.mark.parametrize("board", BOARDS)
def test_each_board_is_measured_on_for_its_own_target(board):
    machine = board_machine(board)
    where = placement(get_target(board), machine)
    assert where.on_device and where.label == f"measured on {machine.board}" and where.warning == ""


@pytest.mark.parametrize("board", BOARDS)
def test_each_board_warns_for_every_other_target(board):
    machine = board_machine(board)
    for other in BOARDS:
        if other == board:
            continue
        where = placement(get_target(other), machine)
        assert not where.on_device and where.label == f"aarch64 host with {other} settings"
        assert f"this board is a {machine.board}" in where.warning


def test_mismatch_words():
    where = placement(get_target("rpi5"), board_machine("rpi4"))
    assert where.to_dict() == {
        "on_device": False,
        "label": "aarch64 host with rpi5 settings",
        "warning": "target rpi5 is a Raspberry Pi 5, but this board is a Raspberry Pi 4 Model B Rev 1.4: "
        "the figures are this board's, not a Raspberry Pi 5's",
    }


def test_a_pc_has_target_settings_and_no_warning():
    pc = MachineInfo("vm", "x86_64", "", "Linux", "3.11", 2)
    assert placement(get_target("rpi5"), pc).to_dict() == {
        "on_device": False,
        "label": "x86_64 host with rpi5 settings",
        "warning": "",
    }
    assert placement(get_target("host"), pc).label == "this x86_64 host (vm)"


def test_a_32_bit_system_on_the_board_is_on_device_with_a_warning():
    machine = MachineInfo("pi", "armv7l", read_board(root=DEVICE_DATA / "rpi4"), "Linux", "3.11", 4)
    where = placement(get_target("rpi4"), machine)
    assert where.on_device and "armv7l" in where.warning and "aarch64" in where.warning


def test_machine_info_reads_the_board_from_the_root():
    assert machine_info(root=DEVICE_DATA / "jetson-nano").board == "NVIDIA Jetson Nano Developer Kit"


# --- TensorRT provider options --------------------------------------------------


def test_tensorrt_fp32():
    options = tensorrt.tensorrt_options(Path("/models/m.onnx"), "fp32", has_qdq=False)
    assert options == {
        "device_id": "0",
        "trt_fp16_enable": "False",
        "trt_int8_enable": "False",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": "/models/m.onnx.trt-cache",
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": "/models/m.onnx.trt-cache",
    }


def test_tensorrt_fp16():
    options = tensorrt.tensorrt_options(Path("m.onnx"), "fp16", has_qdq=False)
    assert (options["trt_fp16_enable"], options["trt_int8_enable"]) == ("True", "False")


def test_tensorrt_int8_for_a_qdq_graph():
    options = tensorrt.tensorrt_options(Path("m_int8.onnx"), "int8", has_qdq=True)
    assert (options["trt_fp16_enable"], options["trt_int8_enable"]) == ("True", "True")
    # Q/DQ nodes need the INT8 flag whatever the wish: TensorRT refuses to build them without it.
    fp32_wish = tensorrt.tensorrt_options(Path("m_int8.onnx"), "fp32", has_qdq=True)
    assert (fp32_wish["trt_fp16_enable"], fp32_wish["trt_int8_enable"]) == ("False", "True")


def test_tensorrt_int8_wish_for_a_float_graph_builds_fp16():
    options = tensorrt.tensorrt_options(Path("m.onnx"), "int8", has_qdq=False)
    assert (options["trt_fp16_enable"], options["trt_int8_enable"]) == ("True", "False")


def test_tensorrt_cache_beside_the_model(tmp_path):
    model = tmp_path / "export" / "model_fp32.onnx"
    assert tensorrt.cache_dir_for(model) == tmp_path / "export" / "model_fp32.onnx.trt-cache"
    options = tensorrt.tensorrt_options(model, "fp16", has_qdq=False)
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(tensorrt.cache_dir_for(model))


def test_tensorrt_unknown_precision():
    with pytest.raises(ConfigError, match="bf16"):
        tensorrt.tensorrt_options(Path("m.onnx"), "bf16", has_qdq=False)


def test_provider_list_keeps_order_and_drops_the_unavailable():
    requested = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    cuda_only = tensorrt.provider_list(
        requested, ["CUDAExecutionProvider", "CPUExecutionProvider"], Path("m.onnx"), precision="fp16", has_qdq=False
    )
    assert cuda_only == [("CUDAExecutionProvider", tensorrt.cuda_options()), "CPUExecutionProvider"]
    assert tensorrt.provider_list(
        requested, ["AzureExecutionProvider"], Path("m.onnx"), precision="fp32", has_qdq=False
    ) == ["CPUExecutionProvider"]
    assert tensorrt.provider_list((), ["CPUExecutionProvider"], Path("m.onnx"), precision="fp32", has_qdq=False) == [
        "CPUExecutionProvider"
    ]


# --- wiring into OnnxEngine, with a fake TensorRT-enabled onnxruntime -------------


def _write_onnx(path: Path, *, qdq: bool, weight: float = 1.0) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    weights = helper.make_tensor("w", TensorProto.FLOAT, [64, 10], np.full(640, weight / 64, np.float32).tolist())
    nodes = [helper.make_node("Flatten", ["pixels"], ["flat"], name="QuantizeLinear")]
    source = "flat"
    if qdq:
        scale = helper.make_tensor("s", TensorProto.FLOAT, [], [1.0])
        zero = helper.make_tensor("z", TensorProto.INT8, [], [0])
        nodes += [
            helper.make_node("QuantizeLinear", ["flat", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
        ]
        initializers = [weights, scale, zero]
        source = "dq"
    else:
        initializers = [weights]
    nodes += [
        helper.make_node("MatMul", [source, "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 8, 8, 1])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 10])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """ONNX Runtime as a Jetson's ``onnxruntime-gpu`` shows it; sessions really run on the CPU."""
    onnxruntime = pytest.importorskip("onnxruntime")
    real_session = onnxruntime.InferenceSession
    received: list[dict] = []

    def session(path, sess_options=None, providers=None, **kwargs):
        received.append({"path": path, "providers": providers})
        return real_session(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(available))
    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    return received


JETSON_PROVIDERS = get_target("jetson-orin-nano").providers


def test_qdq_graphs_are_found_without_onnx(tmp_path):
    assert tensorrt.graph_has_qdq(_write_onnx(tmp_path / "int8.onnx", qdq=True))
    assert not tensorrt.graph_has_qdq(_write_onnx(tmp_path / "fp32.onnx", qdq=False))  # a node *named* like one
    assert not tensorrt.graph_has_qdq(tmp_path / "missing.onnx")


def test_onnx_engine_passes_tensorrt_options(tmp_path, fake_tensorrt):
    model = _write_onnx(tmp_path / "model_int8.onnx", qdq=True)
    engine = load_engine(model, providers=JETSON_PROVIDERS, precision="int8")
    (call,) = fake_tensorrt
    assert call["providers"] == [
        ("TensorrtExecutionProvider", tensorrt.tensorrt_options(model, "int8", has_qdq=True)),
        ("CUDAExecutionProvider", tensorrt.cuda_options()),
        "CPUExecutionProvider",
    ]
    assert dict(call["providers"][0][1])["trt_int8_enable"] == "True"
    assert engine.cache_hit is False and engine.load_seconds > 0
    assert (tmp_path / "model_int8.onnx.trt-cache" / tensorrt.FINGERPRINT_FILE).is_file()
    scores = engine.run(np.zeros((1, 8, 8, 1), np.float32))
    assert scores.shape == (1, 10)


def test_onnx_engine_precision_defaults_to_the_graphs(tmp_path, fake_tensorrt):
    load_engine(_write_onnx(tmp_path / "int8.onnx", qdq=True), providers=JETSON_PROVIDERS)
    load_engine(_write_onnx(tmp_path / "fp32.onnx", qdq=False), providers=JETSON_PROVIDERS)
    load_engine(tmp_path / "fp32.onnx", providers=JETSON_PROVIDERS, precision="fp16")
    flags = [(c["providers"][0][1]["trt_fp16_enable"], c["providers"][0][1]["trt_int8_enable"]) for c in fake_tensorrt]
    assert flags == [("True", "True"), ("False", "False"), ("True", "False")]  # a Q/DQ graph: int8, float layers fp16


def test_second_start_is_a_cache_hit_and_a_new_file_is_not(tmp_path, fake_tensorrt):
    model = _write_onnx(tmp_path / "model.onnx", qdq=False)
    assert OnnxEngine(model, providers=JETSON_PROVIDERS).cache_hit is False
    cache = tensorrt.cache_dir_for(model)
    # What ONNX Runtime leaves after building (the fake session builds nothing).
    engine_file = cache / "TensorrtExecutionProvider_TRTKernel_graph_g_1234_0_0_sm87.engine"
    engine_file.write_bytes(b"serialised engine")
    (cache / "TensorrtExecutionProvider_cache_sm87.timing").write_bytes(b"timings")
    assert OnnxEngine(model, providers=JETSON_PROVIDERS).cache_hit is True
    _write_onnx(model, qdq=False, weight=2.0)  # re-exported, same topology and name: other weights
    assert OnnxEngine(model, providers=JETSON_PROVIDERS).cache_hit is False
    assert not engine_file.exists() and (cache / "TensorrtExecutionProvider_cache_sm87.timing").exists()


def test_an_unwritable_cache_switches_caching_off(tmp_path, fake_tensorrt):
    model = _write_onnx(tmp_path / "model.onnx", qdq=False)
    tensorrt.cache_dir_for(model).write_text("a file where the cache folder would go")
    engine = OnnxEngine(model, providers=JETSON_PROVIDERS)
    options = fake_tensorrt[0]["providers"][0][1]
    assert engine.cache_hit is None
    assert options["trt_engine_cache_enable"] == options["trt_timing_cache_enable"] == "False"
    assert "trt_engine_cache_path" not in options


def test_cpu_only_onnx_gets_plain_names_and_no_cache(tmp_path, fake_tensorrt):
    model = _write_onnx(tmp_path / "model.onnx", qdq=False)
    engine = OnnxEngine(model, providers=("CPUExecutionProvider",))
    assert fake_tensorrt[0]["providers"] == ["CPUExecutionProvider"]
    assert engine.cache_hit is None and not tensorrt.cache_dir_for(model).exists()
    assert isinstance(engine.load_seconds, float) and engine.load_seconds > 0
