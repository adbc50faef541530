"""``edgecls tune`` across processes: resume after kill -9, ``--workers 2``, two processes on one PostgreSQL study,
and the latency measured on a device over SSH (a loopback sshd: this machine as the "device").

In each, every finished trial is kept, every worker contributes, and no trial is lost or run twice. The
PostgreSQL server is a real one the test starts (initdb/pg_ctl from Debian's ``postgresql``, as the
``postgres`` user when the tests run as root, in a temporary folder on a free port); the test skips with the reason
only where the server cannot start, and fails there under CI (``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest
from tune_helpers import environment, load_study, make_folder, run_tune, tune_command, wait_for, write_space

pytestmark = pytest.mark.slow
FINISHED = ("COMPLETE", "PRUNED")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("tune-parallel") / "shapes")


def _space(path: Path, *, epochs: int = 1) -> Path:
    """cnn at 16 or 32 px in FP32 (the least work a trial can be); two grid seeds; with ``epochs`` 2, a rung 1 of 1
    epoch and the halving gate."""
    return write_space(path, ratios="[0.0]", precisions='["fp32"]', grid='backbone = "cnn"\nsizes = [16, 32]',
                       epochs=epochs, rung_epochs=1)  # fmt: skip


def _check_every_trial_ran_once(study, *, at_least: int) -> list:
    trials = study.get_trials()
    states = [trial.state.name for trial in trials]
    finished = [trial for trial in trials if trial.state.name in FINISHED]
    assert len(finished) >= at_least and "RUNNING" not in states, states
    seeds = [tuple(sorted(t.params.items())) for t in finished if t.user_attrs.get("grid_seed")]
    assert len(seeds) == len(set(seeds)), seeds  # no grid seed was run by two workers (a failed one runs again)
    return finished


def _workers(finished) -> set[tuple[str, int]]:
    return {(trial.user_attrs["worker"]["host"], trial.user_attrs["worker"]["pid"]) for trial in finished}


def test_a_study_killed_during_a_trial_continues_with_every_finished_trial_kept(folder, tmp_path):
    out = tmp_path / "out"
    command = tune_command(folder, _space(tmp_path / "space.toml", epochs=2), out, "--trials", "3")
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(command, stdout=log, stderr=log, env=environment(), start_new_session=True)

    def second_trial_running() -> bool:
        with contextlib.suppress(Exception):  # the study may not exist yet
            trials = load_study(out).get_trials()
            return (
                len(trials) > 1
                and trials[0].state.name in FINISHED
                and any(t.state.name == "RUNNING" and "worker" in t.user_attrs for t in trials[1:])
            )
        return False

    try:
        wait_for(second_trial_running, timeout=900, what="trial 0 finished and the next one running", process=first)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # kill -9, the measuring processes with it
        first.wait()
    before = {t.number: (t.state.name, t.values, t.params) for t in load_study(out).get_trials()}
    killed = [number for number, (state, _, _) in before.items() if state == "RUNNING"]
    completed = run_tune(command)  # the same command
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "resuming: " in completed.stderr
    study = load_study(out)
    trials = study.get_trials()
    for number, (state, values, params) in before.items():
        if state in FINISHED:
            assert (trials[number].state.name, trials[number].values, trials[number].params) == (state, values, params)
    assert len(killed) == 1
    dead = trials[killed[0]]
    assert dead.state.name == "FAIL" and "stopped" in dead.user_attrs["failed_because"]
    (rerun,) = [t for t in trials if t.user_attrs.get("retry_of") == dead.number]
    assert rerun.state.name in FINISHED and rerun.params == dead.params  # run again, not lost
    finished = _check_every_trial_ran_once(study, at_least=3)
    assert len(finished) == 3


def test_two_workers_both_contribute_and_no_trial_is_lost_or_run_twice(folder, tmp_path):
    out = tmp_path / "out"
    completed = run_tune(tune_command(folder, _space(tmp_path / "space.toml"), out, "--trials", "4", "--workers", "2"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    study = load_study(out)
    finished = _check_every_trial_ran_once(study, at_least=4)
    assert "FAIL" not in [t.state.name for t in study.get_trials()]
    assert len(_workers(finished)) == 2  # two processes, both ran trials
    reported = [int(line.split()[1]) for line in completed.stderr.splitlines() if line.startswith("trial ")]
    assert sorted(reported) == sorted(t.number for t in finished)  # each reported once, by the parent


# --- PostgreSQL ----------------------------------------------------------------------------------------------


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
    return Path(found[-1]).parent if found[-1] else None


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of this test's own: its URL."""

    def unavailable(reason: str):
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no PostgreSQL server for the test: {reason}")

    binaries = _postgres_bin()
    if binaries is None:
        unavailable("initdb not found (apt-get install postgresql)")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    home = Path(tempfile.mkdtemp(prefix="edgecls-postgres-"))
    home.chmod(0o755)
    data, port = home / "data", _free_port()
    data.mkdir()
    if as_user:
        shutil.chown(home, "postgres")
        shutil.chown(data, "postgres")

    def run(*words: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *words], capture_output=True, text=True, timeout=120, cwd=home)

    initdb = run(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    if initdb.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        unavailable(f"initdb failed: {initdb.stderr.strip()[-300:]}")
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-o", options, "-w", "start")
    if started.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        unavailable(f"pg_ctl start failed: {started.stderr.strip()[-300:]}")
    try:
        created = run(str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "tune")
        assert created.returncode == 0, created.stderr
        yield f"postgresql://postgres@127.0.0.1:{port}/tune"
    finally:
        run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


def test_workers_opening_an_empty_database_at_once_all_open_it(postgres):
    """Machines started together on an empty database all create Optuna's tables and version row: the losers of
    that race must open the storage, not exit with a duplicate-key error (seen in CI with two processes)."""
    import threading

    import psycopg

    from edgecls.tune.storage import open_storage

    with psycopg.connect(postgres, autocommit=True) as connection:
        connection.execute("CREATE DATABASE race")
    url = postgres.rsplit("/", 1)[0] + "/race"
    barrier, opened, errors = threading.Barrier(6), [], []

    def open_one() -> None:
        barrier.wait()
        try:
            opened.append(open_storage(url))
        except Exception as exc:  # noqa: BLE001 - every failure is the test's finding
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and len(opened) == 6, errors


def test_two_processes_share_one_study_in_postgresql(folder, tmp_path, postgres):
    """Two machines running the same command: here two processes, each with its own --out folder of one name."""
    space = _space(tmp_path / "space.toml")
    commands = [tune_command(folder, space, tmp_path / side / "out", "--trials", "4", "--storage", postgres)
                for side in ("a", "b")]  # fmt: skip
    logs = [(tmp_path / f"{side}.log").open("w") for side in ("a", "b")]
    processes = [
        subprocess.Popen(command, stdout=log, stderr=log, env=environment()) for command, log in zip(commands, logs)
    ]
    codes = [process.wait(timeout=1800) for process in processes]
    assert codes == [0, 0], [(tmp_path / f"{side}.log").read_text()[-2000:] for side in ("a", "b")]
    study = optuna.load_study(study_name="edgecls-tune-out", storage=postgres)
    finished = _check_every_trial_ran_once(study, at_least=4)
    assert "FAIL" not in [t.state.name for t in study.get_trials()]
    assert len(_workers(finished)) == 2  # both processes ran trials
    for side in ("a", "b"):  # either side shows the whole study
        assert load_study(tmp_path / side / "out").study_name == "edgecls-tune-out"


# --- a device over SSH --------------------------------------------------------------------------------------


def test_latency_is_measured_on_the_device_over_ssh(folder, tmp_path):
    import json
    import shlex
    import sys

    from loopback_sshd import loopback_sshd, missing_reason
    from tune_helpers import TREE

    reason = missing_reason()
    if reason:
        pytest.skip(f"no OpenSSH server for the loopback test: {reason}")
    shim = tmp_path / "device-python"  # the "device" runs this tree's runtime, as in tests/test_remote.py
    shim.write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(str(TREE))} exec {shlex.quote(sys.executable)} "$@"\n')
    shim.chmod(0o755)
    space = write_space(tmp_path / "space.toml", sizes="[32]", rounds=1)
    with loopback_sshd(tmp_path / "sshd") as device:
        remote = ["--remote", f"{device.destination}=rpi5", "--ssh-key", str(device.user_key), "--known-hosts",
                  str(device.known_hosts), "--remote-python", str(shim)]  # fmt: skip
        completed = run_tune(tune_command(folder, space, tmp_path / "out", "--trials", "2", *remote))
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert list(device.device_tmp.iterdir()) == []  # nothing left on the device
    front = json.loads((tmp_path / "out" / "front.json").read_text())
    assert front["trials"] and front["budget"]["target"].endswith("(rpi5)")
    assert all("over SSH" in p["where"] and "rpi5 settings" in p["where"] for p in front["trials"])
