"""A throw-away OpenSSH server on 127.0.0.1: the "device" for remote benchmark tests.

Fresh host and user keys, its own sshd_config (public keys only, no PAM), a
known_hosts file holding its host key, and ``TMPDIR`` and ``HOME`` of every
session set to folders of its own (both with a space in their names), so a
test can see what a run leaves behind. ``sftp=False`` serves no SFTP subsystem.
With ``box`` (``tests/box/build.py``) the server is the box's own sshd, run inside it: ``folder`` lies in
the box, the login is the box's user with the box's ``HOME`` (where its ``~/edgecls`` venv is).
Used by ``tests/test_remote.py``, ``tests/test_box.py`` and ``benchmarks/runtime_overhead.py``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class LoopbackSSHD:
    port: int
    user: str
    user_key: Path
    known_hosts: Path
    device_tmp: Path  # TMPDIR of every session (on this machine's file system)
    folder: Path
    home: Path  # HOME of every session
    server: subprocess.Popen  # the listening sshd
    device_tmp_seen: Path | None = None  # device_tmp as the device's processes see it (in a box); None: the same

    @property
    def device_tmp_there(self) -> Path:
        return self.device_tmp_seen or self.device_tmp

    @property
    def destination(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"


def missing_reason() -> str | None:
    """Why a loopback sshd cannot run here, or ``None``."""
    if not SSHD.is_file():
        return f"{SSHD} not installed (apt-get install -y openssh-server)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install -y openssh-client)"
    return None


@contextlib.contextmanager
def loopback_sshd(folder: Path, *, sftp: bool = True, box: Any = None) -> Iterator[LoopbackSSHD]:
    folder.mkdir(parents=True, exist_ok=True)
    there = (lambda path: Path("/") / path.relative_to(box.root)) if box is not None else (lambda path: path)
    for name in ("host_key", "user_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgecls-test", "-f", str(folder / name)], check=True
        )
    shutil.copyfile(folder / "user_key.pub", folder / "authorized_keys")
    device_tmp = folder / "device tmp"
    device_tmp.mkdir()
    home = folder / "device home"
    home.mkdir()
    port = _free_port()
    user = getpass.getuser() if box is None else "pi"
    # A box keeps its user's HOME: ~/edgecls is the venv the README installs there.
    environment = f'TMPDIR="{there(device_tmp)}"' + (f' HOME="{home}"' if box is None else "")
    if box is not None:
        os.chmod(device_tmp, 0o777)  # the box's user writes there
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {there(folder / 'host_key')}",
                f"PidFile {there(folder / 'sshd.pid')}",
                f"AuthorizedKeysFile {there(folder / 'authorized_keys')}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",  # the keys live in a pytest tmp folder
                *(["Subsystem sftp internal-sftp"] if sftp else []),
                f"SetEnv {environment}",
                f"AllowUsers {user}",
                "LogLevel ERROR",
            ]
        )
        + "\n"
    )
    if os.geteuid() == 0:
        privsep = Path("/run/sshd") if box is None else box.host_path("/run/sshd")
        privsep.mkdir(mode=0o755, parents=True, exist_ok=True)  # sshd's privilege separation directory
    host_key = (folder / "host_key.pub").read_text().split()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    log = (folder / "sshd.log").open("w")
    command = [str(SSHD), "-D", "-e", "-f", str(there(config))]
    command = box.command(command, user="root") if box is not None else command
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, server, folder / "sshd.log", timeout_s=15 if box is None else 120)  # emulated: slower
        seen = there(device_tmp) if box is not None else None
        yield LoopbackSSHD(port, user, folder / "user_key", known_hosts, device_tmp, folder, home, server, seen)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, server: subprocess.Popen, log: Path, *, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"sshd exited with status {server.returncode}: {log.read_text()}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s: {log.read_text()}")
