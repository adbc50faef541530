"""Run the measuring loop (``edgecls.runtime.measure``) on a device over SSH, with the system OpenSSH client.

Four steps, each one ``ssh``/``scp`` call:

1. check the device's runtime (``PYTHON -c 'import edgecls.runtime.measure'``)
   and make a temporary directory there (``mktemp -d``);
2. copy the models, the target profile and the evaluation set (one tar file)
   into it (``scp``, which speaks SFTP in OpenSSH >= 9);
3. run ``PYTHON -m edgecls.runtime.measure … --json`` there and read its JSON
   (with ``TMPDIR`` pointing into the temporary directory, so whatever the
   engines write there goes with it: onnxruntime's telemetry drops a ``.ses``);
4. remove the temporary directory, whatever happened (the remote shell also
   removes it on exit, in case the connection drops before step 4).

Nothing a user typed reaches the remote shell unquoted: files travel under
fixed names (``model0.tflite``, ``target.json``, ``eval.tar``), labels travel
inside the files, and every word of a command goes through ``shlex.quote``.
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
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from edgecls.errors import ConfigError, RemoteError
from edgecls.runtime.measure import MeasureRun
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
_REMOTE_TMP = re.compile(r"^/[A-Za-z0-9._/-]+/edgecls-bench\.[A-Za-z0-9]+$")
_DESTINATION = re.compile(r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9._-]*)(?::(?P<port>[0-9]{1,5}))?$")


@dataclass(frozen=True)
class Destination:
    user: str | None
    host: str  # IPv6 without brackets
    port: int | None

    @classmethod
    def parse(cls, text: str) -> "Destination":
        """``user@host[:port]``; IPv6 as ``user@[::1]:2222``. No leading ``-``: nothing here can become an option."""
        match = _DESTINATION.match(text.strip())
        if match is None:
            raise ConfigError(f"--remote must look like user@host or user@host:port (IPv6: user@[::1]:22), got {text!r}")
        port = int(match["port"]) if match["port"] else None
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"--remote port must be 1..65535, got {port}")
        return cls(match["user"], match["host"].strip("[]"), port)

    @property
    def login(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def scp_path(self, remote_path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}:{remote_path}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}{':' + str(self.port) if self.port else ''}"


@dataclass(frozen=True)
class RemoteConfig:
    destination: str  # user@host[:port]
    ssh_key: str | None = None
    remote_python: str = "python3"  # a command, e.g. "/home/pi/venv/bin/python"
    accept_new_host_key: bool = False
    known_hosts: str | None = None  # None: ssh's own (~/.ssh/known_hosts)
    connect_timeout_s: int = 15


class SSH:
    """The system ``ssh``/``scp`` with one set of options."""

    def __init__(self, config: RemoteConfig) -> None:
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise RemoteError(f"no {tool} on this machine: install the OpenSSH client (apt-get install openssh-client)")
        self.config = config
        self.destination = Destination.parse(config.destination)
        options = [
            "-o", "BatchMode=yes",  # never prompt for a password or a host key
            "-o", f"StrictHostKeyChecking={'accept-new' if config.accept_new_host_key else 'yes'}",
            "-o", f"ConnectTimeout={config.connect_timeout_s}",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3",  # a dropped link fails in ~15 s instead of hanging
            "-o", "LogLevel=ERROR",
        ]
        if config.known_hosts:
            options += ["-o", f"UserKnownHostsFile={_ssh_config_path(config.known_hosts)}"]
        if config.ssh_key:
            if not Path(config.ssh_key).is_file():
                raise ConfigError(f"--ssh-key {config.ssh_key}: no such file")
            options += ["-i", str(config.ssh_key), "-o", "IdentitiesOnly=yes"]
        self._options = options

    def run(self, script: str, *, step: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run a POSIX sh ``script`` on the device (through ``sh -c``, whatever the login shell)."""
        port = ["-p", str(self.destination.port)] if self.destination.port else []
        command = ["ssh", *self._options, *port, "--", self.destination.login, f"sh -c {shlex.quote(script)}"]
        return self._call(command, step=step, timeout=timeout)

    def copy(self, files: Sequence[Path], remote_dir: str, *, step: str) -> None:
        port = ["-P", str(self.destination.port)] if self.destination.port else []
        command = ["scp", "-q", *self._options, *port, "--", *(str(f) for f in files), self.destination.scp_path(remote_dir + "/")]
        completed = self._call(command, step=step, timeout=None)
        if completed.returncode != 0:
            raise RemoteError(f"{step} on {self.destination} failed: {_tail(completed.stderr)}")

    def _call(self, command: list[str], *, step: str, timeout: float | None) -> subprocess.CompletedProcess:
        log.debug("%s: %s", step, shlex.join(command))
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RemoteError(f"{step} on {self.destination} took longer than {timeout:.0f} s; the device may be overloaded or the link gone") from exc
        if completed.returncode == 255:
            raise RemoteError(_connection_message(str(self.destination), step, completed.stderr, self.config.accept_new_host_key))
        return completed


def measure_remote(
    config: RemoteConfig,
    *,
    models: Sequence[str | Path],
    target: Target,
    eval_dir: str | Path | None = None,
    runs: int = 200,
    warmup: int = 20,
    threads: int | None = None,
) -> MeasureRun:
    """Measure ``models`` on the device ``config.destination``; returns the device's own ``MeasureRun``."""
    ssh = SSH(config)
    python = _python_words(config.remote_python)
    with tempfile.TemporaryDirectory(prefix="edgecls-stage-") as staging_name:
        staging = Path(staging_name)
        staged, names = _stage(staging, models, target, eval_dir)
        remote_dir = _make_remote_dir(ssh, python, target)
        try:
            ssh.copy(staged, remote_dir, step="copying the models and evaluation set")
            arguments = [*names, "--target", "target.json", "--runs", str(runs), "--warmup", str(warmup), "--json"]
            if threads:
                arguments += ["--threads", str(threads)]
            unpack = ""
            if eval_dir is not None:
                arguments += ["--data", "eval"]
                unpack = "mkdir eval && tar -xf eval.tar -C eval && "
            cleanup = f"cd / && rm -rf -- {shlex.quote(remote_dir)}"
            script = (
                f"trap {shlex.quote(cleanup)} EXIT HUP INT TERM; cd {shlex.quote(remote_dir)} && {unpack}"
                f"TMPDIR={shlex.quote(remote_dir)} {shlex.join(python)} -m edgecls.runtime.measure "
                f"{shlex.join(arguments)}"
            )
            completed = ssh.run(script, step="running the benchmark")
        finally:
            _remove_remote_dir(ssh, remote_dir)
    local_names = dict(zip(names, (str(m) for m in models)))
    if completed.returncode != 0:
        copies = ", ".join(f"{name} is {local}" for name, local in local_names.items())
        raise RemoteError(f"the benchmark failed on {ssh.destination} (exit status {completed.returncode}): {_tail(completed.stderr)} ({copies})")
    try:
        run = MeasureRun.from_dict(json.loads(completed.stdout))
    except (ValueError, TypeError, KeyError) as exc:
        raise RemoteError(f"the benchmark on {ssh.destination} printed no valid JSON ({exc}); stderr: {_tail(completed.stderr)}") from exc
    results = [replace(result, model=local_names.get(result.model, result.model)) for result in run.results]
    return replace(run, results=results, remote=str(ssh.destination), where=f"{run.where}, over SSH")


def _stage(staging: Path, models: Sequence[str | Path], target: Target, eval_dir: str | Path | None) -> tuple[list[Path], list[str]]:
    """Copy what the device needs under fixed, shell-safe names."""
    staged, names = [], []
    for index, model in enumerate(models):
        model = Path(model)
        if not model.is_file():
            raise ConfigError(f"{model}: no such model file")
        name = f"model{index}{model.suffix.lower()}"
        shutil.copyfile(model, staging / name)
        staged.append(staging / name)
        names.append(name)
    (staging / "target.json").write_text(json.dumps({k: v for k, v in target.to_dict().items() if k != "source"}))
    staged.append(staging / "target.json")
    if eval_dir is not None:
        with tarfile.open(staging / "eval.tar", "w") as archive:
            for path in sorted(Path(eval_dir).rglob("*")):
                if path.is_file():
                    archive.add(path, arcname=str(path.relative_to(eval_dir)), recursive=False)
        staged.append(staging / "eval.tar")
    return staged, names


def _make_remote_dir(ssh: SSH, python: list[str], target: Target) -> str:
    script = f"{shlex.join(python)} -c {shlex.quote(_PROBE)} && mktemp -d \"${{TMPDIR:-/tmp}}/edgecls-bench.XXXXXXXX\""
    completed = ssh.run(script, step="checking the runtime", timeout=120)
    shown = shlex.join(python)
    if completed.returncode == 127:
        raise RemoteError(f"{shown} was not found on {ssh.destination}; pass --remote-python with the device's Python (e.g. ~/venv/bin/python)")
    if completed.returncode == MISSING_RUNTIME_EXIT:
        raise RemoteError(
            f"{ssh.destination} lacks the edgecls runtime for {shown} ({_tail(completed.stderr)}); on the device: {target.install}"
        )
    lines = completed.stdout.strip().splitlines()
    remote_dir = lines[-1].strip() if lines else ""
    if completed.returncode != 0 or not _REMOTE_TMP.match(remote_dir):
        raise RemoteError(f"could not prepare a temporary directory on {ssh.destination} (exit status {completed.returncode}): {_tail(completed.stderr) or remote_dir}")
    return remote_dir


def _remove_remote_dir(ssh: SSH, remote_dir: str) -> None:
    try:
        completed = ssh.run(f"rm -rf -- {shlex.quote(remote_dir)}", step="removing the temporary directory", timeout=60)
    except RemoteError as exc:
        log.warning("%s; %s may be left on the device (the remote shell removes it when it exits)", exc, remote_dir)
        return
    if completed.returncode != 0:
        log.warning("could not remove %s on %s: %s", remote_dir, ssh.destination, _tail(completed.stderr))


def _python_words(command: str) -> list[str]:
    words = shlex.split(command)
    if not words:
        raise ConfigError("--remote-python must name a Python interpreter, e.g. python3 or /home/pi/venv/bin/python")
    return words


def _ssh_config_path(path: str) -> str:
    # ssh -o values: %-tokens are expanded and whitespace splits arguments.
    if '"' in path:
        raise ConfigError(f"--known-hosts path may not contain a double quote: {path!r}")
    escaped = path.replace("%", "%%")
    return f'"{escaped}"' if any(ch.isspace() for ch in escaped) else escaped


def _connection_message(destination: str, step: str, stderr: str, accept_new: bool) -> str:
    detail = _tail(stderr) or "ssh exited with status 255"
    if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        hint = "" if accept_new else "; to trust a first connection pass --accept-new-host-key (or add the key with ssh-keyscan)"
        return f"{destination}: the host key is unknown or has changed ({detail}){hint}"
    if "Permission denied" in stderr:
        return f"{destination}: SSH login refused ({detail}); pass --ssh-key or add your key to the device's authorized_keys"
    return f"SSH connection to {destination} failed or dropped while {step}: {detail}"


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])
