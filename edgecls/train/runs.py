"""A run directory (``runs/NAME/``): what every training stage writes there, and resuming it.

``train`` and ``distill`` both record their options and environment in
``config.json`` and their split in ``split.json``, and both continue an
interrupted run from that ``config.json`` when asked to (``--resume``), and
refuse to start over an interrupted one when not.

>>> run = Path("runs/cnn-digits")
>>> config = resolve_resume(config, run, backups=[run / "backup"], what="run")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from edgecls.base.errors import ConfigError
from edgecls.base.fileio import write_json

Config = TypeVar("Config")


def resolve_resume(config: Config, run_dir: Path, *, backups: Sequence[Path], what: str) -> Config:
    """The options to run with.

    With ``config.resume``: the interrupted run's own options from
    ``config.json`` (``resume=True``); a run with no ``config.json`` or none of
    its ``backups`` left (``BackupAndRestore`` removes them at the end) has
    nothing to resume. Without: ``config``, unless ``run_dir`` holds an
    interrupted ``what`` (``"run"``, ``"distillation"``), which it would mix with.
    """
    interrupted = [path for path in backups if path.exists()]
    if not config.resume:
        if interrupted:
            raise ConfigError(
                f"{run_dir}: holds an interrupted {what}; continue it with --resume, or choose another --out"
            )
        return config
    saved = run_dir / "config.json"
    if not saved.exists():
        raise ConfigError(f"{run_dir}: nothing to resume (no config.json); start the run without --resume")
    if not interrupted:
        raise ConfigError(
            f"{run_dir}: nothing to resume: the {what} finished (or never completed an epoch); "
            "start it again without --resume"
        )
    options = json.loads(saved.read_text())["options"]
    return type(config)(**{**options, "resume": True})


def write_run_files(run_dir: Path, config: Any, dataset: Any, **extra: Any) -> None:
    """``config.json`` (the options, ``extra``, the environment) and ``split.json`` (which images validate)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", {"options": dataclasses.asdict(config), **extra, "environment": environment()})
    split = {**dataset.split, "val_sources": dataset.val.sources, "skipped_files": dataset.skipped}
    write_json(run_dir / "split.json", split)


def describe_device() -> str:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return f"{len(gpus)} GPU(s)" if gpus else f"CPU ({platform.machine()})"


def environment() -> dict[str, str]:
    """Versions and machine, recorded next to every run's outputs."""
    import keras
    import numpy as np
    import tensorflow as tf

    return {
        "edgecls": version(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "system": platform.system(),
        "device": describe_device(),
    }


def version() -> str:
    from edgecls import __version__

    return __version__
