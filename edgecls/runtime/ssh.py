"""The SSH transport to a device: the system OpenSSH client with one set of options, and what its failures mean.

``SSH(RemoteConfig("pi@raspberrypi.local")).run("uname -m", step="probing")`` runs a POSIX sh
script on the device; ``run_tethered`` holds ssh's stdin open while it runs, so that this
process stopping (or a fleet's ``stop`` event) ends the device's side too. Host keys are checked
against known_hosts (``StrictHostKeyChecking=yes``); ``accept_new_host_key`` trusts a first
connection (``accept-new``), never a changed key. What the device prints is decoded with
replacement characters and its control characters are shown escaped (``printable``).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError, RemoteError

log = logging.getLogger(__name__)


class RemoteStopped(RemoteError):
    """``measure_remote``'s ``stop`` event was set: the device's run was stopped and cleaned up."""


STOP_WAIT_S = 5.0  # how long ssh gets to end after its stdin closed, before it is killed


STOP_POLL_S = 0.2  # how often a fleet's device run looks at its stop event


_DESTINATION = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9._-]*)(?::(?P<port>[0-9]{1,5}))?$"
)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Destination:
    user: str | None
    host: str  # IPv6 without brackets
    port: int | None

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``user@host[:port]``; IPv6 as ``user@[::1]:2222``. No leading ``-``: nothing here can become an option."""
        match = _DESTINATION.match(text.strip())
        if match is None:
            raise ConfigError(
                f"--remote must look like user@host or user@host:port (IPv6: user@[::1]:22), got {text!r}"
            )
        port = int(match["port"]) if match["port"] else None
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"--remote port must be 1..65535, got {port}")
        return cls(match["user"], match["host"].strip("[]"), port)

    @property
    def login(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def known_hosts_name(self) -> str:
        """How known_hosts names this host: ``host``, or ``[host]:port`` off port 22."""
        return f"[{self.host}]:{self.port}" if self.port and self.port != 22 else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}{':' + str(self.port) if self.port else ''}"


@dataclass(frozen=True)
class RemoteConfig:
    destination: str  # user@host[:port]
    ssh_key: str | None = None
    remote_python: str = "python3"  # a command, e.g. "~/edgecls/bin/python"
    accept_new_host_key: bool = False
    known_hosts: str | None = None  # None: ssh's own (~/.ssh/known_hosts)
    connect_timeout_s: int = 15


class SSH:
    """The system ``ssh`` with one set of options."""

    def __init__(self, config: RemoteConfig) -> None:
        if shutil.which("ssh") is None:
            raise RemoteError("no ssh on this machine: install the OpenSSH client (apt-get install openssh-client)")
        self.config = config
        self.destination = Destination.parse(config.destination)
        options = [
            "-o",
            "BatchMode=yes",  # never prompt for a password or a host key
            "-o",
            f"StrictHostKeyChecking={'accept-new' if config.accept_new_host_key else 'yes'}",
            "-o",
            f"ConnectTimeout={config.connect_timeout_s}",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",  # a dropped link fails in ~15 s instead of hanging
            "-o",
            "LogLevel=ERROR",
        ]
        if config.known_hosts:
            options += ["-o", f"UserKnownHostsFile={_ssh_config_path(config.known_hosts, '--known-hosts')}"]
            if config.accept_new_host_key and os.path.realpath(config.known_hosts) == os.devnull:
                log.warning(
                    "--known-hosts %s with --accept-new-host-key accepts any host key and keeps none: "
                    "the device's identity is not checked",
                    config.known_hosts,
                )
        if config.ssh_key:
            if not Path(config.ssh_key).is_file():
                raise ConfigError(f"--ssh-key {config.ssh_key}: no such file")
            identity = _ssh_config_path(config.ssh_key, "--ssh-key")  # -i would expand %-tokens too
            options += ["-o", f"IdentityFile={identity}", "-o", "IdentitiesOnly=yes"]
        self._options = options

    def command(self, script: str) -> list[str]:
        """The ssh command that runs a POSIX sh ``script`` on the device (``sh -c``, whatever the login shell)."""
        port = ["-p", str(self.destination.port)] if self.destination.port else []
        return ["ssh", *self._options, *port, "--", self.destination.login, f"sh -c {shlex.quote(script)}"]

    def run(
        self, script: str, *, step: str, timeout: float | None = None, stdin: Any = subprocess.DEVNULL
    ) -> subprocess.CompletedProcess[str]:
        """Run ``script`` on the device; ssh reads ``stdin`` (never the caller's own)."""
        command = self.command(script)
        log.debug("%s: %s", step, shlex.join(command))
        try:
            completed = subprocess.run(command, stdin=stdin, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RemoteError(
                f"{step} on {self.destination} took longer than {timeout:.0f} s; the device may be overloaded or the "
                "link gone"
            ) from exc
        return self._checked(command, completed.returncode, completed.stdout, completed.stderr, step)

    def run_tethered(
        self, script: str, *, step: str, stop: threading.Event | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with ssh's stdin a pipe held open by this process until ssh ends.

        The pipe ends when this process stops or dies, or when ssh does: that is
        what the device's ``_LAUNCHER`` waits for. A set ``stop`` ends it too
        (checked every ``STOP_POLL_S``), and raises ``RemoteStopped``.
        """
        command = self.command(script)
        log.debug("%s: %s", step, shlex.join(command))
        read_end, write_end = os.pipe()
        try:
            process = subprocess.Popen(command, stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        try:
            stdout, stderr = self._communicate(process, stop)
        except BaseException:  # Ctrl-C, SIGTERM, stop: the closed pipe stops the benchmark on the device
            os.close(write_end)
            write_end = -1
            try:
                process.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raise
        finally:
            if write_end != -1:
                os.close(write_end)
        return self._checked(command, process.returncode, stdout, stderr, step)

    def _communicate(self, process: subprocess.Popen[bytes], stop: threading.Event | None) -> tuple[bytes, bytes]:
        while True:
            try:
                return process.communicate(timeout=None if stop is None else STOP_POLL_S)
            except subprocess.TimeoutExpired:  # communicate may be called again: nothing read is lost
                if stop is not None and stop.is_set():
                    raise RemoteStopped(f"the benchmark on {self.destination} was stopped") from None

    def _checked(
        self, command: list[str], returncode: int, stdout: bytes, stderr: bytes, step: str
    ) -> subprocess.CompletedProcess[str]:
        completed = subprocess.CompletedProcess(command, returncode, _decode(stdout), _decode(stderr))
        if completed.returncode == 255:
            raise RemoteError(_connection_message(self.destination, step, completed.stderr, self.config))
        return completed


def _ssh_config_path(path: str, option: str) -> str:
    # ssh -o values: %-tokens are expanded and whitespace splits arguments.
    if '"' in path:
        raise ConfigError(f"{option} path may not contain a double quote: {path!r}")
    escaped = path.replace("%", "%%")
    return f'"{escaped}"' if any(ch.isspace() for ch in escaped) else escaped


def _connection_message(destination: Destination, step: str, stderr: str, config: RemoteConfig) -> str:
    detail = tail(stderr) or "ssh exited with status 255"
    known_hosts = config.known_hosts or "~/.ssh/known_hosts"
    if any(text in stderr for text in ("REMOTE HOST IDENTIFICATION HAS CHANGED", "has changed and you have requested")):
        file_option = f" -f {shlex.quote(config.known_hosts)}" if config.known_hosts else ""
        return (
            f"{destination}: the host key has CHANGED since {known_hosts} recorded it: someone may be intercepting the "
            "connection, or the device was reinstalled; check the new key on the device itself "
            "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then remove the old one with "
            f"ssh-keygen{file_option} -R {shlex.quote(destination.known_hosts_name)} "
            "(--accept-new-host-key never accepts a changed key)"
        )
    if "Host key verification failed" in stderr:
        hint = "; to trust a first connection pass --accept-new-host-key (or add the key with ssh-keygen)"
        hint = "" if config.accept_new_host_key else hint
        return f"{destination}: the host key is unknown to {known_hosts} ({detail}){hint}"
    if "Permission denied" in stderr:
        return (
            f"{destination}: SSH login refused ({detail}); pass --ssh-key or add your key to the device's "
            "authorized_keys"
        )
    return f"SSH connection to {destination} failed or dropped while {step}: {detail}"


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def printable(value: Any) -> Any:
    """Strings (in lists and dicts too) with control characters shown as ``\\x1b``: device text is data, not codes."""
    if isinstance(value, str):
        return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", value)
    if isinstance(value, list):
        return [printable(item) for item in value]
    if isinstance(value, dict):
        return {printable(key): printable(item) for key, item in value.items()}
    return value


def tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return str(printable(" | ".join(kept[-lines:])))
