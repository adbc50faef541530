"""Remote benchmarking through a real OpenSSH server on 127.0.0.1 (throw-away keys)."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import pytest

import edgecls
from edgecls.bench import prepare_eval_set
from edgecls.errors import ConfigError, RemoteError
from edgecls.runtime.measure import MeasureConfig, measure_models
from edgecls.runtime.remote import SSH, Destination, RemoteConfig, measure_remote
from edgecls.runtime.targets import get_target
from loopback_sshd import loopback_sshd, missing_reason

RUNS, WARMUP = 10, 2
TREE = Path(edgecls.__file__).resolve().parents[1]


# --- no server needed -------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("pi@raspberrypi.local", Destination("pi", "raspberrypi.local", None)),
        ("pi@10.0.0.7:2222", Destination("pi", "10.0.0.7", 2222)),
        ("jetson-orin", Destination(None, "jetson-orin", None)),
        ("me@[::1]:22", Destination("me", "::1", 22)),
    ],
)
def test_destinations(text, expected):
    assert Destination.parse(text) == expected
    assert str(Destination.parse(text)) == text


@pytest.mark.parametrize("text", ["-oProxyCommand=touch x", "pi@-oProxyCommand=x", "pi@host;reboot", "pi@host:99999", "pi@ho st", "$(id)@host", ""])
def test_destinations_that_could_become_options_or_shell_are_refused(text):
    with pytest.raises(ConfigError):
        Destination.parse(text)


def test_ssh_options_check_host_keys():
    strict = SSH(RemoteConfig("pi@pi.local"))._options
    assert "StrictHostKeyChecking=yes" in strict and "BatchMode=yes" in strict
    trusting = SSH(RemoteConfig("pi@pi.local", accept_new_host_key=True, known_hosts="/tmp/my hosts%d"))._options
    assert "StrictHostKeyChecking=accept-new" in trusting
    assert 'UserKnownHostsFile="/tmp/my hosts%%d"' in trusting  # quoted for ssh, % escaped from token expansion


# --- through a loopback sshd --------------------------------------------------------


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    reason = missing_reason()
    if reason:
        pytest.skip(f"no OpenSSH server for the loopback test: {reason}")
    with loopback_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="module")
def eval_set(digits_run, tmp_path_factory) -> Path:
    return prepare_eval_set("digits", (str(digits_run.tflite),), tmp_path_factory.mktemp("eval"))


@pytest.fixture(scope="module")
def device_python(tmp_path_factory) -> str:
    """This Python with this tree's edgecls first: the "device" runs the code under test, not an installed copy."""
    shim = tmp_path_factory.mktemp("device-python") / "python"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(str(TREE))}${{PYTHONPATH:+:$PYTHONPATH}} exec {shlex.quote(sys.executable)} "$@"\n')
    shim.chmod(0o755)
    return str(shim)


def _config(device, device_python, **overrides) -> RemoteConfig:
    values = dict(destination=device.destination, ssh_key=str(device.user_key), known_hosts=str(device.known_hosts), remote_python=device_python)
    return RemoteConfig(**{**values, **overrides})


def test_remote_bench_matches_local_and_leaves_nothing(device, device_python, digits_run, eval_set, tmp_path):
    # A file name full of shell syntax: it must reach the device as data, never as a command.
    tricky = tmp_path / "it's $(touch PWNED) `id` a;b.tflite"
    shutil.copyfile(digits_run.tflite, tricky)
    models = [str(tricky), str(digits_run.onnx)]
    target = get_target("rpi5")
    local = measure_models(MeasureConfig(models=tuple(models), target=target, runs=RUNS, warmup=WARMUP, data=str(eval_set)))
    remote = measure_remote(_config(device, device_python), models=models, target=target, eval_dir=eval_set, runs=RUNS, warmup=WARMUP)

    assert [r.model for r in remote.results] == models
    assert [r.top1 for r in remote.results] == [r.top1 for r in local.results]
    assert all(r.n_eval == len(list(eval_set.rglob("*.png"))) for r in remote.results)
    assert remote.remote == device.destination and remote.where.endswith("over SSH")
    assert not remote.on_target and "with rpi5 settings" in remote.where  # a PC standing in for a Pi says so
    assert [r.engine for r in remote.results] == ["litert", "onnxruntime"] and remote.settings["threads"] == 4
    assert list(device.device_tmp.iterdir()) == []  # the temporary directory, and what the engines wrote to TMPDIR, are gone
    assert not list(Path.home().glob("PWNED")) and not (tmp_path / "PWNED").exists()


def test_unknown_host_key_is_refused_unless_accepted(device, device_python, digits_run, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(RemoteError, match="host key is unknown.*--accept-new-host-key"):
        measure_remote(_config(device, device_python, known_hosts=str(empty)), models=[digits_run.tflite], target=get_target("host"), runs=2, warmup=0)
    run = measure_remote(_config(device, device_python, known_hosts=str(empty), accept_new_host_key=True), models=[digits_run.tflite], target=get_target("host"), runs=2, warmup=0)
    assert run.results[0].top1 is None and (device.folder / "host_key.pub").read_text().split()[1] in empty.read_text()


def test_missing_runtime_and_missing_python(device, device_python, digits_run, tmp_path):
    bare = tmp_path / "bare-python"  # a Python that cannot import edgecls
    bare.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -I -S \"$@\"\n")
    bare.chmod(0o755)
    with pytest.raises(RemoteError, match=r"lacks the edgecls runtime.*pip install 'edgecls\[runtime\]'"):
        measure_remote(_config(device, device_python, remote_python=str(bare)), models=[digits_run.tflite], target=get_target("rpi5"), runs=2, warmup=0)
    with pytest.raises(RemoteError, match="was not found.*--remote-python"):
        measure_remote(_config(device, device_python, remote_python="/nonexistent/python3"), models=[digits_run.tflite], target=get_target("rpi5"), runs=2, warmup=0)


def test_failing_remote_command_is_reported_and_cleaned_up(device, device_python, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(RemoteError, match=r"benchmark failed on .*LiteRT cannot load.*model0\.tflite is .*broken\.tflite"):
        measure_remote(_config(device, device_python), models=[broken], target=get_target("rpi5"), runs=2, warmup=0)
    assert list(device.device_tmp.iterdir()) == []


def test_unreachable_device(digits_run):
    with pytest.raises(RemoteError, match="SSH connection to pi@127.0.0.1:1 failed"):
        measure_remote(RemoteConfig("pi@127.0.0.1:1", connect_timeout_s=5), models=[digits_run.tflite], target=get_target("rpi5"))


def test_bench_command_over_ssh(device, device_python, digits_run, tmp_path):
    import json

    from typer.testing import CliRunner

    from edgecls.cli import app

    arguments = [
        "bench", str(digits_run.tflite), "--target", "jetson", "--data", "digits", "--runs", str(RUNS), "--warmup", str(WARMUP),
        "--remote", device.destination, "--ssh-key", str(device.user_key), "--known-hosts", str(device.known_hosts),
        "--remote-python", device_python, "--out", str(tmp_path / "out"), "--json",
    ]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    entry = json.loads(result.output)["results"][0]
    assert entry["target"] == "jetson-orin-nano" and entry["threads"] == 6 and entry["top1"] > 0.5
    assert (tmp_path / "out" / "bench.md").is_file()
