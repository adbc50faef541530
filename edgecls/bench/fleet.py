"""A fleet in one bench: the same models measured on several devices at once, one table.

Devices come from repeated ``--remote user@host[:port][=TARGET]`` options and/or
a fleet file (``--fleet fleet.toml``)::

    [fleet]                              # defaults for every device (all optional)
    target = "rpi5"
    remote_python = "~/edgecls/bin/python"
    ssh_key = "~/.ssh/id_ed25519"

    [[fleet.device]]
    remote = "pi@pi4.local"
    target = "rpi4"

    [[fleet.device]]
    remote = "jetson@orin.local:2222"
    target = "jetson-orin-nano"
    remote_python = "~/venv/bin/python"

A device's own key wins over ``[fleet]``, which wins over the command line's
``--target``, ``--remote-python``, ``--ssh-key`` and ``--known-hosts``.

Each device is measured by ``edgecls.runtime.remote.measure_remote`` in a
thread of its own (its own ssh connections, its own temporary directory on the
device). A device that fails (unreachable, no runtime, a link dropped mid-run,
a model its engine rejects) becomes one ``DeviceOutcome`` with its error while
the others complete. Ctrl-C or SIGTERM reach the main thread only: it sets the
shared stop event, every device run ends as a single remote run does on Ctrl-C
(nothing keeps running, nothing is left in its temporary directory), and the
signal's exception is raised once every thread has finished its clean-up.

>>> devices = parse_remotes(["pi@a=rpi5", "jetson@c=jetson"], defaults=RemoteConfig("-"))  # doctest: +SKIP
>>> report = bench_fleet(BenchConfig(models=("m.tflite",), fleet=devices))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError, EdgeclsError
from edgecls.bench.config import DeviceOutcome, FleetDevice, check_models
from edgecls.bench.siblings import flag_slower_int8
from edgecls.runtime.corruptions import CorruptionSpec
from edgecls.runtime.remote import measure_remote
from edgecls.runtime.ssh import Destination, RemoteConfig, RemoteStopped
from edgecls.runtime.targets import Target, get_target

log = logging.getLogger(__name__)

DEVICE_KEYS = ("remote", "target", "remote_python", "ssh_key", "known_hosts")
JOIN_POLL_S = 0.2  # the main thread waits in short steps: a signal must reach it while devices run


def parse_remotes(texts: Sequence[str], *, defaults: RemoteConfig) -> list[FleetDevice]:
    """``--remote`` values, ``user@host[:port]`` or ``user@host[:port]=TARGET``, with the command line's SSH options."""
    devices = []
    for text in texts:
        destination, equals, target = text.partition("=")
        if equals and not target.strip():
            raise ConfigError(
                f"--remote {text!r}: nothing after '='; give a target (see edgecls targets), e.g. {destination}=rpi5"
            )
        Destination.parse(destination)  # a bad one is refused before any device is contacted
        remote = dataclasses.replace(defaults, destination=destination.strip())
        devices.append(FleetDevice(remote, target.strip() or None))
    return devices


def load_fleet(path: str | Path, *, defaults: RemoteConfig) -> list[FleetDevice]:
    """The devices of a fleet file (see the module docstring); unknown keys are errors that list the valid ones."""
    from edgecls.runtime.targets import _load_toml

    path = Path(path)
    try:
        document = _load_toml(path)
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"--fleet {path}: cannot be read ({exc})") from exc
    fleet = document.get("fleet")
    if set(document) != {"fleet"} or not isinstance(fleet, dict):
        raise ConfigError(
            f"--fleet {path}: expected one [fleet] table with [[fleet.device]] entries, got {sorted(document)}"
        )
    common = {key: value for key, value in fleet.items() if key != "device"}
    _check_keys(common, DEVICE_KEYS[1:], f"{path} [fleet]")
    entries = fleet.get("device", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f'--fleet {path}: no devices; add [[fleet.device]] entries with remote = "user@host"')
    devices = []
    for number, entry in enumerate(entries, 1):
        where = f"{path} device {number}"
        if not isinstance(entry, dict):
            raise ConfigError(f'{where}: expected a table with remote = "user@host", got {entry!r}')
        _check_keys(entry, DEVICE_KEYS, where)
        values = {**common, **entry}
        if "remote" not in values:
            raise ConfigError(f'{where}: no remote = "user@host[:port]"')
        Destination.parse(str(values["remote"]))
        remote = dataclasses.replace(
            defaults,
            destination=str(values["remote"]),
            remote_python=str(values.get("remote_python", defaults.remote_python)),
            ssh_key=_local_path(values.get("ssh_key"), path) or defaults.ssh_key,
            known_hosts=_local_path(values.get("known_hosts"), path) or defaults.known_hosts,
        )
        devices.append(FleetDevice(remote, str(values["target"]) if "target" in values else None))
    return devices


def _check_keys(values: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(allowed)}")
    for key, value in values.items():
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string, got {value!r}")


def _local_path(value: str | None, fleet_file: Path) -> str | None:
    """A workstation path of a fleet file: ``~`` expanded, relative to the file's folder."""
    if not value:
        return None
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else fleet_file.parent / path)


def check_fleet(devices: Sequence[FleetDevice]) -> None:
    """One entry per device: the same destination twice would measure one device twice, at once."""
    seen: set[str] = set()
    for device in devices:
        name = str(Destination.parse(device.remote.destination))
        if name in seen:
            raise ConfigError(f"{name} is listed twice (--remote / --fleet); each device is measured once")
        seen.add(name)


def measure_fleet(
    devices: Sequence[FleetDevice],
    targets: Sequence[Target],
    *,
    models: Sequence[str],
    eval_dir: Path | None,
    runs: int,
    warmup: int,
    threads: int | None,
    corruptions: CorruptionSpec | None = None,
) -> list[DeviceOutcome]:
    """Measure ``models`` on every device at once (``targets[i]`` for ``devices[i]``); one outcome per device, in order.

    A ``KeyboardInterrupt`` or SIGTERM's exception in the main thread stops every device run, waits for their
    clean-up, and is raised again.
    """
    stop = threading.Event()
    outcomes: list[DeviceOutcome | None] = [None] * len(devices)

    def measure(index: int) -> None:
        device, target = devices[index], targets[index]
        name = str(Destination.parse(device.remote.destination))
        try:
            run = measure_remote(
                device.remote,
                models=models,
                target=target,
                eval_dir=eval_dir,
                runs=runs,
                warmup=warmup,
                threads=threads,
                stop=stop,
                corruptions=corruptions,
            )
            outcomes[index] = DeviceOutcome(name, target.name, run=run)
        except RemoteStopped as exc:
            outcomes[index] = DeviceOutcome(name, target.name, error=str(exc))
        except EdgeclsError as exc:
            log.info("%s failed: %s", name, exc)
            outcomes[index] = DeviceOutcome(name, target.name, error=str(exc))
        except Exception as exc:  # a bug on one device's path must not hide the others' results
            log.debug("%s failed", name, exc_info=True)
            outcomes[index] = DeviceOutcome(name, target.name, error=f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=measure, args=(i,), name=f"edgecls-fleet-{i}") for i in range(len(devices))]
    for worker in workers:
        worker.start()
    try:
        _join(workers)
    except BaseException:  # Ctrl-C, SIGTERM: every device run stops and cleans up before this returns
        stop.set()
        log.info("stopping the benchmark on %d device(s)", sum(worker.is_alive() for worker in workers))
        _join(workers)
        raise
    return [outcome for outcome in outcomes if outcome is not None]


def _join(workers: Sequence[threading.Thread]) -> None:
    for worker in workers:
        while worker.is_alive():
            worker.join(JOIN_POLL_S)


@dataclass
class FleetReport:
    devices: list[DeviceOutcome]
    out_dir: str
    json_path: str
    markdown_path: str
    plot_path: str | None

    @property
    def failed(self) -> list[DeviceOutcome]:
        return [device for device in self.devices if not device.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "devices": [device.to_dict() for device in self.devices],
            "failed": [device.remote for device in self.failed],
            "reports": {"json": self.json_path, "markdown": self.markdown_path, "plot": self.plot_path},
        }


def bench_fleet(config: Any) -> FleetReport:
    """``edgecls bench`` on every device of ``config.fleet`` (a ``BenchConfig``) at once, one report for all."""
    from edgecls.bench.evalset import prepare_eval_set
    from edgecls.bench.report import write_fleet_reports

    check_models(config.models)
    if not config.fleet:
        raise ConfigError("no devices: give --remote user@host (repeatable) or --fleet fleet.toml")
    check_fleet(config.fleet)
    targets = [get_target(device.target or config.target) for device in config.fleet]  # all resolved before any ssh
    with tempfile.TemporaryDirectory(prefix="edgecls-eval-") as scratch:
        eval_dir = prepare_eval_set(config.data, config.models, Path(scratch)) if config.data else None
        outcomes = measure_fleet(
            config.fleet,
            targets,
            models=config.models,
            eval_dir=eval_dir,
            runs=config.runs,
            warmup=config.warmup,
            threads=config.threads,
            corruptions=config.corruption_spec(),
        )
    outcomes = [_with_data(outcome, config.data) for outcome in outcomes]
    out = Path(config.out) if config.out else Path("runs") / f"bench-fleet-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = write_fleet_reports(outcomes, out)
    plot = str(paths["plot"]) if paths.get("plot") else None
    return FleetReport(outcomes, str(out), str(paths["json"]), str(paths["markdown"]), plot)


def _with_data(outcome: DeviceOutcome, data: str | None) -> DeviceOutcome:
    if outcome.run is None:
        return outcome
    n_eval = max((result.n_eval for result in outcome.run.results), default=0)
    run = dataclasses.replace(outcome.run, settings={**outcome.run.settings, "data": data, "n_eval": n_eval})
    return dataclasses.replace(outcome, run=flag_slower_int8(run))  # per device: INT8 slower than float there
