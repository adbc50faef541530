"""What ``edgecls tune`` is asked (``TuneConfig``), how long it may run (``parse_duration``), what it answers
(``TuneResult``).

>>> TuneConfig(data="photos/", max_latency_ms=20, target="rpi5", trials=60).check()
>>> parse_duration("1h30m")
5400.0
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError

DEFAULT_TRIALS = 30  # neither --trials nor --time-budget given
STUDY_NAME = "edgecls-tune"


@dataclass(frozen=True)
class TuneConfig:
    """Options of ``edgecls tune``; the defaults are the CLI's."""

    data: str  # digits | a folder of <class>/ images (or train/ + val/)
    max_latency_ms: float  # the budget: the target's p50 of the deployed artifact
    target: str = "host"  # the device profile latency is measured with (here, or on --remote / --fleet)
    out: str = "runs/tune"
    max_size_mb: float | None = None  # a second budget: the artifact's file size
    trials: int | None = None  # finished trials in the study (all runs together); None: DEFAULT_TRIALS or the clock
    time_budget_s: float | None = None  # this run's wall clock: no trial starts after it
    space: str | None = None  # a space TOML file; None: the default space (edgecls.tune.space)
    workers: int = 1  # processes on this machine, each running trials
    storage: str | None = None  # None: a journal file in out/; postgresql://… for several machines
    remote: Any = None  # a RemoteConfig: latency measured on the device over SSH
    fleet: tuple[Any, ...] = ()  # FleetDevices: every device must meet the budget; the slowest one counts
    threads: int | None = None  # engine threads when measuring (None: the target's)
    calib: str | None = None  # INT8 calibration folder; None: written from the training split into out/calib
    seed: int = 0

    def check(self) -> None:
        if not self.max_latency_ms > 0:
            raise ConfigError(f"--max-latency-ms must be positive, got {self.max_latency_ms}")
        if self.max_size_mb is not None and not self.max_size_mb > 0:
            raise ConfigError(f"--max-size-mb must be positive, got {self.max_size_mb}")
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.trials}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ConfigError(f"--time-budget must be positive, got {self.time_budget_s} s")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.remote is not None and self.fleet:
            raise ConfigError("--remote and --fleet: give one device with --remote, or several in the fleet file")
        if self.storage and self.storage.startswith("sqlite") and self.workers > 1:
            raise ConfigError(
                f"--storage {self.storage} with --workers {self.workers}: SQLite is not safe for parallel workers "
                "(Optuna's FAQ); leave --storage out (a journal file in --out) or use postgresql://…"
            )

    @property
    def trial_limit(self) -> int | None:
        """How many finished trials the study should hold: --trials, else DEFAULT_TRIALS unless a clock is set."""
        if self.trials is not None:
            return self.trials
        return None if self.time_budget_s is not None else DEFAULT_TRIALS

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def storage_url(self) -> str:
        """The storage as given, or the journal file in ``out`` (absolute: workers may start elsewhere)."""
        return self.storage or str((self.out_dir / "study.journal").resolve())

    def devices(self) -> list[tuple[str, Any]]:
        """(target name, RemoteConfig or None) of every device that measures: here, the remote, or the fleet."""
        if self.fleet:
            return [(device.target or self.target, device.remote) for device in self.fleet]
        return [(self.target, self.remote)]

    def defining(self) -> dict[str, Any]:
        """What decides the study's trials: a resumed study must have been started with the same."""
        devices = [(target, getattr(remote, "destination", None)) for target, remote in self.devices()]
        return {
            "data": str(Path(self.data).resolve()) if self.data != "digits" else "digits",
            "max_latency_ms": float(self.max_latency_ms),
            "max_size_mb": self.max_size_mb,
            "devices": [list(device) for device in devices],
            "threads": self.threads,
            "seed": self.seed,
        }


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([hms])")


def parse_duration(text: str) -> float:
    """``3h``, ``90m``, ``45s``, ``1h30m`` or plain seconds → seconds."""
    cleaned = text.strip().lower()
    try:
        return float(cleaned)
    except ValueError:
        pass
    parts = _DURATION.findall(cleaned)
    if not parts or _DURATION.sub("", cleaned).strip():
        raise ConfigError(f"--time-budget {text!r}: give a duration such as 3h, 90m, 1h30m or 600 (seconds)")
    return float(sum(float(value) * {"h": 3600, "m": 60, "s": 1}[unit] for value, unit in parts))


@dataclass
class TuneResult:
    out: str
    study: str
    storage: str  # without its password
    trials: int  # finished trials in the study (every run, every worker)
    this_run: int  # finished by this command
    stopped: str  # "trials", "time budget", or what stopped it
    front: list[dict[str, Any]] = field(default_factory=list)
    gates: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def best(self) -> dict[str, Any] | None:
        return max(self.front, key=lambda point: point["top1"]) if self.front else None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "best": self.best}
