"""A Raspberry Pi in a box: the device side installed from the wheel and run on Pi OS' own userland and instruction
set (qemu-user), and over SSH, against the same artifacts scored here on x86.

``tests/box/build.py`` builds and caches the boxes (Pi OS 64-bit: arm64; Pi OS 32-bit: armhf); a session
reinstalls only the edgecls wheel of this tree. In each box one driver process (``tests/box/driver.py``:
emulated Python starts slowly) scores every image with every artifact, and runs ``edgecls --help``, ``targets``,
``info``, ``evaluate`` and ``bench`` as the console script. Required: top-1 per image equal to x86's, per-image
scores within ``TOLERANCE`` of x86's, exit 0 and no traceback, no TensorFlow imported, and the emulation named.

Skipped, with the reason, only where this machine cannot run a box: not root, no qemu-user-static /
binfmt_misc, no debootstrap (``.ci/run`` installs them). ``EDGECLS_BOX_REPORT=FILE`` writes the measured
figures (build and start times, sizes, resolved versions, every artifact's agreement) there as JSON.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from box.artifacts import Artifacts, make_artifacts
from box.build import CAMERA_VENV, RECIPES, VENV, Box, BoxUnavailable, build_wheel, get_box, unavailable_reason
from loopback_sshd import loopback_sshd
from loopback_sshd import missing_reason as sshd_missing

import edgecls

pytestmark = pytest.mark.slow

TREE = Path(edgecls.__file__).resolve().parents[1]
DRIVER = Path(__file__).parent / "box" / "driver.py"
BOXES = ("pios64", "pios32")
# Largest allowed |box score - x86 score| of one class on one image (softmax scores, 0..1).
# Through LiteRT's reference kernels (plain C++) an ARM box must compute what x86 computes with the same LiteRT
# release: INT8 to the bit (integer arithmetic), FP32/FP16 to float rounding (sums in another order: measured 8e-7).
REFERENCE_TOLERANCE = {"fp32": 1e-5, "fp16": 1e-5, "int8": 0.0}
# Through what a user runs (Classifier: the optimised kernels), FP32 and FP16 (FP16 weights are dequantised and
# computed in FP32) differ by float rounding only: 1e-3 leaves a wide margin and still catches a wrong kernel.
# INT8 kernels requantise with their own rounding: one step of difference in an early depthwise convolution grows
# through a deep network. On this machine alone LiteRT's two x86 kernel families (XNNPACK, built-in) differ by
# up to 0.086 on the INT8 MobileNetV3 (22 output steps). A box may differ from x86 by that spread of the artifact
# (measured here for each) plus INT8_STEPS output steps (ONNX Runtime's ARM and x86 kernels: 3 measured; the
# MobileNetV3-Small trained with issue 26's defaults, tflite_runtime 2.14 on armv7l: 5 beyond x86's spread).
USER_TOLERANCE = {"fp32": 1e-3, "fp16": 1e-3}
INT8_STEPS = 8 / 255  # steps of the softmax output: 1/256 in LiteRT, 1/255 in ONNX Runtime's QDQ
# ... but never below INT8_FLOOR: LiteRT's aarch64/armv7l optimised INT8 kernels differ from x86's by more than x86's
# two families do from each other on some retrained models (measured on MobileNetV3-Small INT8 trained with issue
# 26's defaults: 0.066, 0.070 and 0.109 where x86's spread was 0.047, 0.012 and 0.059). The ISA itself is held to the
# bit through the reference kernels above; 0.15 stays below NEAR_TIE, so a clearly decided image cannot flip.
INT8_FLOOR = 0.15
# An image whose two best x86 scores are closer than this may take either class on another engine, thread count or
# ISA: an INT8 top-1 is compared only where x86 decided it by more (measured: a retrained MobileNetV3-Small's INT8
# scores moved by up to 0.109 between LiteRT's aarch64 kernels and x86's built-in ones, and one of 24 images, x86
# margin 0.113, took the other class in a 4-thread bench). At most a quarter of the images may be that close, so the
# comparisons keep their teeth (a model near chance fails here).
NEAR_TIE = {"int8": 0.25, "fp32": 1e-3, "fp16": 1e-3}
MOST_NEAR_TIES = 0.25
CLI_RUNS, CLI_WARMUP = 3, 1  # emulated latency means nothing: bench proves the path, not the speed
REPORT = os.environ.get("EDGECLS_BOX_REPORT")
# The reference kernels change between LiteRT releases: tflite-runtime 2.14's INT8 FULLY_CONNECTED (and others)
# round one step apart from ai-edge-litert 2.3.0's on some inputs (measured on the fixture's cnn INT8: 8 of 424
# images one step apart at the hidden layer, 3 output steps on one image; a CI run's MobileNetV3-Small INT8: 10
# steps), while armv7l's 2.14 and x86's 2.14 were equal to the bit on every tensor of all three INT8 artifacts. The
# ISA is therefore compared with the release the box resolved, scored here by this Python (make test: a venv with
# the armv7l box's tflite-runtime, Makefile ARMV7_TFLITE) when it is not the one this session runs.
TFLITE_RUNTIME_PYTHON = os.environ.get("EDGECLS_TFLITE_RUNTIME_PYTHON", "")


def _report(key: str, value) -> None:
    if REPORT:
        path = Path(REPORT)
        document = json.loads(path.read_text()) if path.is_file() else {}
        document[key] = value
        path.write_text(json.dumps(document, indent=2))


def _decided(scores, precision: str) -> np.ndarray:
    """Which images x86 decided by more than ``NEAR_TIE`` (top-1 minus top-2); fails when over a quarter are not."""
    ranked = np.sort(np.asarray(scores), axis=1)
    decided = ranked[:, -1] - ranked[:, -2] >= NEAR_TIE[precision]
    assert np.mean(~decided) <= MOST_NEAR_TIES, (precision, float(np.mean(~decided)))
    return decided


def _slack(x86_entry: dict, model: str) -> float:
    """How far a top-1 rate may move on another engine: the share of images x86 did not decide clearly (plus float
    rounding of the rate)."""
    precision = Path(model).name.rsplit(".", 1)[0].rsplit("_", 1)[1]
    return float(np.mean(~_decided(x86_entry["scores"], precision))) + 1e-9


# --- x86 side -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Artifacts:
    for name in BOXES:
        reason = unavailable_reason(RECIPES[name])
        if reason:
            pytest.skip(f"no box here: {reason}")
    made = make_artifacts(tmp_path_factory.mktemp("box-artifacts"))
    _report("artifacts", {"seconds": made.seconds, "val_accuracy": made.val_accuracy, "files": sorted(made.files)})
    return made


def _job(folder: str, models: list[str], cli: list[list[str]], target: str) -> dict:
    return {"models": [f"{folder}/{name}" for name in models], "data": f"{folder}/eval", "cli": cli, "target": target}


def _drive_here(python: str, models: list[Path], kernels: list[str], data: Path, work: Path) -> dict:
    """The box driver run here by ``python`` (this tree on its path): its whole output."""
    job = {"models": [str(path) for path in models], "data": str(data), "cli": [], "kernels": kernels}
    (work / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": str(TREE)}
    subprocess.run([python, str(DRIVER), str(work / "job.json"), str(work / "out.json")], check=True, env=env)
    return json.loads((work / "out.json").read_text())


def _litert(versions: dict) -> tuple[str, str]:
    """Which LiteRT a driver ran: (distribution, version)."""
    return next((name, versions[name]) for name in ("ai-edge-litert", "tflite-runtime") if name in versions)


@pytest.fixture(scope="module")
def x86_run(artifacts, tmp_path_factory) -> dict:
    """The same driver, here: every artifact's scores from the x86 engines, and their versions."""
    models = list(artifacts.files.values())
    return _drive_here(
        sys.executable, models, ["builtin", "reference"], artifacts.eval_dir, tmp_path_factory.mktemp("x86")
    )


@pytest.fixture(scope="module")
def x86(x86_run) -> dict:
    return _by_name(x86_run)


@pytest.fixture(scope="module")
def x86_tflite_runtime(artifacts, tmp_path_factory) -> dict | None:
    """The driver run here by ``TFLITE_RUNTIME_PYTHON`` (unset: ``None``): each ``.tflite``'s reference kernels."""
    if not TFLITE_RUNTIME_PYTHON:
        return None
    models = [path for name, path in artifacts.files.items() if name.endswith(".tflite")]
    work = tmp_path_factory.mktemp("x86-tflite-runtime")
    return _drive_here(TFLITE_RUNTIME_PYTHON, models, ["reference"], artifacts.eval_dir, work)


def _x86_reference(box_run: dict, x86_run: dict, x86_tflite_runtime: dict | None) -> dict:
    """Each ``.tflite``'s reference-kernel scores on x86 through the LiteRT release the box resolved."""
    wanted = _litert(box_run["versions"])
    if wanted == _litert(x86_run["versions"]):
        return _by_name(x86_run)
    if x86_tflite_runtime is None:
        pytest.skip(f"the box runs {wanted[0]} {wanted[1]}: set EDGECLS_TFLITE_RUNTIME_PYTHON (make test does)")
    here = _litert(x86_tflite_runtime["versions"])
    assert here == wanted, (
        f"the box resolved {wanted}, {TFLITE_RUNTIME_PYTHON} has {here}: update Makefile ARMV7_TFLITE"
    )
    return _by_name(x86_tflite_runtime)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


# --- a box --------------------------------------------------------------------------------------------------


_OPENED: dict[str, tuple[Box, dict]] = {}


def _open_box(name: str, wheel: Path) -> tuple[Box, dict]:
    """The box (built when its cache lacks it) with this tree's wheel, once a session: and how long each part took."""
    if name not in _OPENED:
        _OPENED[name] = _open(name, wheel)
    return _OPENED[name]


def _open(name: str, wheel: Path) -> tuple[Box, dict]:
    started = time.monotonic()
    try:
        box = get_box(name)
    except BoxUnavailable as exc:
        pytest.skip(f"no {name} box here: {exc}")
    ready = time.monotonic() - started
    install = box.install_wheel(wheel)
    return box, {"get_box_s": round(ready, 1), "install_wheel_s": round(install, 1)}


def _cli_calls(models: list[str], target: str) -> list[list[str]]:
    folder = "work"
    calls = [["--help"], ["targets"]]
    calls += [["info", f"{folder}/{name}"] for name in models]
    calls += [["evaluate", f"{folder}/{name}", "--data", f"{folder}/eval", "--json"] for name in models]
    bench = ["bench", *(f"{folder}/{name}" for name in models), "--target", target, "--data", f"{folder}/eval"]
    bench += ["--runs", str(CLI_RUNS), "--warmup", str(CLI_WARMUP), "--out", f"{folder}/bench", "--json"]
    return [*calls, bench]


@pytest.fixture(scope="module", params=BOXES)
def box_run(request, artifacts, wheel) -> dict:
    """One box, its driver's output over every artifact its engines read, and the timings."""
    box, timings = _open_box(request.param, wheel)
    has_onnx = "onnxruntime" in box.record["packages"]
    models = artifacts.named(suffixes=(".tflite", ".onnx") if has_onnx else (".tflite",))
    work = box.host_path(f"/home/pi/work-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    (work / "work").mkdir(parents=True)
    for name in models:
        shutil.copyfile(artifacts.files[name], work / "work" / name)
    shutil.copytree(artifacts.eval_dir, work / "work" / "eval")
    shutil.copyfile(DRIVER, work / "driver.py")
    there = f"/home/pi/{work.name}"
    job = _job("work", models, _cli_calls(models, box.recipe.target), box.recipe.target)
    job["kernels"] = ["reference"]
    (work / "job.json").write_text(json.dumps(job))
    subprocess.run(["chown", "-R", "1000:1000", str(work)], check=True)  # the box's first user, pi
    started = time.monotonic()
    try:
        completed = box.run(
            ["sh", "-c", f"cd {shlex.quote(there)} && exec {VENV}/bin/python driver.py job.json out.json"],
            check=False,
            timeout=1500,
        )
        assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
        result = json.loads((work / "out.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    timings["driver_s"] = round(time.monotonic() - started, 1)
    result["timings"], result["record"], result["box"] = timings, box.record, box
    result["driver_stderr"] = completed.stderr
    result["models"] = models
    return result


def _by_name(result: dict) -> dict:
    return {Path(model).name: scored for model, scored in result["scores"].items()}


def _difference(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def test_the_arm_kernels_compute_what_x86_computes(box_run, x86_run, x86_tflite_runtime, artifacts):
    """LiteRT's reference kernels in the box against the same release's on x86: the ISA alone."""
    name = box_run["box"].recipe.name
    here = _x86_reference(box_run, x86_run, x86_tflite_runtime)
    table = {}
    for model, scored in _by_name(box_run).items():
        if model.endswith(".tflite"):
            table[model] = _difference(scored["scores_reference"], here[model]["scores_reference"])
    _report(f"reference kernels {name}", {"litert": list(_litert(box_run["versions"])), **table})
    assert len(table) == 7  # FP32, FP16, INT8 of each model, and MobileNetV3-Small's QAT INT8
    for model, difference in table.items():
        assert difference <= REFERENCE_TOLERANCE[artifacts.precision(model)], (model, difference)


def test_every_artifact_agrees_with_x86(box_run, x86, artifacts):
    """What a user runs (Classifier) in the box against what the workstation reports: top-1 image by image."""
    name = box_run["box"].recipe.name
    table = {}
    for model, scored in _by_name(box_run).items():
        here = x86[model]
        assert scored["images"] == here["images"] and scored["labels"] == here["labels"], model
        box_scores, x86_scores = np.asarray(scored["scores"]), np.asarray(here["scores"])
        truth = np.asarray([here["labels"].index(image.split("/")[0]) for image in here["images"]])
        ranked = np.sort(x86_scores, axis=1)
        decided = _decided(x86_scores, artifacts.precision(model))
        spread = _difference(here["scores_builtin"], here["scores"]) if model.endswith(".tflite") else 0.0
        table[model] = {
            "top1_box": float((box_scores.argmax(1) == truth).mean()),
            "top1_x86": float((x86_scores.argmax(1) == truth).mean()),
            "same_top1_images": int((box_scores.argmax(1) == x86_scores.argmax(1)).sum()),
            "same_top1_decided": int((box_scores.argmax(1) == x86_scores.argmax(1))[decided].sum()),
            "decided_images": int(decided.sum()),
            "images": len(truth),
            "max_difference": _difference(box_scores, x86_scores),
            "x86_kernel_spread": spread,  # XNNPACK against the built-in kernels, on x86
            "box_vs_x86_builtin": _difference(box_scores, here["scores_builtin"]) if "scores_builtin" in here else None,
            "smallest_x86_top1_margin": float((ranked[:, -1] - ranked[:, -2]).min()),
            "engine": f"{scored['engine']} ({scored['provider']})",
        }
    _report(f"agreement {name}", table)
    for model, row in table.items():
        # top-1 image by image, not just the rate, on every image x86 decided clearly
        assert row["same_top1_decided"] == row["decided_images"], (model, row)
        precision = artifacts.precision(model)
        int8_bound = max(row["x86_kernel_spread"] + INT8_STEPS, INT8_FLOOR)
        bound = int8_bound if precision == "int8" else USER_TOLERANCE[precision]
        assert row["max_difference"] <= bound + 1e-7, (model, row)  # 1e-7: float32 scores
        if model.endswith(".tflite"):  # XNNPACK needs /sys, which qemu-user cannot give it
            assert row["engine"].endswith("(CPU (built-in kernels))"), (model, row)
    assert len(table) == len(box_run["models"])


def test_the_device_commands_run_clean_without_tensorflow(box_run, x86):
    name = box_run["box"].recipe.name
    calls = box_run["cli"]
    for call in calls:
        assert call["code"] == 0, call
        assert "Traceback" not in call["stderr"] + call["stdout"], call
    assert box_run["heavy"] == [] and "Traceback" not in box_run["driver_stderr"], box_run["driver_stderr"][-3000:]
    help_text, targets = calls[0]["stdout"], calls[1]["stdout"]
    assert "bench" in help_text and "evaluate" in help_text and "rpi5" in targets
    infos = [call for call in calls if call["argv"][0] == "info"]
    assert len(infos) == len(box_run["models"]) and all("input" in call["stdout"].lower() for call in infos)
    evaluations = {Path(c["argv"][1]).name: json.loads(c["stdout"]) for c in calls if c["argv"][0] == "evaluate"}
    bench = json.loads(calls[-1]["stdout"])
    for model, document in evaluations.items():
        here = x86[model]
        truth = [here["labels"].index(image.split("/")[0]) for image in here["images"]]
        top1 = float((np.asarray(here["scores"]).argmax(1) == np.asarray(truth)).mean())
        assert document["top1"] == pytest.approx(top1, abs=_slack(here, model)), model
    for result in bench["results"]:
        assert result["engine_version"] in box_run["versions"].values(), result["engine_version"]
        name = Path(result["model"]).name
        assert result["top1"] == pytest.approx(evaluations[name]["top1"], abs=_slack(x86[name], name))
        assert result["emulated"] == f"{box_run['record']['machine']} under emulation on an x86_64 host"
        assert any("latency not meaningful" in note for note in result["notes"])
    assert "latency not meaningful" in bench["where"] and not bench["on_target"]
    _report(
        f"box {name}",
        {
            "timings": box_run["timings"],
            "import_s": box_run["import_s"],
            "total_driver_s": box_run["total_s"],
            "cli_s": {" ".join(c["argv"][:1] + [Path(a).name for a in c["argv"][1:2]]): c["s"] for c in calls},
            "versions": box_run["versions"],
            "record": box_run["record"],
            "placement": box_run["placement"],
        },
    )


def test_the_box_is_emulated_said_so_and_has_no_sys(box_run):
    machine = box_run["record"]["machine"]
    assert box_run["machine"]["arch"] == machine and box_run["python"].startswith("3.11")
    assert box_run["machine"]["emulated"] == f"{machine} under emulation on an x86_64 host"
    assert box_run["placement"]["label"].endswith("latency not meaningful") and not box_run["placement"]["on_device"]
    assert box_run["sys_entries"] == []  # XNNPACK segfaults under qemu-user when /sys is there
    versions = box_run["versions"]
    if box_run["box"].recipe.name == "pios32":
        assert "tflite-runtime" in versions and "onnxruntime" not in versions and "ai-edge-litert" not in versions
        assert versions["numpy"].startswith("1.") and versions["cv2"].startswith("4.")  # apt's, Debian 12
    else:
        assert "ai-edge-litert" in versions and "onnxruntime" in versions


# --- the box as a device over SSH -------------------------------------------------------------------------------


CLI = (sys.executable, "-c", "from edgecls.cli import main; main()")
REMOTE_PYTHON = "~/edgecls/bin/python"  # the README's device venv


@pytest.fixture(scope="module")
def sshd_boxes(wheel, tmp_path_factory):
    """Each box's own sshd on a loopback port, this tree's wheel installed in it."""
    reason = sshd_missing()
    if reason:
        pytest.skip(f"no OpenSSH client here: {reason}")
    import contextlib

    with contextlib.ExitStack() as stack:
        servers = {}
        for name in BOXES:
            box, _timings = _open_box(name, wheel)
            folder = box.host_path(f"/home/pi/sshd-{os.getpid()}")
            shutil.rmtree(folder, ignore_errors=True)
            stack.callback(shutil.rmtree, folder, True)
            servers[name] = (box, stack.enter_context(loopback_sshd(folder, box=box)))
        yield servers


def _remote(server, target: str) -> list[str]:
    return [
        "--remote",
        f"{server.destination}={target}",
        "--ssh-key",
        str(server.user_key),
        "--known-hosts",
        str(server.known_hosts),
        "--remote-python",
        REMOTE_PYTHON,
    ]


def _bench(arguments: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TREE), "COLUMNS": "250"}
    return subprocess.run([*CLI, "bench", *arguments], capture_output=True, text=True, timeout=timeout, env=env)


def test_bench_over_ssh_on_the_box_gives_the_local_top1(sshd_boxes, artifacts, tmp_path):
    from edgecls.runtime.measure import measure_models
    from edgecls.runtime.results import MeasureConfig
    from edgecls.runtime.targets import get_target

    box, server = sshd_boxes["pios64"]
    models = [str(artifacts.files["cnn_int8.tflite"]), str(artifacts.files["mobilenetv3small_fp32.onnx"])]
    local = measure_models(
        MeasureConfig(models=tuple(models), target=get_target("rpi5"), runs=2, warmup=0, data=str(artifacts.eval_dir))
    )
    arguments = [*models, *_remote(server, "rpi5"), "--data", str(artifacts.eval_dir), "--runs", "3", "--warmup", "1"]
    completed = _bench([*arguments, "--out", str(tmp_path / "out"), "--json"])
    assert completed.returncode == 0, completed.stderr[-3000:]
    run = json.loads(completed.stdout)
    assert [r["top1"] for r in run["results"]] == [r.top1 for r in local.results]
    assert run["where"].startswith("aarch64 under emulation on an x86_64 host with rpi5 settings")
    assert run["where"].endswith("over SSH") and run["machine"]["hostname"] == "pios64"
    assert list(server.device_tmp.iterdir()) == []
    _report("ssh bench pios64", {"top1": [r["top1"] for r in run["results"]], "where": run["where"]})


def test_a_fleet_of_both_boxes_and_an_x86_device(sshd_boxes, artifacts, x86, tmp_path):
    from test_remote import _fleet_file

    (_, pi64), (_, pi32) = sshd_boxes["pios64"], sshd_boxes["pios32"]
    shim = tmp_path / "x86-python"  # the x86 "device" runs this tree, as in test_remote
    shim.write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(str(TREE))} exec {shlex.quote(sys.executable)} "$@"\n')
    shim.chmod(0o755)
    models = [str(artifacts.files["cnn_int8.tflite"]), str(artifacts.files["mobilenetv3small_int8.tflite"])]
    with loopback_sshd(tmp_path / "x86-sshd") as pc:
        fleet = _fleet_file(
            tmp_path, [(pi64, REMOTE_PYTHON, "rpi5"), (pi32, REMOTE_PYTHON, "rpi4"), (pc, shim, "host")]
        )
        arguments = [*models, "--fleet", str(fleet), "--data", str(artifacts.eval_dir), "--runs", "3", "--warmup", "1"]
        completed = _bench([*arguments, "--out", str(tmp_path / "out")])
        saved = json.loads((tmp_path / "out" / "bench.json").read_text()) if completed.returncode == 0 else {}
    assert completed.returncode == 0, completed.stderr[-3000:]
    devices = saved["devices"]
    assert [d["status"] for d in devices] == ["ok", "ok", "ok"] and saved["failed"] == []
    top1 = [[result["top1"] for result in d["run"]["results"]] for d in devices]
    slack = [_slack(x86[Path(model).name], model) for model in models]
    for device in top1[:2]:  # each box against the x86 device, model by model
        assert all(abs(a - b) <= allowed for a, b, allowed in zip(device, top1[2], slack)), (top1, slack)
    engines = [[result["engine"] for result in d["run"]["results"]] for d in devices]
    assert engines == [["litert", "litert"], ["tflite_runtime", "tflite_runtime"], ["litert", "litert"]], engines
    emulated = [[result["emulated"] for result in d["run"]["results"]] for d in devices]
    assert (
        emulated[0][0].startswith("aarch64 under")
        and emulated[1][0].startswith("armv7l under")
        and emulated[2]
        == [
            "",
            "",
        ]
    )
    markdown = (tmp_path / "out" / "bench.md").read_text()
    assert "emulated CPU (qemu-user)" in markdown
    _report("ssh fleet", {"stdout": completed.stdout, "markdown": markdown, "top1": top1})


def _box_processes(box: Box, server) -> list[str]:
    """Processes whose arguments or environment name the box device's temporary folder (ps in the box)."""
    listing = box.run(["ps", "-eww", "-o", "pid=", "-o", "args=", "e"], check=True, step="ps")
    marker = f"{server.device_tmp_there}/edgecls-bench."
    return [line.strip()[:200] for line in listing.stdout.splitlines() if marker in line and "ps -eww" not in line]


def test_sigterm_leaves_nothing_on_the_box(sshd_boxes, artifacts, tmp_path):
    box, server = sshd_boxes["pios64"]
    local_tmp = tmp_path / "local tmp"
    local_tmp.mkdir()
    command = [*CLI, "bench", str(artifacts.files["cnn_int8.tflite"]), *_remote(server, "rpi5")]
    command += ["--runs", "100000000", "--warmup", "0", "--out", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(TREE), "TMPDIR": str(local_tmp)}
    pipe = subprocess.PIPE
    bench = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe, text=True, env=env)
    try:
        deadline = time.monotonic() + 300  # emulated Python: seconds per start
        running = _box_processes(box, server)
        while not any("--worker" in line for line in running):
            assert bench.poll() is None and time.monotonic() < deadline, bench.communicate()
            time.sleep(1)
            running = _box_processes(box, server)
        bench.send_signal(signal.SIGTERM)
        stdout, stderr = bench.communicate(timeout=120)
    finally:
        bench.kill()
    assert (bench.returncode, stderr.strip(), stdout) == (143, "terminated", "")
    deadline = time.monotonic() + 30
    while (left := _box_processes(box, server)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [] and list(server.device_tmp.iterdir()) == [] and list(local_tmp.iterdir()) == []
    assert not (tmp_path / "out").exists()
    _report("sigterm pios64", {"running_before": running, "returncode": bench.returncode, "left": left})


# --- the "Pi with a camera" install: apt's NumPy and OpenCV, a --system-site-packages venv, edgecls[picamera] ------


CAMERA_PROBE = Path(__file__).parent / "camera_probe.py"
APT_PACKAGES = "/usr/lib/python3/dist-packages"
# videotestsrc paced as a camera at 30 fps, small (emulated Python reads it), BGR into the appsink.
GST_BOX = (
    "gst://videotestsrc num-buffers={frames} pattern={pattern} is-live=true ! "
    "video/x-raw,width=64,height=48,framerate=30/1 ! videoconvert ! video/x-raw,format=BGR ! "
    "appsink drop=true max-buffers=1"
)
CAMERA_MODELS = ("cnn_int8.tflite", "cnn_int8.onnx", "mobilenetv3small_int8.tflite")


@pytest.fixture(scope="module")
def camera_box_run(artifacts, wheel, tmp_path_factory) -> dict:
    """The pios64 box's camera venv: this tree's wheel in it, then camera_probe.py over two GStreamer pipelines."""
    from conftest import channel_means_onnx

    box, _timings = _open_box("pios64", wheel)
    staged = box.host_path(f"/tmp/{wheel.name}")
    shutil.copyfile(wheel, staged)
    staged.chmod(0o644)
    try:
        reinstall = [f"{CAMERA_VENV}/bin/pip", "install", "-q", "--no-deps", "--force-reinstall", f"/tmp/{wheel.name}"]
        box.run(reinstall, env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"}, step="reinstalling the wheel (camera venv)")
    finally:
        staged.unlink(missing_ok=True)
    work = box.host_path(f"/home/pi/camera-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    channel_means_onnx(work / "means.onnx")
    for name in CAMERA_MODELS:
        shutil.copyfile(artifacts.files[name], work / name)
    shutil.copyfile(CAMERA_PROBE, work / "camera_probe.py")
    there = f"/home/pi/{work.name}"
    job = {
        "runs": [
            {"source": GST_BOX.format(frames=20, pattern="red"), "models": [f"{there}/means.onnx"]},
            {
                "source": GST_BOX.format(frames=4, pattern="smpte"),
                "models": [f"{there}/{name}" for name in CAMERA_MODELS],
                "first_frame": f"{there}/bars.png",
            },
        ]
    }
    (work / "job.json").write_text(json.dumps(job))
    subprocess.run(["chown", "-R", "1000:1000", str(work)], check=True)
    started = time.monotonic()
    try:
        completed = box.run(
            ["sh", "-c", f"cd {shlex.quote(there)} && exec {CAMERA_VENV}/bin/python camera_probe.py job.json out.json"],
            check=False,
            timeout=1200,
        )
        assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
        result = json.loads((work / "out.json").read_text())
        bars = tmp_path_factory.mktemp("camera-box") / "bars.png"
        shutil.copyfile(work / "bars.png", bars)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(seconds=round(time.monotonic() - started, 1), record=box.record["camera"], bars=bars, there=there)
    return result


def test_the_pi_camera_install_keeps_apt_numpy_and_opencv(camera_box_run):
    record, probed = camera_box_run["record"], camera_box_run
    # What pip put into the venv: the runtime without NumPy or OpenCV, which stay apt's (NumPy 1.24, OpenCV 4.6).
    assert {"edgecls", "ai-edge-litert", "onnxruntime"} <= set(record["venv_packages"])
    assert not {"numpy", "opencv-python", "opencv-python-headless"} & set(record["venv_packages"])
    built = record["imports"]  # probed when the box was built, and again now by the probe
    assert built["numpy"].startswith("1.24") and built["numpy_file"].startswith(APT_PACKAGES)
    assert built["cv2"].startswith("4.6") and built["cv2_file"].startswith(APT_PACKAGES)
    assert probed["numpy"]["file"].startswith(APT_PACKAGES) and probed["numpy"]["version"].startswith("1.24")
    assert probed["cv2"]["file"].startswith(APT_PACKAGES) and probed["cv2"]["version"].startswith("4.6")
    assert probed["cv2"]["gstreamer"] and record["imports"]["gstreamer"] and probed["heavy"] == []
    _report(
        "camera pios64",
        {
            "venv_packages": record["venv_packages"],
            "imports": record["imports"],
            "pip_install_s": record["pip_install_s"],
            "venv_mb": record["venv_mb"],
            "probe_s": camera_box_run["seconds"],
            "versions": probed["versions"],
            "stats": [run["stats"] for run in probed["runs"]],
        },
    )


def test_a_gstreamer_pipeline_feeds_the_classifier_in_the_box(camera_box_run, artifacts):
    from edgecls.runtime import Classifier
    from edgecls.runtime.preprocess import read_image

    red, bars = camera_box_run["runs"]
    numbers = [frame["sequence"] for frame in red["frames"]]
    assert numbers == sorted(set(numbers)) and numbers[-1] == 19 and len(numbers) >= 3
    assert red["stats"]["processed"] + red["stats"]["skipped"] == 20 == red["stats"]["captured"]
    assert all(frame["shape"] == [48, 64, 3] for frame in red["frames"])
    predictions = next(iter(red["predictions"].values()))
    assert all(max(scores, key=scores.get) == "red" for scores in predictions)  # BGR from GStreamer, RGB to the model
    # The first frame of the colour bars, scored here on x86 by LiteRT's built-in kernels (what the box runs) and
    # ONNX Runtime: the box's aarch64 engines under apt's NumPy 1.24 agree.
    image = read_image(camera_box_run["bars"])
    for name in CAMERA_MODELS:
        kernels = "builtin" if name.endswith(".tflite") else "default"
        classifier = Classifier(artifacts.files[name], threads=1, kernels=kernels)
        here = dict(classifier.predict(image, top_k=len(classifier.labels)))
        there = bars["predictions"][f"{camera_box_run['there']}/{name}"][0]
        difference = max(abs(here[label] - there[label]) for label in here)
        assert difference <= INT8_FLOOR, (name, here, there)
        ranked = sorted(here.values())
        if ranked[-1] - ranked[-2] >= NEAR_TIE["int8"]:
            assert max(there, key=there.get) == max(here, key=here.get), (name, here, there)


def test_tune_measures_its_candidates_in_the_pios64_box_over_ssh_and_labels_them_emulated(sshd_boxes, tmp_path):
    """edgecls tune --remote: 3 trials on tiny data, every latency (before training and of the artifact) measured
    by the box's runtime over SSH; the report says they were measured under emulation."""
    from tune_helpers import environment, make_folder, tune_command, write_space

    _box, server = sshd_boxes["pios64"]
    folder = make_folder(tmp_path / "shapes")
    space = write_space(tmp_path / "space.toml", ratios="[0.0]", precisions='["int8"]', epochs=1, rung_epochs=1,
                        rounds=1, runs=3)  # fmt: skip
    out = tmp_path / "out"
    command = tune_command(folder, space, out, "--trials", "3", *_remote(server, "rpi5"), budget="10000")
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=environment())
    assert completed.returncode == 0, completed.stderr[-3000:]
    front = json.loads((out / "front.json").read_text())
    assert front["trials"], completed.stderr[-3000:]
    for point in front["trials"]:
        assert point["where"].startswith("aarch64 under emulation on an x86_64 host with rpi5 settings")
        assert "over SSH" in point["where"] and point["emulated"].startswith("aarch64 under")
    report = (out / "report.md").read_text()
    assert "**Emulated**" in report and "not the device's" in report
    assert list(server.device_tmp.iterdir()) == []
    _report("tune over SSH pios64", {"front": front, "stderr": completed.stderr[-2000:]})
