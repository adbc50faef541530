"""Run the measuring loop (``edgecls.runtime.measure``) on a device over SSH, with the system OpenSSH client.

Four steps, each one ``ssh`` call:

1. check the device's runtime (``PYTHON -c 'import edgecls.runtime.measure'``)
   and make a temporary directory there (``mktemp -d``);
2. send the models, the target profile and the evaluation set as one tar
   stream on ssh's stdin (``tar -xf -`` there: no SFTP or scp needed);
3. run ``PYTHON -m edgecls.runtime.measure … --json`` there and read its JSON
   (with ``TMPDIR`` pointing into the temporary directory, so whatever the
   engines write there goes with it: onnxruntime's telemetry drops a ``.ses``);
4. remove the temporary directory, whatever happened.

Nothing keeps running on the device once this side stops. The benchmark runs
under a small launcher (``_LAUNCHER``) that reads its stdin, a pipe that only
this process writes to, through ssh: when the connection drops, this process
is stopped (Ctrl-C, SIGTERM) or killed, that pipe ends and the launcher
terminates the session's process group (the remote shell, the measuring
process, its per-model workers); the remote shell then removes the temporary
directory. Step 4 goes over a fresh connection and also terminates the
process group recorded in the directory, for a link that died without the
device noticing. The command then exits 2 with one line (a dropped link),
130 (``interrupted``) or 143 (``terminated``).

A fleet (``edgecls.bench.fleet``) runs one ``measure_remote`` per device in a
thread of its own; signals reach only the main thread, so each call takes a
``stop`` event: once it is set, the call ends its connection as Ctrl-C would
(the pipe closes, the launcher stops the device's run), removes the temporary
directory and raises ``RemoteStopped``.

Nothing a user typed reaches the remote shell unquoted: files travel under
fixed names (``model0.tflite``, ``target.json``, ``eval/``), labels travel
inside the files, and every word of a command goes through ``shlex.quote``
(a leading ``~/`` of ``--remote-python`` becomes the device's ``"$HOME"/``).
What the device prints is decoded with replacement characters, checked
against the result schema before anything is written, and its control
characters are shown escaped, never sent to the terminal.
Host keys are checked against known_hosts (``StrictHostKeyChecking=yes``);
``accept_new_host_key`` trusts a first connection (``accept-new``), never a
changed key.

>>> device = RemoteConfig("pi@raspberrypi.local")  # doctest: +SKIP
>>> run = measure_remote(device, models=["m.tflite"], target=get_target("rpi5"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from edgecls.base.errors import ConfigError, RemoteError
from edgecls.runtime.corruptions import CorruptionSpec
from edgecls.runtime.results import MeasureRun
from edgecls.runtime.ssh import SSH, Destination, RemoteConfig, RemoteStopped, printable, tail
from edgecls.runtime.targets import Target

log = logging.getLogger(__name__)


MISSING_RUNTIME_EXIT = 86
_PROBE = (
    "import sys\n"
    "try:\n"
    "    import edgecls.runtime.measure\n"
    "except ImportError as exc:\n"
    f"    print('edgecls runtime missing:', exc, file=sys.stderr); sys.exit({MISSING_RUNTIME_EXIT})\n"
)
# Runs `python -m edgecls.runtime.measure ARGS` in this process; stdin's end (the workstation or the link is gone)
# terminates the whole process group, and a remover in a session of its own (outside that group, which a dead
# link's shell may not outlive to run its EXIT trap) deletes the temporary directory a second later. Standard
# library only: it works with any edgecls version on the device.
_LAUNCHER = (
    "import os, runpy, signal, sys, threading\n"
    "with open('pgid', 'w') as f:\n"
    "    f.write(str(os.getpgrp()))\n"
    "def watch():\n"
    "    try:\n"
    "        while os.read(0, 65536):\n"
    "            pass\n"
    "    except OSError:\n"
    "        pass\n"
    "    here = os.getcwd()\n"
    "    if os.path.basename(here).startswith('edgecls-bench.'):\n"
    "        import subprocess\n"
    "        subprocess.Popen(['sh', '-c', 'sleep 1; cd / && rm -rf -- \"$0\"', here], start_new_session=True,\n"
    "                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "    os.killpg(os.getpgrp(), signal.SIGTERM)\n"
    "threading.Thread(target=watch, daemon=True).start()\n"
    "sys.argv = ['edgecls.runtime.measure', *sys.argv[1:]]\n"
    "runpy.run_module('edgecls.runtime.measure', run_name='__main__', alter_sys=True)\n"
)
_REMOTE_TMP = re.compile(r"^/[^\x00-\x1f\x7f]*/edgecls-bench\.[A-Za-z0-9]+$")  # mktemp's answer; used quoted


def measure_remote(
    config: RemoteConfig,
    *,
    models: Sequence[str | Path],
    target: Target,
    eval_dir: str | Path | None = None,
    runs: int = 200,
    warmup: int = 20,
    threads: int | None = None,
    stop: threading.Event | None = None,
    corruptions: CorruptionSpec | None = None,
) -> MeasureRun:
    """Measure ``models`` on the device ``config.destination``; returns the device's own ``MeasureRun``.

    ``stop`` (a fleet's): once set, the run ends as for Ctrl-C and ``RemoteStopped`` is raised.
    ``corruptions`` (with ``eval_dir``): the device also scores the folder under them, corrupting each frame there.
    """
    ssh = SSH(config)
    python = _python_words(config.remote_python)
    with tempfile.TemporaryDirectory(prefix="edgecls-stage-") as staging_name:
        bundle, names = _bundle(Path(staging_name), models, target, eval_dir)
        _check_stop(stop, ssh)
        remote_dir = _make_remote_dir(ssh, python, config.remote_python, target)
        try:
            _check_stop(stop, ssh)
            _send(ssh, bundle, remote_dir)
            _check_stop(stop, ssh)
            arguments = [*names, "--target", "target.json", "--runs", str(runs), "--warmup", str(warmup), "--json"]
            if threads:
                arguments += ["--threads", str(threads)]
            if eval_dir is not None:
                arguments += ["--data", "eval"]
                arguments += corruptions.arguments() if corruptions else []
            quoted_dir = shlex.quote(remote_dir)
            script = (
                f"dir={quoted_dir}; trap 'cd / && rm -rf -- \"$dir\"' EXIT; "
                "trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM; "
                f'cd "$dir" && TMPDIR="$dir" {_sh_words(python)} -c {shlex.quote(_LAUNCHER)} {shlex.join(arguments)}'
            )
            completed = ssh.run_tethered(script, step="running the benchmark", stop=stop)
        finally:
            _stop_and_remove(ssh, remote_dir)
    local_names = dict(zip(names, (str(m) for m in models)))
    if completed.returncode != 0:
        copies = ", ".join(f"{name} is {local}" for name, local in local_names.items())
        raise RemoteError(
            f"the benchmark failed on {ssh.destination} (exit status {completed.returncode}): "
            f"{tail(completed.stderr)} ({copies})"
        )
    run = _parse_run(completed, ssh.destination, names)
    results = [replace(result, model=local_names[result.model]) for result in run.results]
    return replace(run, results=results, remote=str(ssh.destination), where=f"{run.where}, over SSH")


def _check_stop(stop: threading.Event | None, ssh: SSH) -> None:
    if stop is not None and stop.is_set():
        raise RemoteStopped(f"the benchmark on {ssh.destination} was stopped before it started")


def _parse_run(completed: subprocess.CompletedProcess[str], destination: Destination, names: list[str]) -> MeasureRun:
    """The device's last stdout line as a ``MeasureRun``, checked field by field (a login banner may come before it)."""
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    shown = printable(lines[-1][:80]) if lines else "nothing"
    try:
        document = json.loads(lines[-1]) if lines else None
        if not isinstance(document, dict):
            raise ValueError(f"expected a JSON object, got {shown!r}")
        run = MeasureRun.from_dict(printable(document))
    except ValueError as exc:  # json's decode errors are ValueErrors too
        raise RemoteError(
            f"the benchmark on {destination} printed no valid result ({printable(str(exc))}); "
            f"stderr: {tail(completed.stderr)}"
        ) from exc
    reported = [result.model for result in run.results]
    if sorted(reported) != sorted(names):
        raise RemoteError(f"the benchmark on {destination} reported models {reported}, not the {names} it was sent")
    return run


def _bundle(
    staging: Path, models: Sequence[str | Path], target: Target, eval_dir: str | Path | None
) -> tuple[Path, list[str]]:
    """One tar of what the device needs, under fixed, shell-safe names."""
    names = []
    for index, model in enumerate(models):
        if not Path(model).is_file():
            raise ConfigError(f"{model}: no such model file")
        names.append(f"model{index}{Path(model).suffix.lower()}")
    (staging / "target.json").write_text(json.dumps({k: v for k, v in target.to_dict().items() if k != "source"}))
    bundle = staging / "bundle.tar"
    with tarfile.open(bundle, "w") as archive:
        for name, model in zip(names, models):
            archive.add(model, arcname=name, recursive=False)
        archive.add(staging / "target.json", arcname="target.json")
        if eval_dir is not None:
            for path in sorted(Path(eval_dir).rglob("*")):
                if path.is_file():
                    archive.add(path, arcname=f"eval/{path.relative_to(eval_dir)}", recursive=False)
    return bundle, names


def _send(ssh: SSH, bundle: Path, remote_dir: str) -> None:
    step = "copying the models and evaluation set"
    with bundle.open("rb") as stream:
        completed = ssh.run(f"cd {shlex.quote(remote_dir)} && tar -xf -", step=step, stdin=stream)
    if completed.returncode != 0:
        status = completed.returncode
        raise RemoteError(f"{step} to {ssh.destination} failed (exit status {status}): {tail(completed.stderr)}")


def _make_remote_dir(ssh: SSH, python: list[str], shown: str, target: Target) -> str:
    script = f'{_sh_words(python)} -c {shlex.quote(_PROBE)} && mktemp -d "${{TMPDIR:-/tmp}}/edgecls-bench.XXXXXXXX"'
    completed = ssh.run(script, step="checking the runtime", timeout=120)
    if completed.returncode == 127:
        raise RemoteError(
            f"{shown} was not found on {ssh.destination}; pass --remote-python with the device's Python "
            "(e.g. ~/edgecls/bin/python)"
        )
    if completed.returncode == MISSING_RUNTIME_EXIT:
        raise RemoteError(
            f"{ssh.destination} lacks the edgecls runtime for {shown} ({tail(completed.stderr)}); on the device: "
            f"{target.install}"
        )
    lines = completed.stdout.strip().splitlines()
    remote_dir = lines[-1].strip() if lines else ""
    if completed.returncode != 0 or not _REMOTE_TMP.match(remote_dir):
        if completed.returncode == 0 and remote_dir.startswith("/") and "/edgecls-bench." in remote_dir:
            _stop_and_remove(ssh, remote_dir)  # made, but not a path this module will use: not left behind
        raise RemoteError(
            f"could not prepare a temporary directory on {ssh.destination} (exit status {completed.returncode}): "
            f"{tail(completed.stderr) or printable(remote_dir)}"
        )
    return remote_dir


def _stop_and_remove(ssh: SSH, remote_dir: str) -> None:
    """Over a fresh connection: terminate the run's process group if its directory is still there, then remove it."""
    script = (
        f"dir={shlex.quote(remote_dir)}; "
        'if [ -f "$dir/pgid" ]; then g=$(cat "$dir/pgid"); case "$g" in ""|?|0*|*[!0-9]*) ;; '  # never -1, 0 or junk
        '*) kill -s TERM -- "-$g" 2>/dev/null && sleep 1 && kill -s KILL -- "-$g" 2>/dev/null ;; esac; fi; '
        'rm -rf -- "$dir"'
    )
    try:
        completed = ssh.run(script, step="removing the temporary directory", timeout=60)
    except RemoteError as exc:
        shown = printable(remote_dir)
        log.warning("%s; %s may be left on the device, and the benchmark still running there", exc, shown)
        return
    if completed.returncode != 0:
        log.warning("could not remove %s on %s: %s", printable(remote_dir), ssh.destination, tail(completed.stderr))


def _python_words(command: str) -> list[str]:
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(f"--remote-python {command!r}: {exc} (quote it as you would in sh)") from None
    if not words:
        raise ConfigError("--remote-python must name a Python interpreter, e.g. python3 or ~/edgecls/bin/python")
    if words[0].startswith("-"):
        raise ConfigError(f"--remote-python must start with a Python interpreter, not an option: got {command!r}")
    return words


def _sh_words(words: list[str]) -> str:
    """``words`` quoted for sh, with a leading ``~`` or ``~/`` of a word expanded on the device, as a shell would."""
    quoted = []
    for word in words:
        if word == "~" or word.startswith("~/"):
            quoted.append('"$HOME"' + (shlex.quote(word[1:]) if word != "~" else ""))
        else:
            quoted.append(shlex.quote(word))
    return " ".join(quoted)
