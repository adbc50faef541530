"""What ``edgecls bench`` is asked (``BenchConfig``, a fleet's ``FleetDevice``s) and what it answers.

``BenchConfig`` holds the CLI's options and defaults; ``BenchReport`` is one target's run with its
report files; ``DeviceOutcome`` is one device of a fleet: its run, or the one line why it gave none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError
from edgecls.runtime.corruptions import SEVERITIES, CorruptionSpec
from edgecls.runtime.results import MeasureRun
from edgecls.runtime.ssh import RemoteConfig


@dataclass(frozen=True)
class FleetDevice:
    """One device of a fleet: how to reach it, and the target profile it is measured with (None: ``--target``)."""

    remote: RemoteConfig
    target: str | None = None


@dataclass(frozen=True)
class DeviceOutcome:
    """What one device gave: its run, or the one-line reason it gave none."""

    remote: str
    target: str
    run: MeasureRun | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.run is not None

    def to_dict(self) -> dict[str, Any]:
        status = "ok" if self.ok else "failed"
        return {
            "remote": self.remote,
            "target": self.target,
            "status": status,
            "error": self.error,
            "run": self.run.to_dict() if self.run else None,
        }


@dataclass(frozen=True)
class BenchConfig:
    """Options of ``edgecls bench``; defaults are the CLI's defaults."""

    models: tuple[str, ...]
    target: str = "host"
    data: str | None = None  # digits | a folder of <label>/ images | None (no accuracy)
    runs: int = 200
    warmup: int = 20
    threads: int | None = None  # None: the target's
    out: str | None = None  # None: runs/bench-<target>-<time>
    remote: RemoteConfig | None = None
    fleet: tuple[FleetDevice, ...] = ()  # several devices at once: edgecls.bench.fleet.bench_fleet
    corruptions: bool = False  # with data: top-1 under every camera corruption too, scored where the model runs
    severities: tuple[int, ...] = SEVERITIES
    corruption_seed: int = 0  # image i's corruption is seeded by (corruption_seed, i)

    def corruption_spec(self) -> CorruptionSpec | None:
        """What ``--corruptions`` asks the device to score, checked; None when it is off."""
        if not self.corruptions:
            return None
        if not self.data:
            raise ConfigError("--corruptions scores the --data images under each corruption: give --data")
        return CorruptionSpec.of(None, self.severities, self.corruption_seed)


@dataclass
class BenchReport:
    run: MeasureRun
    out_dir: str
    json_path: str
    markdown_path: str
    plot_path: str | None

    def to_dict(self) -> dict:
        return {
            **self.run.to_dict(),
            "reports": {"json": self.json_path, "markdown": self.markdown_path, "plot": self.plot_path},
        }


def check_models(models: tuple[str, ...]) -> None:
    """At least one model, each an existing ``.tflite`` or ``.onnx`` file."""
    if not models:
        raise ConfigError("give at least one .tflite or .onnx model to benchmark")
    for model in models:
        if not Path(model).is_file():
            raise ConfigError(f"{model}: no such model file")
        if Path(model).suffix.lower() not in (".tflite", ".onnx"):
            raise ConfigError(
                f"{model}: bench runs .tflite and .onnx artifacts; export a .keras model first (edgecls export)"
            )
