"""Remote benchmarking through a real OpenSSH server on 127.0.0.1 (throw-away keys)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loopback_sshd import loopback_sshd, missing_reason

import edgecls
from edgecls.base.errors import ConfigError, RemoteError
from edgecls.bench import prepare_eval_set
from edgecls.runtime.measure import measure_models
from edgecls.runtime.remote import measure_remote
from edgecls.runtime.results import MeasureConfig
from edgecls.runtime.ssh import SSH, Destination, RemoteConfig
from edgecls.runtime.targets import get_target

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


@pytest.mark.parametrize(
    "text",
    ["-oProxyCommand=touch x", "pi@-oProxyCommand=x", "pi@host;reboot", "pi@host:99999", "pi@ho st", "$(id)@host", ""],
)
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
    path = f"PYTHONPATH={shlex.quote(str(TREE))}${{PYTHONPATH:+:$PYTHONPATH}}"
    shim.write_text(f'#!/bin/sh\n{path} exec {shlex.quote(sys.executable)} "$@"\n')
    shim.chmod(0o755)
    return str(shim)


def _config(device, device_python, **overrides) -> RemoteConfig:
    values = dict(destination=device.destination, ssh_key=str(device.user_key), known_hosts=str(device.known_hosts))
    values["remote_python"] = device_python
    return RemoteConfig(**{**values, **overrides})


def _quick(config: RemoteConfig, model, target: str = "rpi5"):
    return measure_remote(config, models=[model], target=get_target(target), runs=2, warmup=0)


def test_corruptions_are_scored_on_the_device_as_here(device, device_python, digits_run, eval_set):
    """bench --corruptions over SSH: the device corrupts each frame itself; its figures are the local ones."""
    from edgecls.runtime.corruptions import CorruptionSpec

    spec = CorruptionSpec.of(["gaussian_noise", "defocus_blur", "brightness"], (2, 5), seed=3)
    target = get_target("rpi5")
    models = [str(digits_run.tflite)]
    local = measure_models(
        MeasureConfig(models=tuple(models), target=target, runs=2, warmup=0, data=str(eval_set), corruptions=spec)
    ).results[0]
    remote = measure_remote(
        _config(device, device_python),
        models=models,
        target=target,
        eval_dir=eval_set,
        runs=2,
        warmup=0,
        corruptions=spec,
    )
    result = remote.results[0]
    assert result.severities == [2, 5] and list(result.corruptions) == ["gaussian_noise", "defocus_blur", "brightness"]
    assert result.corruptions == local.corruptions and result.mean_corruption_top1 == local.mean_corruption_top1
    assert remote.settings["corruption_seed"] == 3
    assert min(v for values in result.corruptions.values() for v in values) < result.top1  # they do cost accuracy
    assert list(device.device_tmp.iterdir()) == []


@pytest.mark.slow
def test_remote_bench_matches_local_and_leaves_nothing(device, device_python, digits_run, eval_set, tmp_path):
    # A file name full of shell syntax: it must reach the device as data, never as a command.
    tricky = tmp_path / "it's $(touch PWNED) `id` a;b.tflite"
    shutil.copyfile(digits_run.tflite, tricky)
    models = [str(tricky), str(digits_run.onnx)]
    target = get_target("rpi5")
    local = measure_models(
        MeasureConfig(models=tuple(models), target=target, runs=RUNS, warmup=WARMUP, data=str(eval_set))
    )
    config = _config(device, device_python)
    remote = measure_remote(config, models=models, target=target, eval_dir=eval_set, runs=RUNS, warmup=WARMUP)

    assert [r.model for r in remote.results] == models
    assert [r.top1 for r in remote.results] == [r.top1 for r in local.results]
    assert all(r.n_eval == len(list(eval_set.rglob("*.png"))) for r in remote.results)
    assert remote.remote == device.destination and remote.where.endswith("over SSH")
    assert not remote.on_target and "with rpi5 settings" in remote.where  # a PC standing in for a Pi says so
    assert [r.engine for r in remote.results] == ["litert", "onnxruntime"] and remote.settings["threads"] == 4
    assert (
        list(device.device_tmp.iterdir()) == []
    )  # the temporary directory, and what the engines wrote to TMPDIR, are gone
    assert not list(Path.home().glob("PWNED")) and not (tmp_path / "PWNED").exists()


def test_unknown_host_key_is_refused_unless_accepted(device, device_python, digits_run, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(RemoteError, match="host key is unknown.*--accept-new-host-key"):
        measure_remote(
            _config(device, device_python, known_hosts=str(empty)),
            models=[digits_run.tflite],
            target=get_target("host"),
            runs=2,
            warmup=0,
        )
    run = measure_remote(
        _config(device, device_python, known_hosts=str(empty), accept_new_host_key=True),
        models=[digits_run.tflite],
        target=get_target("host"),
        runs=2,
        warmup=0,
    )
    assert run.results[0].top1 is None and (device.folder / "host_key.pub").read_text().split()[1] in empty.read_text()


def test_missing_runtime_and_missing_python(device, device_python, digits_run, tmp_path):
    bare = tmp_path / "bare-python"  # a Python that cannot import edgecls
    bare.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -I -S "$@"\n')
    bare.chmod(0o755)
    with pytest.raises(RemoteError, match=r"lacks the edgecls runtime.*pip install 'edgecls\[runtime\]'"):
        measure_remote(
            _config(device, device_python, remote_python=str(bare)),
            models=[digits_run.tflite],
            target=get_target("rpi5"),
            runs=2,
            warmup=0,
        )
    with pytest.raises(RemoteError, match="was not found.*--remote-python"):
        _quick(_config(device, device_python, remote_python="/nonexistent/python3"), digits_run.tflite)


@pytest.mark.slow
def test_failing_remote_command_is_reported_and_cleaned_up(device, device_python, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(
        RemoteError, match=r"benchmark failed on .*LiteRT cannot load.*model0\.tflite is .*broken\.tflite"
    ):
        _quick(_config(device, device_python), broken)
    assert list(device.device_tmp.iterdir()) == []


def test_unreachable_device(digits_run):
    with pytest.raises(RemoteError, match="SSH connection to pi@127.0.0.1:1 failed"):
        measure_remote(
            RemoteConfig("pi@127.0.0.1:1", connect_timeout_s=5), models=[digits_run.tflite], target=get_target("rpi5")
        )


@pytest.mark.slow
def test_bench_command_over_ssh(device, device_python, digits_run, tmp_path):
    import json

    from typer.testing import CliRunner

    from edgecls.cli import app

    arguments = [
        "bench",
        str(digits_run.tflite),
        "--target",
        "jetson",
        "--data",
        "digits",
        "--runs",
        str(RUNS),
        "--warmup",
        str(WARMUP),
        "--remote",
        device.destination,
        "--ssh-key",
        str(device.user_key),
        "--known-hosts",
        str(device.known_hosts),
        "--remote-python",
        device_python,
        "--out",
        str(tmp_path / "out"),
        "--json",
    ]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    entry = json.loads(result.output)["results"][0]
    assert entry["target"] == "jetson-orin-nano" and entry["threads"] == 6 and entry["top1"] > 0.5
    assert (tmp_path / "out" / "bench.md").is_file()


# --- nothing keeps running, nothing is left behind ------------------------------------


CLI = (sys.executable, "-c", "from edgecls.cli import main; main()")


def _remote_options(device, remote_python: str) -> list[str]:
    return [
        "--remote",
        device.destination,
        "--ssh-key",
        str(device.user_key),
        "--known-hosts",
        str(device.known_hosts),
        "--remote-python",
        remote_python,
    ]


def _start_bench(device, device_python, model, tmp_path) -> tuple[subprocess.Popen, Path]:
    """``edgecls bench --remote`` in a process of its own, with a run long enough to be stopped mid-way."""
    local_tmp = tmp_path / "local tmp"
    local_tmp.mkdir()
    command = [
        *CLI,
        "bench",
        str(model),
        "--runs",
        "10000000",
        "--warmup",
        "0",
        *_remote_options(device, device_python),
        "--out",
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "PYTHONPATH": str(TREE), "TMPDIR": str(local_tmp)}
    pipe = subprocess.PIPE
    bench = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe, text=True, env=env, preexec_fn=_ctrl_c_as_a_shell
    )
    return bench, local_tmp


def _ctrl_c_as_a_shell() -> None:
    """SIGINT as an interactive shell gives a command it starts: the default, which Python makes KeyboardInterrupt.

    An ignored signal stays ignored across exec, and Python installs its handler only where SIGINT is not ignored:
    a suite started in the background (``make test &``, ``nohup``) would hand the bench an ignored SIGINT, and
    the SIGINT test would wait on a process that never heard it (measured: it did, twice).
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _device_processes(device) -> list[str]:
    """``ps`` on the "device", through a fresh connection: every process of a benchmark run in its temp folder.

    The remote shell names the folder in its arguments; the launcher, the measuring process and its
    workers have ``TMPDIR`` pointing into it (``ps e`` shows the environment).
    """
    ssh = SSH(RemoteConfig(device.destination, ssh_key=str(device.user_key), known_hosts=str(device.known_hosts)))
    listing = ssh.run("ps -eww -o pid= -o args= e", step="listing processes", timeout=30)
    assert listing.returncode == 0, listing.stderr
    marker = f"{device.device_tmp}/edgecls-bench."
    return [line.strip()[:160] for line in listing.stdout.splitlines() if marker in line and "ps -eww" not in line]


def _wait_until_measuring(device, bench: subprocess.Popen) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert bench.poll() is None, bench.communicate()
        if any("--worker" in line for line in _device_processes(device)):
            return
        time.sleep(0.3)
    raise AssertionError("the benchmark never started on the device")


def _assert_nothing_left(device, local_tmp: Path) -> None:
    deadline = time.monotonic() + 5
    while (left := _device_processes(device)) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert left == [], left
    assert list(device.device_tmp.iterdir()) == []
    assert list(local_tmp.iterdir()) == []  # edgecls-eval-*, edgecls-stage-*


def _session_sshds(listener: int) -> list[int]:
    """The per-connection sshd processes under the listening one."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            comm = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
        except (OSError, IndexError):
            continue
        parents[int(stat.parent.name)] = (int(fields[1]), comm)
    found, frontier = [], [listener]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in parents.items() if ppid == parent]
        found += [pid for pid in children if parents[pid][1].startswith("sshd")]
        frontier += children
    return found


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "dropped connection"])
def test_a_stopped_bench_stops_on_the_device(device, device_python, digits_run, tmp_path, how):
    bench, local_tmp = _start_bench(device, device_python, digits_run.tflite, tmp_path)
    try:
        _wait_until_measuring(device, bench)
        if how == "dropped connection":
            for pid in _session_sshds(device.server.pid):
                with contextlib.suppress(ProcessLookupError):  # gone with its parent
                    os.kill(pid, signal.SIGKILL)
        else:
            bench.send_signal(getattr(signal, how))
        try:
            stdout, stderr = bench.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # say where it hung: the CLI's own progress lines
            bench.kill()
            _, stderr = bench.communicate()
            pytest.fail(f"edgecls bench had not exited 60 s after {how}; its stderr ends: {stderr[-2000:]!r}")
    finally:
        bench.kill()
    expected = {"SIGINT": (130, "interrupted"), "SIGTERM": (143, "terminated")}
    if how in expected:
        assert (bench.returncode, stderr.strip()) == expected[how]
    else:
        assert bench.returncode == 2 and stderr.count("\n") == 1, stderr
        expected_line = f"error: SSH connection to {device.destination} failed or dropped while running the benchmark"
        assert stderr.startswith(expected_line), stderr
    assert stdout == "" and not (tmp_path / "out").exists()
    _assert_nothing_left(device, local_tmp)


def test_a_killed_workstation_still_stops_the_device(device, device_python, digits_run, tmp_path):
    # kill -9: no cleanup runs here; the device's launcher sees its stdin end when the orphaned ssh forwards the EOF.
    bench, local_tmp = _start_bench(device, device_python, digits_run.tflite, tmp_path)
    try:
        _wait_until_measuring(device, bench)
        bench.kill()
        bench.communicate(timeout=30)
    finally:
        bench.kill()
    shutil.rmtree(local_tmp)  # what a killed process cannot remove
    local_tmp.mkdir()
    _assert_nothing_left(device, local_tmp)


# --- one line for each fault ------------------------------------------------------------


def test_a_home_relative_remote_python_is_expanded_on_the_device(device, device_python, digits_run):
    installed = device.home / "edgecls" / "bin"
    installed.mkdir(parents=True, exist_ok=True)
    (installed / "python").symlink_to(device_python)
    run = _quick(_config(device, device_python, remote_python="~/edgecls/bin/python"), digits_run.tflite)
    assert run.results[0].runs == 2


def test_ssh_leaves_the_callers_stdin_alone(device, device_python, digits_run, tmp_path):
    # while read host; do edgecls bench … --remote "$host"; done < hosts.txt: every line must still be there.
    bench = shlex.join(
        [
            *CLI,
            "bench",
            str(digits_run.tflite),
            "--runs",
            "2",
            "--warmup",
            "0",
            *_remote_options(device, device_python),
            "--out",
            str(tmp_path / "out"),
            "--json",
        ]
    )
    loop = f'while read host; do {bench} >/dev/null || exit 1; echo "done $host"; done'
    env = {**os.environ, "PYTHONPATH": str(TREE)}
    lines = "pi-1\npi-2\n"
    completed = subprocess.run(["sh", "-c", loop], input=lines, capture_output=True, text=True, env=env, timeout=120)
    assert completed.stdout.splitlines() == ["done pi-1", "done pi-2"], completed.stderr


def _fake_device_python(tmp_path, device_python, benchmark_step: str) -> str:
    """A device Python that does ``benchmark_step`` (sh) instead of measuring; the runtime check is real."""
    fake = tmp_path / "fake-python"
    real = shlex.quote(device_python)
    fake.write_text(f'#!/bin/sh\nif [ "$#" -gt 2 ]; then\n{benchmark_step}\nfi\nexec {real} "$@"\n')
    fake.chmod(0o755)
    return str(fake)


def test_bytes_that_are_not_utf8_are_shown_replaced(device, device_python, digits_run, tmp_path):
    fake = _fake_device_python(tmp_path, device_python, r"printf 'bad \377\376 bytes \033[2J\n' >&2; exit 3")
    with pytest.raises(RemoteError, match=r"exit status 3\): bad \ufffd\ufffd bytes \\x1b\[2J"):
        _quick(_config(device, device_python, remote_python=fake), digits_run.tflite)
    assert list(device.device_tmp.iterdir()) == []


def _device_document(where: str = "a pi", model: str = "model0.tflite") -> dict:
    stats = {"min": 1.0, "p50": 1.0, "p90": 1.0, "p99": 1.0, "mean": 1.0, "std": 0.0}
    result = {
        "model": model,
        "engine": "litert",
        "engine_version": "2",
        "provider": "cpu",
        "threads": 4,
        "precision": "fp32",
        "input_dtype": "float32",
        "runs": 2,
        "warmup": 0,
        "load_ms": 1.0,
        "cold_start_ms": 1.0,
        "latency_ms": stats,
        "fps": 1000.0,
        "e2e_ms": 1.0,
        "e2e_latency_ms": stats,
        "peak_rss_mb": 50.0,
        "baseline_rss_mb": 40.0,
        "size_bytes": 1000,
        "samples_ms": [1.0, 1.0],
        "where": where,
    }
    settings = {"runs": 2, "warmup": 0, "threads": 4}
    state = {"kind": "raspberry-pi", "soc_temp_c": "hot", "power_mode": 7}  # odd types from an odd device
    return {
        "target": "rpi5",
        "where": where,
        "on_target": True,
        "machine": {"hostname": "pi"},
        "settings": settings,
        "results": [result],
        "device_state": state,
    }


def _with(document: dict, **fields) -> dict:
    return {**document, "results": [{**document["results"][0], **fields}]}


@pytest.mark.parametrize(
    "printed, problem",
    [
        ("[]", "expected a JSON object"),
        (json.dumps({**_device_document(), "results": [1]}), r"results\[0\]: expected an object"),
        (
            json.dumps(_with(_device_document(), fps="fast")),
            r"results\[0\]\.fps: expected a number, got a string 'fast'",
        ),
        (json.dumps(_with(_device_document(), latency_ms={"p50": 1.0})), r"results\[0\]\.latency_ms\.min is missing"),
        ("Welcome to the pi!", "Expecting value"),
        (
            json.dumps(_device_document(model="x.tflite")),
            r"reported models \['x\.tflite'\], not the \['model0\.tflite'\]",
        ),
    ],
)
def test_malformed_results_from_the_device_write_nothing(device, device_python, digits_run, tmp_path, printed, problem):
    from typer.testing import CliRunner

    from edgecls.cli import app

    document = tmp_path / "printed.json"
    document.write_text(printed + "\n")
    fake = _fake_device_python(tmp_path, device_python, f"cat {shlex.quote(str(document))}; exit 0")
    arguments = [
        "bench",
        str(digits_run.tflite),
        "--runs",
        "2",
        "--warmup",
        "0",
        *_remote_options(device, fake),
        "--out",
        str(tmp_path / "out"),
    ]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert re.match(f"error: .*{problem}", result.output), result.output
    assert not (tmp_path / "out").exists()


def test_a_banner_before_the_result_and_escape_codes_in_it_are_harmless(device, device_python, digits_run, tmp_path):
    document = tmp_path / "printed.json"
    document.write_text("Welcome to the pi!\n" + json.dumps(_device_document(where="a \x1b]0;pwned\x07 pi")) + "\n")
    fake = _fake_device_python(tmp_path, device_python, f"cat {shlex.quote(str(document))}; exit 0")
    run = _quick(_config(device, device_python, remote_python=fake), digits_run.tflite)
    assert run.where == "a \\x1b]0;pwned\\x07 pi, over SSH" and run.results[0].model == str(digits_run.tflite)
    from edgecls.bench.report import write_reports

    paths = write_reports(run, tmp_path / "out")  # a device_state of odd types still renders
    assert "soc_temp_c hot, power mode 7" in paths["markdown"].read_text()


def test_a_changed_host_key_is_named_as_such(device, device_python, digits_run, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    changed = tmp_path / "known hosts"
    changed.write_text(f"[127.0.0.1]:{device.port} {' '.join(Path(f'{other}.pub').read_text().split()[:2])}\n")
    for accept_new in (False, True):
        config = _config(device, device_python, known_hosts=str(changed), accept_new_host_key=accept_new)
        with pytest.raises(RemoteError) as raised:
            measure_remote(config, models=[digits_run.tflite], target=get_target("rpi5"), runs=2, warmup=0)
        message = str(raised.value)
        assert "host key has CHANGED" in message and "intercepting" in message and "\n" not in message
        assert f"ssh-keygen -f {shlex.quote(str(changed))} -R '[127.0.0.1]:{device.port}'" in message
        assert "never accepts a changed key" in message


def test_known_hosts_dev_null_with_accept_new_says_nothing_is_checked(device, device_python, digits_run, caplog):
    config = _config(device, device_python, known_hosts="/dev/null", accept_new_host_key=True)
    with caplog.at_level(logging.WARNING, logger="edgecls.runtime.remote"):
        measure_remote(config, models=[digits_run.tflite], target=get_target("host"), runs=2, warmup=0)
    assert "accepts any host key and keeps none" in caplog.text


def test_a_device_tmpdir_with_a_space_works_and_is_removed(device, device_python, digits_run):
    assert " " in device.device_tmp.name  # the loopback sshd sets TMPDIR so
    _quick(_config(device, device_python), digits_run.tflite)
    assert list(device.device_tmp.iterdir()) == []


def test_a_device_without_sftp(device_python, digits_run, tmp_path):
    with loopback_sshd(tmp_path / "sshd", sftp=False) as bare:
        run = _quick(_config(bare, device_python), digits_run.tflite)
        assert run.results[0].runs == 2 and list(bare.device_tmp.iterdir()) == []


@pytest.mark.parametrize(
    "remote_python, message",
    [
        ("python3 'x", r"--remote-python \"python3 'x\": No closing quotation"),
        ("-c", "must start with a Python interpreter, not an option: got '-c'"),
        ("", "must name a Python interpreter"),
    ],
)
def test_remote_python_that_cannot_be_a_command(digits_run, tmp_path, remote_python, message):
    from typer.testing import CliRunner

    from edgecls.cli import app

    arguments = ["bench", str(digits_run.tflite), "--remote", "pi@127.0.0.1:1", "--remote-python", remote_python]
    arguments += ["--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert re.search(message, result.output), result.output


def test_an_ssh_key_path_with_percent_and_space(device, tmp_path):
    key = tmp_path / "keys %d" / "id %h"
    key.parent.mkdir()
    shutil.copyfile(device.user_key, key)
    key.chmod(0o600)
    ssh = SSH(RemoteConfig(device.destination, ssh_key=str(key), known_hosts=str(device.known_hosts)))
    completed = ssh.run("echo ok", step="testing", timeout=30)
    assert (completed.returncode, completed.stdout) == (0, "ok\n"), completed.stderr


# --- a fleet: several devices in one bench ------------------------------------------------


def test_remotes_carry_their_targets(tmp_path):
    from edgecls.bench import load_fleet, parse_remotes

    defaults = RemoteConfig("", ssh_key="/k", remote_python="py")
    devices = parse_remotes(["pi@a=rpi5", "pi@b:2222"], defaults=defaults)
    found = [(d.remote.destination, d.target, d.remote.ssh_key) for d in devices]
    assert found == [("pi@a", "rpi5", "/k"), ("pi@b:2222", None, "/k")]
    with pytest.raises(ConfigError, match="nothing after '='"):
        parse_remotes(["pi@a="], defaults=defaults)
    with pytest.raises(ConfigError, match="--remote must look like"):
        parse_remotes(["pi@a;reboot=rpi5"], defaults=defaults)
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        '[fleet]\ntarget = "rpi5"\nremote_python = "~/edgecls/bin/python"\n\n'
        '[[fleet.device]]\nremote = "pi@pi4"\ntarget = "rpi4"\nssh_key = "keys/pi"\n\n'
        '[[fleet.device]]\nremote = "jetson@orin:2222"\nremote_python = "python3"\n'
    )
    devices = load_fleet(fleet, defaults=defaults)
    assert [(d.remote.destination, d.target, d.remote.remote_python, d.remote.ssh_key) for d in devices] == [
        ("pi@pi4", "rpi4", "~/edgecls/bin/python", str(tmp_path / "keys" / "pi")),
        ("jetson@orin:2222", "rpi5", "python3", "/k"),
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ('[fleet]\n[[fleet.device]]\nremote = "pi@a"\nhost = "x"\n', "unknown key 'host'; valid keys: remote, target"),
        ('[fleet]\ntarget = "rpi5"\n', "no devices"),
        ('[[device]]\nremote = "pi@a"\n', r"expected one \[fleet\] table"),
        ('[fleet]\n[[fleet.device]]\ntarget = "rpi5"\n', "no remote ="),
        ("[fleet]\n[[fleet.device]]\nremote = 7\n", "remote must be a string"),
        ("[fleet\n", "cannot be read"),
    ],
)
def test_bad_fleet_files_are_one_line(tmp_path, text, message):
    from edgecls.bench import load_fleet

    fleet = tmp_path / "fleet.toml"
    fleet.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_fleet(fleet, defaults=RemoteConfig(""))


def test_a_fleet_with_a_device_twice_or_an_unknown_target_contacts_nothing(digits_run, tmp_path):
    from typer.testing import CliRunner

    from edgecls.cli import app

    base = ["bench", str(digits_run.tflite), "--out", str(tmp_path / "out")]
    twice = CliRunner().invoke(app, [*base, "--remote", "pi@127.0.0.1:1", "--remote", "pi@127.0.0.1:1=rpi4"])
    assert twice.exit_code == 2 and "listed twice" in twice.output, twice.output
    unknown = CliRunner().invoke(app, [*base, "--remote", "pi@127.0.0.1:1", "--remote", "pi@127.0.0.2:1=rpi9"])
    assert unknown.exit_code == 2 and "rpi9" in unknown.output, unknown.output
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def second_device(tmp_path_factory):
    reason = missing_reason()
    if reason:
        pytest.skip(f"no OpenSSH server for the loopback test: {reason}")
    with loopback_sshd(tmp_path_factory.mktemp("sshd-b")) as server:
        yield server


def _fleet_file(tmp_path, devices: list[tuple]) -> Path:
    """A fleet file: (server, remote_python, target) per device."""
    text = "[fleet]\n"
    for server, python, target in devices:
        text += (
            f'\n[[fleet.device]]\nremote = "{server.destination}"\ntarget = "{target}"\n'
            f'remote_python = "{python}"\nssh_key = "{server.user_key}"\nknown_hosts = "{server.known_hosts}"\n'
        )
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(text)
    return fleet


def _local_processes_in(folder: Path) -> list[str]:
    """Processes here whose arguments or environment name ``folder`` (the loopback "devices" run on this machine)."""
    listing = subprocess.run(
        ["ps", "-eww", "-o", "pid=", "-o", "args=", "e"], capture_output=True, text=True, check=True
    )
    marker = f"{folder}/edgecls-bench."
    return [line.strip()[:160] for line in listing.stdout.splitlines() if marker in line and "ps -eww" not in line]


def _assert_device_clean(server) -> None:
    deadline = time.monotonic() + 10
    while (_local_processes_in(server.device_tmp) or list(server.device_tmp.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert _local_processes_in(server.device_tmp) == []
    assert list(server.device_tmp.rglob("*")) == []


@pytest.mark.slow
def test_a_fleet_of_two_devices_gives_one_table_and_equal_top1(
    device, second_device, device_python, digits_run, tmp_path
):
    from typer.testing import CliRunner

    from edgecls.cli import app

    fleet = _fleet_file(tmp_path, [(device, device_python, "rpi5"), (second_device, device_python, "rpi4")])
    arguments = [
        "bench",
        str(digits_run.tflite),
        "--fleet",
        str(fleet),
        "--data",
        "digits",
        "--runs",
        str(RUNS),
        "--warmup",
        str(WARMUP),
        "--out",
        str(tmp_path / "out"),
        "--json",
    ]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [d["remote"] for d in document["devices"]] == [device.destination, second_device.destination]
    assert [d["status"] for d in document["devices"]] == ["ok", "ok"] and document["failed"] == []
    runs = [d["run"] for d in document["devices"]]
    assert [run["target"] for run in runs] == ["rpi5", "rpi4"]
    assert [run["remote"] for run in runs] == [device.destination, second_device.destination]
    top1 = [run["results"][0]["top1"] for run in runs]
    assert top1[0] == top1[1] > 0.5 and all(run["results"][0]["n_eval"] > 0 for run in runs)
    saved = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert [d["remote"] for d in saved["devices"]] == [device.destination, second_device.destination]
    markdown = (tmp_path / "out" / "bench.md").read_text()
    assert (
        markdown.count(f"| {device.destination} | rpi5 | ") == 1
        and f"| {second_device.destination} | rpi4 | " in markdown
    )
    for server in (device, second_device):
        _assert_device_clean(server)


@pytest.mark.slow
def test_a_device_dropped_mid_run_is_one_failure_line_and_the_other_completes(device_python, digits_run, tmp_path):
    # A device of its own, to stop its sshd mid-run; its Python measures (really) far longer than the other's.
    endless = _fake_device_python(tmp_path, device_python, ":")
    Path(endless).write_text(Path(endless).read_text().replace('"$@"\n', '"$@" --runs 100000000\n'))
    with loopback_sshd(tmp_path / "sshd-a") as healthy, loopback_sshd(tmp_path / "sshd-b") as doomed:
        fleet = _fleet_file(tmp_path, [(healthy, device_python, "rpi5"), (doomed, endless, "rpi5")])
        command = [
            *CLI,
            "bench",
            str(digits_run.tflite),
            "--fleet",
            str(fleet),
            "--runs",
            str(RUNS),
            "--warmup",
            "0",
            "--out",
            str(tmp_path / "out"),
        ]
        env = {**os.environ, "PYTHONPATH": str(TREE), "COLUMNS": "250"}
        pipe = subprocess.PIPE
        bench = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe, text=True, env=env)
        try:
            deadline = time.monotonic() + 90
            while not any("--worker" in line for line in _local_processes_in(doomed.device_tmp)):
                assert bench.poll() is None and time.monotonic() < deadline, bench.communicate()
                time.sleep(0.3)
            sessions = _session_sshds(doomed.server.pid)
            doomed.server.kill()  # the "device" goes away: its listener and its open connections
            for pid in sessions:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            stdout, stderr = bench.communicate(timeout=90)
        finally:
            bench.kill()
        assert bench.returncode == 1, stderr
        failures = [line for line in stderr.splitlines() if line.startswith("failed: ")]
        assert len(failures) == 1 and failures[0].startswith(f"failed: {doomed.destination} (rpi5): SSH connection"), (
            stderr
        )
        assert "failed or dropped while running the benchmark" in failures[0]
        saved = json.loads((tmp_path / "out" / "bench.json").read_text())
        assert [d["status"] for d in saved["devices"]] == ["ok", "failed"] and saved["failed"] == [doomed.destination]
        assert saved["devices"][0]["run"]["results"][0]["runs"] == RUNS
        assert f"{healthy.destination} " in stdout and "FAILED" in stdout
        for server in (healthy, doomed):
            _assert_device_clean(server)


@pytest.mark.slow
def test_sigterm_stops_every_device_of_a_fleet(device, second_device, device_python, digits_run, tmp_path):
    command = [
        *CLI,
        "bench",
        str(digits_run.tflite),
        "--runs",
        "100000000",
        "--warmup",
        "0",
        "--out",
        str(tmp_path / "out"),
        "--fleet",
        str(_fleet_file(tmp_path, [(device, device_python, "rpi5"), (second_device, device_python, "rpi4")])),
    ]
    env = {**os.environ, "PYTHONPATH": str(TREE)}
    pipe = subprocess.PIPE
    bench = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe, text=True, env=env)
    try:
        deadline = time.monotonic() + 90
        while not all(
            any("--worker" in line for line in _local_processes_in(s.device_tmp)) for s in (device, second_device)
        ):
            assert bench.poll() is None and time.monotonic() < deadline, bench.communicate()
            time.sleep(0.3)
        bench.send_signal(signal.SIGTERM)
        stdout, stderr = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert (bench.returncode, stderr.strip(), stdout) == (143, "terminated", "")
    assert not (tmp_path / "out").exists()
    for server in (device, second_device):
        _assert_device_clean(server)
