"""An emulated CPU (qemu-user) is named in placement() and every report, its latency flagged and never plotted.

Recorded ``/proc/cpuinfo`` heads here; ``tests/test_box.py`` checks the same against a real qemu-user process.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgecls.bench.report import EMULATED_LEGEND, plot_latency, table_rows, to_markdown, write_fleet_reports
from edgecls.runtime.device import MachineInfo, cpuinfo_arch, detect_emulation, machine_info, placement
from edgecls.runtime.results import MeasureResult, MeasureRun
from edgecls.runtime.targets import get_target

# The head of /proc/cpuinfo on this kind of machine (x86_64 KVM guest), a Raspberry Pi 5 and a Pi OS 32-bit on a Pi 4.
X86_64 = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel name\t: Intel(R) Xeon(R) Processor\n"
X86_64 += "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat lm constant_tsc\n"
I686 = X86_64.replace(" lm ", " ")
PI5 = (
    "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\n\nRevision\t: d04170\n"
)
PI4_32 = "processor\t: 0\nmodel name\t: ARMv7 Processor rev 3 (v7l)\nFeatures\t: half thumb fastmult vfp edsp neon\n"
PI4_32 += "CPU implementer\t: 0x41\nCPU architecture: 7\nCPU part\t: 0xd08\n"


def _root(tmp_path: Path, cpuinfo: str) -> Path:
    (tmp_path / "proc").mkdir(parents=True, exist_ok=True)
    (tmp_path / "proc" / "cpuinfo").write_text(cpuinfo)
    return tmp_path


def test_cpuinfo_names_the_processor_it_describes():
    assert [cpuinfo_arch(text) for text in (X86_64, I686, PI5, PI4_32, "")] == ["x86_64", "i686", "aarch64", "arm", ""]


@pytest.mark.parametrize(
    "arch, cpuinfo, expected",
    [
        ("aarch64", X86_64, "aarch64 under emulation on an x86_64 host"),  # the Pi OS 64-bit box
        ("armv7l", X86_64, "armv7l under emulation on an x86_64 host"),  # the Pi OS 32-bit box
        ("x86_64", PI5, "x86_64 under emulation on an aarch64 host"),
        ("aarch64", PI5, ""),  # a Pi 5
        ("armv7l", PI5, ""),  # Pi OS 32-bit on a 64-bit kernel: ARM kernels, natively
        ("armv7l", PI4_32, ""),
        ("x86_64", X86_64, ""),
        ("riscv64", "processor\t: 0\nisa\t: rv64imafdc\n", ""),  # a cpuinfo of another kind: no verdict
    ],
)
def test_emulation_is_a_cpu_family_mismatch(tmp_path, arch, cpuinfo, expected):
    assert detect_emulation(arch, root=_root(tmp_path, cpuinfo)) == expected


def test_no_cpuinfo_is_no_verdict(tmp_path):
    assert detect_emulation("aarch64", root=tmp_path) == ""


def test_this_machine_is_not_emulated():
    assert machine_info().emulated == ""


def _machine(emulated: str, arch: str = "aarch64") -> MachineInfo:
    return MachineInfo("box", arch, "", "Linux 6.1", "3.11.2", 2, emulated)


def test_placement_says_emulated_and_that_latency_means_nothing():
    emulated = _machine("aarch64 under emulation on an x86_64 host")
    where = placement(get_target("rpi5"), emulated)
    assert not where.on_device
    assert where.label == "aarch64 under emulation on an x86_64 host with rpi5 settings, latency not meaningful"
    assert where.warning == "aarch64 under emulation on an x86_64 host: latency not meaningful"
    host = placement(get_target("host"), emulated)
    assert not host.on_device and host.label.startswith("aarch64 under emulation on an x86_64 host (box)")
    assert placement(get_target("rpi5"), _machine("")).label == "aarch64 host with rpi5 settings"


def _result(model: str, emulated: str) -> MeasureResult:
    stats = {"min": 1.0, "p50": 2.0, "p90": 2.5, "p99": 3.0, "mean": 2.0, "std": 0.5}
    document = {
        "model": model,
        "engine": "litert",
        "engine_version": "2.3.0",
        "provider": "cpu",
        "threads": 4,
        "precision": "int8",
        "input_dtype": "int8",
        "runs": 3,
        "warmup": 0,
        "load_ms": 1.0,
        "cold_start_ms": 1.0,
        "latency_ms": stats,
        "fps": 500.0,
        "e2e_ms": 2.0,
        "e2e_latency_ms": stats,
        "peak_rss_mb": 50.0,
        "baseline_rss_mb": 40.0,
        "size_bytes": 1000,
        "samples_ms": [1.0, 2.0, 3.0],
        "emulated": emulated,
        "notes": [f"{emulated}: latency not meaningful"] if emulated else [],
    }
    return MeasureResult.from_dict(document)


def test_reports_flag_emulated_latency_and_plot_none_of_it(tmp_path):
    emulated = "aarch64 under emulation on an x86_64 host"
    where = f"{emulated} with rpi5 settings, latency not meaningful"
    run = MeasureRun("rpi5", where, False, {"hostname": "box"}, {"runs": 3, "warmup": 0, "threads": 4}, [])
    run = dataclasses.replace(run, results=[_result("a.tflite", emulated)])
    (row,) = table_rows(run)
    assert row[5:11] == ["2.000*", "3.000*", "500.0*", "2.000*", "1.00*", "-"]
    assert row[-1] == f"{emulated}: latency not meaningful"
    markdown = to_markdown(run)
    assert EMULATED_LEGEND in markdown and f"measured on {where}" in markdown
    assert plot_latency(run, tmp_path / "latency.png") is None and not (tmp_path / "latency.png").exists()
    native = dataclasses.replace(run, results=[_result("b.tflite", "")])
    assert table_rows(native)[0][5] == "2.000" and EMULATED_LEGEND not in to_markdown(native)
    assert MeasureRun.from_dict(json.loads(json.dumps(run.to_dict()))).results[0].emulated == emulated


def test_a_fleet_plot_shows_only_the_devices_own_latency(tmp_path):
    pytest.importorskip("matplotlib")
    from edgecls.bench.fleet import DeviceOutcome

    emulated = "aarch64 under emulation on an x86_64 host"
    box = MeasureRun("rpi5", "box", False, {"hostname": "box"}, {}, [_result("m.tflite", emulated)])
    pc = MeasureRun("host", "pc", True, {"hostname": "pc"}, {}, [_result("m.tflite", "")])
    outcomes = [DeviceOutcome("pi@box", "rpi5", run=box), DeviceOutcome("me@pc", "host", run=pc)]
    paths = write_fleet_reports(outcomes, tmp_path)
    markdown = paths["markdown"].read_text()
    assert EMULATED_LEGEND in markdown and "| pi@box | rpi5 | m.tflite |" in markdown
    assert paths["plot"] is not None  # the PC's latency alone
    only_box = write_fleet_reports(outcomes[:1], tmp_path / "box")
    assert only_box["plot"] is None
