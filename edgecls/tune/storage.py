"""Where a study lives, who runs its trials, and what happens to a trial whose process died.

The default storage is a journal file in ``--out`` (``JournalStorage(JournalFileBackend(...))``): several processes
on one machine share it safely, ``optuna-dashboard`` opens it, and a killed run resumes from it. ``postgresql://…``
(or any SQLAlchemy URL Optuna's ``RDBStorage`` takes) lets several machines run the same command on one study.
SQLite is refused for parallel workers (Optuna's FAQ: its locking is not made for them).

A trial left RUNNING by a process that died (``kill -9``, a machine lost) is failed and its parameters queued
again (``enqueue_trial``), so it runs once more and is never lost nor left blocking: a trial records its worker
(host, pid and the process' start time) and a heartbeat; on the same host a dead pid is stale at once, elsewhere a
heartbeat older than ``STALE_AFTER_S``. The RUNNING → FAIL transition is the storage's own, so of two workers that
find the same stale trial only one re-queues it.

>>> storage = open_storage("runs/tune/study.journal")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from edgecls.base.errors import ConfigError
from edgecls.tune.space import SearchSpace, space_from_dict

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0  # a running trial's heartbeat period
STALE_AFTER_S = 300.0  # a trial of another machine without a heartbeat for this long is stale
RETRIES = 2  # a trial whose process died is queued again at most this many times
POSTGRES_INSTALL = 'pip install "edgecls[tune]"'  # psycopg 3: SQLAlchemy 2.1's driver for postgresql://


def open_storage(url: str) -> Any:
    """A journal file (a path) or an RDB server (a URL with ``://``); a one-line ``ConfigError`` if it cannot open."""
    import optuna

    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        path = Path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise ConfigError(f"--storage {path}: cannot open the journal file ({exc.strerror or exc})") from exc
    try:
        return _rdb_storage(url)
    except ImportError as exc:  # Optuna: "Failed to import DB access module for the specified storage URL"
        raise ConfigError(
            f"--storage {redact(url)}: its database driver is not installed ({POSTGRES_INSTALL} for PostgreSQL)"
        ) from exc
    except Exception as exc:  # SQLAlchemy's OperationalError, ArgumentError, …: the server or the URL said no
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConfigError(f"--storage {redact(url)}: cannot open it ({first})") from exc


RDB_OPEN_ATTEMPTS = 5


def _rdb_storage(url: str) -> Any:
    """Optuna's ``RDBStorage`` on ``url``, opened again when another worker was creating its tables at that moment.

    Workers started together on an empty database each create Optuna's tables and version row; PostgreSQL lets
    one win and the others fail with a duplicate key (``pg_type_typname_nsp_index``: a table's row type), an
    ``IntegrityError``. On the next attempt the tables are there and the storage opens. Other errors are not retried.
    """
    import optuna
    from sqlalchemy.exc import IntegrityError  # Optuna's RDB storage is SQLAlchemy's

    for attempt in range(RDB_OPEN_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except IntegrityError:
            if attempt == RDB_OPEN_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def redact(url: str) -> str:
    """``url`` without its password (written to files and messages)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _process_start(pid: int) -> str | None:
    """The process' start time in clock ticks since boot (``/proc/PID/stat`` field 22): a pid is reused, this is not."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return None


def worker_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def is_alive(worker: dict[str, Any]) -> bool:
    """Whether a worker of this host still runs (its pid exists and started when it did)."""
    pid = int(worker.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    start = _process_start(pid)
    return start is None or worker.get("start") is None or start == worker["start"]


def is_stale(trial: Any, *, now: float | None = None) -> bool:
    """Whether a RUNNING trial's process is gone (see the module docstring)."""
    now = time.time() if now is None else now
    worker = trial.user_attrs.get("worker")
    if worker is not None and worker.get("host") == socket.gethostname():
        return not is_alive(worker)
    beat = trial.user_attrs.get("heartbeat")
    if beat is None:  # died between ask and its first record: judge by its start
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - started > STALE_AFTER_S
    return now - float(beat) > STALE_AFTER_S


def recover_stale(study: Any, storage: Any) -> list[int]:
    """Fail every stale RUNNING trial of ``study`` (in ``storage``) and queue its parameters again; the numbers
    recovered by this call."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError

    recovered = []
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if not is_stale(trial):
            continue
        worker = trial.user_attrs.get("worker", {})
        why = f"its worker (pid {worker.get('pid', '?')} on {worker.get('host', '?')}) stopped"
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, "failed_because", why)
            if not storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another worker recovered it first
        requeue(study, trial)
        recovered.append(trial.number)
        log.warning("trial %d: %s; failed, and queued again", trial.number, why)
    return recovered


def requeue(study: Any, trial: Any) -> bool:
    """Queue ``trial``'s parameters again (at most ``RETRIES`` times for one original trial)."""
    original = int(trial.user_attrs.get("retry_of", trial.number))
    retried = sum(1 for other in study.get_trials(deepcopy=False) if other.user_attrs.get("retry_of") == original)
    if retried >= RETRIES:
        log.warning("trial %d was run %d times without finishing: not queued again", original, retried + 1)
        return False
    attrs = {"retry_of": original, **({"grid_seed": True} if trial.user_attrs.get("grid_seed") else {})}
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    return True


@contextlib.contextmanager
def heartbeat(trial: Any) -> Iterator[None]:
    """Record the worker, then a heartbeat every ``HEARTBEAT_S`` while the trial runs."""
    trial.set_user_attr("worker", worker_identity())
    trial.set_user_attr("heartbeat", time.time())
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a storage hiccup must not end the trial; the next beat retries
                trial.set_user_attr("heartbeat", time.time())

    thread = threading.Thread(target=beat, name="edgecls-tune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@dataclass
class SavedStudy:
    """A study on disk, for ``--show`` and ``--export``: the study and what it was started with."""

    study: Any
    space: SearchSpace
    data: str
    seed: int
    calib: str | None
    devices: list[tuple[str, str | None]]
    storage: str  # without its password

    def trial(self, number: int) -> Any:
        trials = self.study.get_trials(deepcopy=False)
        if not 0 <= number < len(trials):
            raise ConfigError(f"--trial {number}: the study has trials 0 to {len(trials) - 1}")
        return trials[number]


def load_saved_study(out: str | Path, *, storage: str | None = None) -> SavedStudy:
    """The study ``edgecls tune --out OUT`` ran (its storage from ``OUT/tune.json``, or ``storage``)."""
    import optuna

    pointer = Path(out) / "tune.json"
    if not pointer.is_file():
        raise ConfigError(f"{out}: no edgecls tune study here ({pointer.name} missing); run edgecls tune --out {out}")
    saved = json.loads(pointer.read_text())
    url = storage or saved["storage"]
    if "***" in url:
        raise ConfigError(f"{out}: its storage needs a password: give --storage URL (or use ~/.pgpass)")
    study = optuna.load_study(study_name=saved["study"], storage=open_storage(url))
    context = study.user_attrs["context"]
    devices = [(target, destination) for target, destination in context["devices"]]
    space = space_from_dict(study.user_attrs["space"])
    return SavedStudy(study, space, context["data"], int(context["seed"]), context["calib"], devices, redact(url))
