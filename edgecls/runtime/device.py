"""Where a benchmark ran, and the device state that skews latency.

Readers take the filesystem root and a command runner as arguments, so tests
feed them recorded ``/sys`` trees and command outputs:

- Raspberry Pi: ``vcgencmd get_throttled`` (under-voltage, frequency capping,
  throttling, soft temperature limit; now and since boot), SoC temperature
  from ``/sys/class/thermal``, CPU governor and clock from cpufreq;
- Jetson: the power mode from ``nvpmodel -q`` and whether clocks are locked
  (``jetson_clocks`` pins every CPU's and the GPU's minimum to its maximum);
- an emulated CPU (qemu-user running an aarch64 Pi OS on an x86_64 PC):
  ``/proc/cpuinfo`` then describes the host's processor, not the one this
  Python was built for; results are the ARM kernels' own, latency means nothing.

>>> machine_info().arch  # doctest: +SKIP
'x86_64'
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgecls.runtime.targets import Target

CommandRunner = Callable[[list[str]], "str | None"]

# vcgencmd get_throttled bits (Raspberry Pi firmware documentation).
THROTTLE_BITS = {
    0: "under_voltage",
    1: "arm_frequency_capped",
    2: "throttled",
    3: "soft_temperature_limit",
}
SINCE_BOOT_SHIFT = 16


@dataclass(frozen=True)
class MachineInfo:
    hostname: str
    arch: str
    board: str  # /proc/device-tree/model, "" on a PC
    system: str
    python: str
    cpu_count: int
    emulated: str = ""  # "aarch64 under emulation on an x86_64 host" (qemu-user); "" on the CPU itself

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine_info(*, root: Path = Path("/")) -> MachineInfo:
    return MachineInfo(
        hostname=socket.gethostname(),
        arch=platform.machine() or "unknown",
        board=read_board(root=root),
        system=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        cpu_count=os.cpu_count() or 1,
        emulated=detect_emulation(platform.machine(), root=root),
    )


EMULATED_LATENCY = "latency not meaningful"
_CPU_FAMILIES = {"x86": ("x86_64", "amd64", "i386", "i486", "i586", "i686"), "arm": ("aarch64", "arm64")}


def _family(arch: str) -> str:
    arch = arch.lower()
    if arch in _CPU_FAMILIES["x86"]:
        return "x86"
    return "arm" if arch in _CPU_FAMILIES["arm"] or arch.startswith("arm") else arch


def cpuinfo_arch(text: str) -> str:
    """The processor ``/proc/cpuinfo`` describes: ``x86_64``/``i686`` (``vendor_id``, ``flags``), ``aarch64``/``arm``
    (``CPU implementer``), "" when it names neither (another architecture: no verdict)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    if "vendor_id" in fields and "flags" in fields:
        return "x86_64" if "lm" in fields["flags"].split() else "i686"  # lm: long mode, a 64-bit CPU
    if "CPU implementer" in fields:
        return "aarch64" if fields.get("CPU architecture") == "8" else "arm"
    return ""


def detect_emulation(arch: str, *, root: Path = Path("/")) -> str:
    """``"aarch64 under emulation on an x86_64 host"`` when another CPU runs this process; "" otherwise.

    qemu-user translates an aarch64 (or armv7l) program on an x86_64 PC: ``uname -m`` answers the guest's
    architecture, but ``/proc/cpuinfo`` is the host kernel's description of the host's processor. A family
    mismatch (ARM against x86) is emulation; an armv7l userland on an aarch64 Pi is not.

    >>> detect_emulation("aarch64")  # doctest: +SKIP
    'aarch64 under emulation on an x86_64 host'
    """
    try:
        host = cpuinfo_arch((root / "proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return ""
    if not host or not arch or _family(host) == _family(arch):
        return ""
    return f"{arch} under emulation on an {host} host"


def read_board(*, root: Path = Path("/")) -> str:
    """The board name the device tree gives (Pi and Jetson both have one)."""
    try:
        return (root / "proc/device-tree/model").read_bytes().rstrip(b"\x00\n").decode("utf-8", "replace")
    except OSError:
        return ""


@dataclass(frozen=True)
class Placement:
    """Where a result was measured, against the target it was measured for."""

    on_device: bool  # ran on the target's own board
    label: str  # "measured on Raspberry Pi 5 Model B Rev 1.0" | "x86_64 host with rpi5 settings"
    warning: str = ""  # the board is another device than the target's, or runs another architecture

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def placement(target: Target, machine: MachineInfo) -> Placement:
    """Match the board this runs on (``machine.board``, from the device tree) against ``target.board``.

    A result is a device's only when it ran on that device; on another board
    (a Pi 4 for target rpi5) it is that board's, said in ``warning``. Under an
    emulated CPU nothing is on a device: the label says so, and that its latency
    is not meaningful.
    """
    if machine.emulated:
        note = f"{machine.emulated}: {EMULATED_LATENCY}"
        settings = f" ({machine.hostname})" if target.kind == "host" else f" with {target.name} settings"
        return Placement(False, f"{machine.emulated}{settings}, {EMULATED_LATENCY}", note)
    if target.kind == "host":
        return Placement(True, f"this {machine.arch} host ({machine.hostname})")
    if target.board and target.board in machine.board:
        warning = ""
        if target.arch not in (machine.arch, "any"):
            warning = (
                f"{machine.board} runs a {machine.arch} system, target {target.name} assumes {target.arch}: "
                "other runtime wheels and kernels, other latency"
            )
        return Placement(True, f"measured on {machine.board}", warning)
    host = f"{machine.arch} host with {target.name} settings"
    if machine.board:
        return Placement(
            False,
            host,
            (
                f"target {target.name} is a {target.board}, but this board is a {machine.board}: "
                f"the figures are this board's, not a {target.board}'s"
            ),
        )
    return Placement(False, host)


def describe_where(target: Target, machine: MachineInfo) -> tuple[bool, str]:
    """``(on_target, words)`` of ``placement``."""
    where = placement(target, machine)
    return where.on_device, where.label


# --- device state --------------------------------------------------------------


def run_command(argv: list[str]) -> str | None:
    """stdout of a short command, or ``None`` when it is absent or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout if completed.returncode == 0 else None


def read_device_state(*, root: Path = Path("/"), run: CommandRunner = run_command) -> dict[str, Any]:
    """What the device exposes about temperature, throttling, governor, clocks, power mode."""
    board = read_board(root=root)
    kind = (
        "raspberry-pi"
        if "Raspberry Pi" in board
        else "jetson"
        if "Jetson" in board or (root / "etc/nv_tegra_release").exists()
        else "other"
    )
    state: dict[str, Any] = {"kind": kind, "board": board, **read_cpufreq(root=root)}
    temperatures = read_thermal_zones(root=root)
    if temperatures:
        state["temperatures_c"] = temperatures
        readings = [value for name, value in temperatures.items() if _real_sensor(name, value)]
        if readings:
            state["soc_temp_c"] = max(readings)
    if kind == "raspberry-pi":
        output = run(["vcgencmd", "get_throttled"])
        if output is not None:
            state["throttle_flags"] = parse_throttled(output)
        firmware_temp = parse_measure_temp(run(["vcgencmd", "measure_temp"]) or "")
        if firmware_temp is not None:
            state["firmware_temp_c"] = firmware_temp
            state.setdefault("soc_temp_c", firmware_temp)
    if kind == "jetson":
        output = run(["nvpmodel", "-q"])
        if output is not None:
            state["power_mode"] = parse_nvpmodel(output)
        state["clocks_locked"] = clocks_locked(root=root)
        release = parse_l4t_release(_read(root / "etc/nv_tegra_release"))
        if release:
            state["l4t"] = release
    state["throttled"] = is_throttled(state)
    return state


def is_throttled(state: dict[str, Any]) -> bool:
    """True when the firmware reports throttling or capping *now*."""
    flags = state.get("throttle_flags") or {}
    return any(flags.get(f"{name}_now") for name in THROTTLE_BITS.values())


def parse_throttled(output: str) -> dict[str, Any]:
    """``throttled=0x50005`` → each flag now and since boot."""
    match = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", output)
    if match is None:
        return {"raw": output.strip(), "parsed": False}
    value = int(match.group(1), 0)
    flags: dict[str, Any] = {"raw": match.group(1), "parsed": True}
    for bit, name in THROTTLE_BITS.items():
        flags[f"{name}_now"] = bool(value >> bit & 1)
        flags[f"{name}_since_boot"] = bool(value >> (bit + SINCE_BOOT_SHIFT) & 1)
    return flags


def parse_nvpmodel(output: str) -> dict[str, Any]:
    """``nvpmodel -q`` → ``{"name": "MAXN", "id": 0}``."""
    name = re.search(r"NV Power Mode\s*:\s*(\S.*)", output)
    mode_id = re.search(r"^\s*(\d+)\s*$", output, re.MULTILINE)
    return {"name": name.group(1).strip() if name else None, "id": int(mode_id.group(1)) if mode_id else None}


def parse_measure_temp(output: str) -> float | None:
    """``vcgencmd measure_temp`` → °C (``temp=48.3'C``)."""
    match = re.search(r"temp=(-?\d+(?:\.\d+)?)", output)
    return float(match.group(1)) if match else None


def parse_l4t_release(text: str) -> str:
    """``/etc/nv_tegra_release`` (``# R32 (release), REVISION: 7.1, ...``) → ``"R32.7.1"``; "" when absent."""
    match = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{match.group(1)}.{match.group(2)}" if match else ""


# Jetson zones that are no sensor: the Nano's PMIC-Die reads a fixed 100 C, and an
# Orin Nano's absent CV (DLA/PVA) blocks read -256 C.
_PLACEHOLDER_ZONES = ("PMIC-Die",)
_DISABLED_BELOW_C = -40.0


def _real_sensor(name: str, celsius: float) -> bool:
    return name not in _PLACEHOLDER_ZONES and celsius > _DISABLED_BELOW_C


def read_thermal_zones(*, root: Path = Path("/")) -> dict[str, float]:
    """Each ``/sys/class/thermal/thermal_zone*`` as ``{type: °C}`` (millidegrees in sysfs)."""
    zones: dict[str, float] = {}
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        try:
            name = (zone / "type").read_text().strip() or zone.name
            zones[name] = int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    return zones


def read_cpufreq(*, root: Path = Path("/")) -> dict[str, Any]:
    """Governor and clocks of cpu0 (kHz in sysfs, MHz here)."""
    cpufreq = root / "sys/devices/system/cpu/cpu0/cpufreq"
    found: dict[str, Any] = {}
    governor = _read(cpufreq / "scaling_governor")
    if governor:
        found["governor"] = governor
    for key, file_name in (
        ("cpu_mhz", "scaling_cur_freq"),
        ("cpu_min_mhz", "scaling_min_freq"),
        ("cpu_max_mhz", "scaling_max_freq"),
    ):
        value = _read(cpufreq / file_name)
        if value and value.isdigit():
            found[key] = int(value) / 1000.0
    return found


def clocks_locked(*, root: Path = Path("/")) -> bool | None:
    """Whether every CPU's (and devfreq GPU's) minimum clock equals its maximum."""
    pairs = []
    for cpufreq in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
        pairs.append((_read(cpufreq / "scaling_min_freq"), _read(cpufreq / "scaling_max_freq")))
    for devfreq in sorted((root / "sys/class/devfreq").glob("*")):
        if "gpu" in devfreq.name or "gv11b" in devfreq.name or "ga10b" in devfreq.name:
            pairs.append((_read(devfreq / "min_freq"), _read(devfreq / "max_freq")))
    pairs = [(low, high) for low, high in pairs if low and high]
    if not pairs:
        return None
    return all(low == high for low, high in pairs)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
