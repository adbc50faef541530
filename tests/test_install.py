"""The device side as it is installed: `edgecls` on `pip install "edgecls[runtime]"` alone, and what it scores.

The slow test builds the wheel, installs it with ``[runtime]`` into a fresh
venv (pip's cache makes a second run fast) and runs every device command there;
the fast ones pin the extras, the numpy metrics, the one rule of what a folder
of evaluation images scores, the workstation message and a closed pipe.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tomllib
from conftest import write_png

from edgecls.base.errors import DataError
from edgecls.runtime.metadata import ModelInfo

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "sklearn", "matplotlib")  # never imported by a device command on [runtime]

# Runs the CLI in-process, then reports which heavy modules it imported: the exit code stays the CLI's.
PROBE = """
import json, os, sys
sys.argv = ["edgecls", *sys.argv[1:]]
code = 0
try:
    from edgecls.cli import main
    main()
except SystemExit as exit:
    code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
finally:
    heavy = sorted({name.partition(".")[0] for name in sys.modules} & set(json.loads(os.environ["PROBE_HEAVY"])))
    with open(os.environ["PROBE_OUT"], "w") as handle:
        json.dump({"heavy": heavy}, handle)
sys.exit(code)
"""


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _names(requirements: list[str]) -> dict[str, str]:
    """requirement name → its marker ('' without one); several lines of one name join their markers."""
    names: dict[str, str] = {}
    for line in requirements:
        spec, _, marker = line.partition(";")
        name = spec.strip().split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip()
        names[name] = (names.get(name, "") + " " + marker.strip()).strip()
    return names


def test_the_runtime_extra_carries_the_cli_and_installs_on_every_device():
    runtime, jetson, train = (_names(_extras()[name]) for name in ("runtime", "jetson", "train"))
    assert {"typer", "rich", "numpy", "opencv-python-headless", "psutil"} <= set(runtime)
    assert runtime["onnxruntime"] == "platform_machine != 'armv7l'"  # no armv7l wheel exists
    assert (
        runtime["ai-edge-litert"] == "platform_machine != 'armv7l'"
        and runtime["tflite-runtime"] == "platform_machine == 'armv7l'"
    )
    assert "numpy" in runtime and "armv7l" in runtime["numpy"]  # tflite-runtime 2.14 runs under NumPy 1 only
    # No armv7l wheel on PyPI: pip would compile them; Pi OS 32-bit takes OpenCV from apt, psutil is optional.
    assert runtime["opencv-python-headless"] == runtime["psutil"] == "platform_machine != 'armv7l'"
    # A Jetson keeps its onnxruntime-gpu: everything of the runtime for aarch64, less CPU onnxruntime.
    assert "onnxruntime" not in jetson and "onnxruntime-gpu" not in jetson
    assert set(jetson) == {name for name in runtime if name not in ("onnxruntime", "tflite-runtime")}
    assert "edgecls" in train and not {"typer", "rich"} & set(train)  # from [runtime]
    # A Pi with a camera: apt's NumPy 1.x and OpenCV (GStreamer) stay the ones imported (picamera2 needs NumPy 1).
    picamera = _names(_extras()["picamera"])
    assert set(picamera) == set(runtime) - {"opencv-python-headless"}
    assert _extras()["picamera"][0] == "numpy>=1.23,<2"


def test_metrics_in_numpy():
    from edgecls.evaluate import score_result

    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0, 2])
    # 7 classes (top-5 is defined): a class scores higher the nearer it is to the predicted one.
    scores = -np.abs(np.arange(7)[None, :] - predicted[:, None]).astype(np.float32)
    result = score_result(scores, labels, tuple("abcdefg"))
    assert result.top1 == pytest.approx(5 / 7) and result.n_images == 7
    assert result.confusion[:3] == [[1, 1, 0] + [0] * 4, [0, 2, 0] + [0] * 4, [1, 0, 2] + [0] * 4]
    a, b, c = result.per_class[:3]
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == (0.5, 0.5, 0.5, 2)
    assert (b["precision"], b["recall"], b["f1"]) == (pytest.approx(0.6667, abs=1e-4), 1.0, 0.8)
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (1.0, pytest.approx(0.6667, abs=1e-4), 0.8, 3)
    assert result.per_class[5] == {"label": "f", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert result.top5 == 1.0  # every true class is at most 2 away from the predicted one: among the 5 highest


def _shapes_info(folder: Path, **split) -> ModelInfo:
    return ModelInfo(("bright", "dark"), (16, 16), 3, "RGB", provenance={"dataset": str(folder), "split": split})


def test_a_named_folder_is_scored_whole_and_the_training_folder_by_its_split(shapes_folder, tmp_path):
    from edgecls.evaluate import evaluation_images

    photos = tmp_path / "photos-val"
    shutil.copytree(shapes_folder, photos)
    (photos / "dark" / "broken.png").write_bytes(b"not a png")
    trained_on_shapes = _shapes_info(shapes_folder, val_split=0.2, seed=0)
    named = evaluation_images(trained_on_shapes, str(photos))
    assert (len(named), len(named.skipped), named.scope) == (32, 1, "whole folder")  # all of it, not 20 %
    split = evaluation_images(trained_on_shapes, str(shapes_folder))
    assert len(split) == 6 and split.scope.startswith("held-out split")  # 3 of each class's 16
    assert len(evaluation_images(trained_on_shapes, None)) == 6  # the recorded data set: its split
    (tmp_path / "other" / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="not labels: cat"):
        evaluation_images(trained_on_shapes, str(tmp_path / "other"))


def test_quantize_eval_data_scores_what_evaluate_scores(shapes_folder):
    from edgecls.quantize.job import Evaluation

    evaluation = Evaluation.load(_shapes_info(shapes_folder.parent / "elsewhere"), str(shapes_folder))
    assert (evaluation.size, evaluation.scope, evaluation.skipped) == (32, "whole folder", 0)


def test_bench_copies_a_named_folder_whole(shapes_folder, tmp_path):
    from edgecls.bench.evalset import select_eval_files

    (shapes_folder / "bright" / "broken.png").write_bytes(b"")
    copied = select_eval_files(shapes_folder, tmp_path / "eval")
    assert len(list(copied.rglob("*.png"))) == 33  # every file: the runtime scores 32 and counts the broken one


def test_digits_on_a_device_says_where_it_is_made(tmp_path, monkeypatch):
    from edgecls.runtime.scoring import evaluate_folder

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="digits is made on the workstation"):
        evaluate_folder(object(), "digits")  # type: ignore[arg-type]  # the folder is checked first
    probe = (
        "import sys; sys.modules['sklearn'] = None\n"
        "from edgecls.data import load_dataset\nload_dataset('digits', image_size=(8, 8))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert completed.returncode != 0 and "edgecls[train]" in completed.stderr and "scikit-learn" in completed.stderr


def test_a_workstation_command_without_its_packages_is_one_line(monkeypatch):
    import importlib.util

    from typer.testing import CliRunner

    from edgecls.cli import app

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("tensorflow", "sklearn") else real(name, *a)
    )
    result = CliRunner().invoke(app, ["train", "--data", "digits"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        "error: edgecls train runs on the workstation and needs tensorflow, scikit-learn, not installed here: "
        'pip install "edgecls[train]"'
    ]


@pytest.mark.parametrize("arguments", [["targets", "--json"], ["targets"]])
def test_a_pipe_closed_early_ends_quietly(arguments):
    command = [sys.executable, "-m", "edgecls.cli", *arguments]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    process.stdout.close()  # the reader leaves before the first byte: `| head -c 0`
    stderr = process.stderr.read().decode()
    assert process.wait() == 141 and stderr == ""


# --- the wheel, installed with [runtime] only ---------------------------------------------------


@pytest.fixture(scope="module")
def device_artifacts(digits_run, digits_quantized, tmp_path_factory) -> dict[str, Path]:
    """An INT8 .tflite and the FP32 .onnx of the digits model, and a small folder of <label>/ images (one broken)."""
    from edgecls.bench.evalset import write_digits_eval_set
    from edgecls.runtime.metadata import read_model_info

    root = tmp_path_factory.mktemp("device")
    digits = write_digits_eval_set(read_model_info(digits_run.tflite), root / "digits-val")
    folder = root / "photos"
    for label_dir in sorted(digits.iterdir()):  # 4 validation images of each digit
        (folder / label_dir.name).mkdir(parents=True)
        for image in sorted(label_dir.glob("*.png"))[:4]:
            shutil.copyfile(image, folder / label_dir.name / image.name)
    write_png(folder / "3" / "extra.png", np.full((8, 8), 200, np.uint8))
    (folder / "7" / "broken.png").write_bytes(b"\x89PNG truncated")
    shutil.copyfile(digits_quantized.int8, root / "model_int8.tflite")
    shutil.copyfile(digits_run.onnx, root / "model_fp32.onnx")
    return {"tflite": root / "model_int8.tflite", "onnx": root / "model_fp32.onnx", "data": folder, "root": root}


@pytest.fixture(scope="session")
def install_pool() -> Iterator[ThreadPoolExecutor]:
    """Threads the installs run in while the session's other fixtures are made (pip waits on the disk and the
    index more than on a core)."""
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="install") as pool:
        yield pool


@pytest.fixture(scope="session")
def wheel(install_pool, tmp_path_factory) -> Future[Path]:
    """The edgecls wheel of this tree, as a user downloads it (built in the background)."""
    return install_pool.submit(_build_wheel, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")  # session: set up before the session-scoped digits fixtures it can overlap
def runtime_venv(install_pool, wheel, tmp_path_factory) -> Future[Path]:
    """A fresh venv with the built wheel installed with ``[runtime]`` only, from the registry pip reaches.

    Started in the background as soon as a test asks for it: the test's other fixtures (the digits model, its INT8
    file) are made meanwhile, then it waits on ``.result()``. The wheel is built while the venv is made, then
    installed into it.
    """
    venv = install_pool.submit(_make_venv, tmp_path_factory.mktemp("runtime-venv") / "venv")
    return install_pool.submit(_install_runtime, wheel, venv)


def _build_wheel(folder: Path) -> Path:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return next(folder.glob("edgecls-*.whl"))


def _make_venv(venv: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # the base interpreter's venv module
    return venv


def _install_runtime(wheel: Future[Path], venv: Future[Path]) -> Path:
    installed = subprocess.run(
        [str(venv.result() / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel.result()}[runtime]"],
        capture_output=True,
        text=True,
        check=False,
        env=_clean_env(),
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv.result()


def _clean_env() -> dict[str, str]:
    """This environment without what would put the checkout on the venv's path."""
    return {
        key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "PIP_NO_CACHE_DIR")
    }


def _edgecls(venv: Path, *arguments: str, cwd: Path) -> tuple[int, str, str, list[str]]:
    out = cwd / f"probe-{time.monotonic_ns()}.json"
    env = _clean_env()
    env.update(PROBE_OUT=str(out), PROBE_HEAVY=json.dumps(HEAVY), COLUMNS="160")
    completed = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", PROBE, *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )
    return completed.returncode, completed.stdout, completed.stderr, json.loads(out.read_text())["heavy"]


def _largest(site_packages: Path, count: int = 8) -> dict[str, float]:
    """The ``count`` largest entries of ``site_packages``, in MB: where the install's size goes."""
    sizes = {}
    for entry in site_packages.iterdir():
        files = [entry] if entry.is_file() else [path for path in entry.rglob("*") if path.is_file()]
        sizes[entry.name] = round(sum(path.stat().st_size for path in files) / 1e6, 1)
    return dict(sorted(sizes.items(), key=lambda item: -item[1])[:count])


def _best_of(runs: int, command: list[str], cwd: Path) -> float:
    env = _clean_env()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=cwd, env=env)
        times.append(time.perf_counter() - started)
    return min(times)


@pytest.mark.slow
def test_the_device_commands_on_a_runtime_only_install(runtime_venv, device_artifacts, tmp_path):
    venv, art = runtime_venv.result(timeout=1800), device_artifacts
    python = str(venv / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import edgecls; print(edgecls.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=_clean_env(),
    )
    assert str(venv) in site.stdout  # the wheel, not the checkout
    for module in HEAVY + ("onnx", "typer", "rich"):
        found = subprocess.run(
            [python, "-c", f"import importlib.util as u; print(u.find_spec({module!r}) is not None)"],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
            env=_clean_env(),
        ).stdout.strip()
        assert found == str(module in ("typer", "rich")), (
            module
        )  # [runtime] brings the CLI and nothing of the workstation

    calls = {
        "help": (["--help"], 0),
        "targets": (["targets"], 0),
        "targets-json": (["targets", "--json"], 0),
        "info-tflite": (["info", str(art["tflite"])], 0),
        "info-onnx": (["info", str(art["onnx"])], 0),
        "bench": (
            [
                "bench",
                str(art["tflite"]),
                str(art["onnx"]),
                "--data",
                str(art["data"]),
                "--runs",
                "5",
                "--warmup",
                "1",
                "--out",
                str(tmp_path / "bench"),
                "--json",
            ],
            0,
        ),
        "evaluate-tflite": (
            ["evaluate", str(art["tflite"]), "--data", str(art["data"]), "--out", str(tmp_path / "ev"), "--json"],
            0,
        ),
        "evaluate-onnx": (
            ["evaluate", str(art["onnx"]), "--data", str(art["data"]), "--out", str(tmp_path / "ev"), "--json"],
            0,
        ),
        "evaluate-text": (
            ["evaluate", str(art["tflite"]), "--data", str(art["data"]), "--out", str(tmp_path / "ev")],
            0,
        ),
        "watch": (["watch", str(art["tflite"]), "--source", "test://?fps=30", "--duration", "3", "--json"], 0),
        "train-help": (["train", "--help"], 0),
        "train": (["train", "--data", "digits"], 2),
        "quantize": (["quantize", str(art["onnx"]), "--calib", str(art["data"])], 2),
        "evaluate-digits": (["evaluate", str(art["tflite"]), "--data", "digits"], 2),
    }
    outputs = {}
    for name, (arguments, expected) in calls.items():
        code, stdout, stderr, heavy = _edgecls(venv, *arguments, cwd=tmp_path)
        assert code == expected, f"{name}: exit {code}\n{stdout[-2000:]}\n{stderr[-2000:]}"
        assert "Traceback" not in stderr + stdout, f"{name}:\n{stderr[-3000:]}"
        assert heavy == [], f"{name} imported {heavy}"
        outputs[name] = (stdout, stderr)

    assert "bench" in outputs["help"][0] and "targets" in outputs["help"][0]
    assert "rpi5" in outputs["targets"][0] and json.loads(outputs["targets-json"][0])["targets"]
    assert "compute ops in integer" in outputs["info-tflite"][0] and "labels (10)" in outputs["info-tflite"][0]
    onnx_info = outputs["info-onnx"][0]
    assert (
        "labels (10)" in onnx_info and "need the onnx package: pip install onnx" in onnx_info and "input:" in onnx_info
    )
    for name in ("train", "quantize"):
        lines = [line for line in outputs[name][1].splitlines() if line.strip()]
        assert (
            len(lines) == 1
            and 'pip install "edgecls[train]"' in lines[0]
            and f"edgecls {name} runs on the workstation" in lines[0]
        )
    assert "digits is built into scikit-learn" in outputs["evaluate-digits"][1]
    _check_watch(outputs["watch"][0], labels=[str(digit) for digit in range(10)])
    assert "--data" in outputs["train-help"][0]

    # One folder, one answer: bench and evaluate score the same 41 images (1 skipped) to the same top-1.
    benched = {Path(r["model"]).suffix: r for r in json.loads(outputs["bench"][0])["results"]}
    for suffix, name in ((".tflite", "evaluate-tflite"), (".onnx", "evaluate-onnx")):
        evaluated = json.loads(outputs[name][0])
        assert (evaluated["n_images"], evaluated["n_skipped"], evaluated["scope"]) == (41, 1, "whole folder")
        assert (benched[suffix]["n_eval"], benched[suffix]["eval_skipped"]) == (41, 1)
        assert benched[suffix]["top1"] == pytest.approx(evaluated["top1"])
        assert evaluated["confusion_png"] is None and len(evaluated["per_class"]) == 10
    assert "not drawn: matplotlib is not installed" in outputs["evaluate-text"][1]
    assert "41 images" in outputs["evaluate-text"][0] and "1 skipped" in outputs["evaluate-text"][0]
    assert not (tmp_path / "bench" / "latency.png").exists() and (tmp_path / "bench" / "bench.md").is_file()
    assert "41 images, 1 skipped" in (tmp_path / "bench" / "bench.md").read_text()

    size = int(subprocess.run(["du", "-sb", str(venv)], capture_output=True, text=True, check=True).stdout.split()[0])
    measured = {
        "venv_mb": round(size / 1e6, 1),
        "edgecls_help_s": round(_best_of(3, [str(venv / "bin" / "edgecls"), "--help"], tmp_path), 3),
        "import_edgecls_runtime_s": round(_best_of(3, [python, "-c", "import edgecls.runtime"], tmp_path), 3),
        "python": sys.version.split()[0],
        "largest_mb": _largest(next((venv / "lib").glob("python3*")) / "site-packages"),
        "packages": subprocess.run(
            [python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, env=_clean_env()
        ).stdout.split(),
    }
    report = Path(os.environ.get("EDGECLS_INSTALL_REPORT", tmp_path / "runtime_install.json"))
    report.write_text(json.dumps(measured, indent=2))
    print(
        f"[runtime] install: {measured['venv_mb']} MB, edgecls --help {measured['edgecls_help_s']} s, "
        f"import edgecls.runtime {measured['import_edgecls_runtime_s']} s ({report})"
    )
    assert measured["venv_mb"] < 600  # LiteRT + ONNX Runtime + OpenCV + NumPy + the CLI; TensorFlow alone is 1.3 GB


def _check_watch(stdout: str, labels: list[str]) -> None:
    """``edgecls watch --source test://?fps=30 --duration 3 --json``: a line a frame, then the summary."""
    lines = [json.loads(line) for line in stdout.splitlines()]
    frames, summary = lines[:-1], lines[-1]["summary"]
    numbers = [frame["sequence"] for frame in frames]
    assert numbers == sorted(set(numbers)) and len(frames) >= 45, numbers  # 3 s of a 30 fps source, most of it
    assert all(frame["top"][0]["label"] in labels and frame["inference_ms"] <= frame["age_ms"] for frame in frames)
    assert (summary["frames"], summary["stopped"]) == (len(frames), "duration") and 2.9 <= summary["seconds"] < 6
    stats = summary["stats"]
    assert stats["processed"] + stats["skipped"] == numbers[-1] + 1 <= stats["captured"]  # every frame accounted
    assert 25 <= stats["capture_fps"] <= 35 and stats["age_p95_ms"] < 1000 / 30 + 200


# Runs CLI commands one after another in one fresh interpreter; after each, its exit code and the heavy modules
# imported so far (a module once imported stays in sys.modules: each entry covers that command and all before it).
PROBE_EACH = """
import json, os, sys
heavy_names = set(json.loads(os.environ["PROBE_HEAVY"]))
from edgecls.cli import main
report = []
for arguments in json.loads(os.environ["PROBE_COMMANDS"]):
    sys.argv = ["edgecls", *arguments]
    code = 0
    try:
        main()
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    report.append({"arguments": arguments, "code": code,
                   "heavy": sorted({name.partition(".")[0] for name in sys.modules} & heavy_names)})
with open(os.environ["PROBE_OUT"], "w") as handle:
    json.dump(report, handle)
"""


@pytest.mark.slow
def test_device_commands_import_no_training_framework_on_the_workstation(device_artifacts, tmp_path):
    """In the full venv TensorFlow and scikit-learn are there to import: the device commands still do not.

    One fresh interpreter runs the five commands in turn (one Python start instead of five): nothing heavy is
    imported after any of them, so none of them imports it.
    """
    art = device_artifacts
    commands = [
        ["info", str(art["tflite"])],
        ["info", str(art["onnx"])],
        ["targets"],
        ["evaluate", str(art["onnx"]), "--data", str(art["data"]), "--out", str(tmp_path)],
        ["bench", str(art["tflite"]), "--data", str(art["data"]), "--runs", "3", "--warmup", "0"]
        + ["--out", str(tmp_path / "b")],
    ]
    out = tmp_path / "probe.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PROBE_OUT": str(out),
        "PROBE_HEAVY": json.dumps(["tensorflow", "keras", "sklearn"]),
        "PROBE_COMMANDS": json.dumps(commands),
    }
    completed = subprocess.run(
        [sys.executable, "-c", PROBE_EACH], capture_output=True, text=True, cwd=tmp_path, env=env, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [entry["arguments"] for entry in report] == commands  # every command ran
    for entry in report:
        assert entry["code"] == 0, (entry["arguments"], completed.stderr[-2000:])
        assert entry["heavy"] == [], entry["arguments"]


# --- the "Pi with a camera" install, on this machine: apt's NumPy and OpenCV under a --system-site-packages venv ---

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: apt's python3-numpy and python3-opencv are built for it
APT_PACKAGES = "/usr/lib/python3/dist-packages"
CAMERA_PROBE = ROOT / "tests" / "camera_probe.py"
# videotestsrc paced as a camera (is-live) at 30 fps, through videoconvert to BGR: what a csi:// pipeline ends in.
GST_RED = (
    "gst://videotestsrc num-buffers={frames} pattern=red is-live=true ! "
    "video/x-raw,width=160,height=120,framerate=30/1 ! videoconvert ! video/x-raw,format=BGR ! "
    "appsink drop=true max-buffers=1"
)
GST_BARS = GST_RED.replace("pattern=red", "pattern=smpte")


def system_opencv_missing() -> str | None:
    """Why this machine has no Debian Python with apt's OpenCV (GStreamer) and NumPy, or ``None``."""
    probe = (
        "import cv2, numpy, venv; assert cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER), 'no GStreamer'; "
        "assert cv2.__file__.startswith('/usr/lib/python3/'), cv2.__file__"
    )
    if not Path(SYSTEM_PYTHON).is_file():
        return f"no {SYSTEM_PYTHON}"
    completed = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, env=_clean_env())
    if completed.returncode != 0:
        return (
            f"{SYSTEM_PYTHON} lacks apt's OpenCV with GStreamer ({completed.stderr.strip().splitlines()[-1]}): "
            "apt-get install python3-opencv python3-numpy python3-venv gstreamer1.0-plugins-base (.ci/run does)"
        )
    return None


@pytest.fixture(scope="module")
def picamera_venv(wheel, tmp_path_factory) -> Path:
    """The README's "Pi with a camera" install here: Debian's Python, a venv that sees apt's packages, then
    ``pip install "edgecls[picamera]"``."""
    reason = system_opencv_missing()
    if reason:  # CI installs these (.ci/run): there, a missing package is a failure, not a skip
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)
    venv = tmp_path_factory.mktemp("picamera-venv") / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel.result()}[picamera]"],
        capture_output=True,
        text=True,
        check=False,
        env=_clean_env(),
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


@pytest.mark.slow
def test_the_pi_camera_install_keeps_apt_numpy_and_opencv_and_reads_gstreamer(
    picamera_venv, device_artifacts, tmp_path
):
    from conftest import channel_means_onnx

    from edgecls.runtime import Classifier
    from edgecls.runtime.preprocess import read_image

    python = str(picamera_venv / "bin" / "python")
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--local", "--format=json"], capture_output=True, text=True, env=_clean_env()
    )
    in_venv = {item["name"].lower(): item["version"] for item in json.loads(listed.stdout)}
    assert {"edgecls", "ai-edge-litert", "onnxruntime", "typer", "rich"} <= set(in_venv)
    assert not {"numpy", "opencv-python", "opencv-python-headless"} & set(in_venv), in_venv  # apt's stay

    means = channel_means_onnx(tmp_path / "means.onnx")
    tflite = str(device_artifacts["tflite"])  # the digits model, INT8
    job = {
        "runs": [
            {"source": GST_RED.format(frames=30), "models": [str(means)], "first_frame": str(tmp_path / "red.png")},
            {"source": GST_BARS.format(frames=10), "models": [tflite], "first_frame": str(tmp_path / "bars.png")},
        ]
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    completed = subprocess.run(
        [python, str(CAMERA_PROBE), str(tmp_path / "job.json"), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(),
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    probed = json.loads((tmp_path / "out.json").read_text())
    assert probed["numpy"]["file"].startswith(APT_PACKAGES) and probed["numpy"]["version"].startswith("1.")
    assert probed["cv2"]["file"].startswith(APT_PACKAGES) and probed["cv2"]["gstreamer"]
    assert probed["heavy"] == [] and "edgecls" in probed["versions"]

    red, bars = probed["runs"]
    numbers = [frame["sequence"] for frame in red["frames"]]
    assert numbers == sorted(set(numbers)) and numbers[-1] == 29 and len(numbers) >= 20  # paced at 30 fps
    assert all(frame["shape"] == [120, 160, 3] for frame in red["frames"])
    assert red["stats"]["captured"] == 30 and red["stats"]["processed"] + red["stats"]["skipped"] == 30
    assert 20 <= red["stats"]["capture_fps"] <= 40
    # GStreamer's red, through videoconvert's BGR and predict's RGB: the red channel wins on every frame.
    assert all(max(scores, key=scores.get) == "red" for scores in red["predictions"][str(means)])
    # LiteRT under apt's NumPy 1.x scores the first frame as this venv's LiteRT under NumPy 2 does.
    here = dict(Classifier(tflite, threads=1).predict(read_image(tmp_path / "bars.png"), top_k=10))
    there = bars["predictions"][tflite][0]
    assert max(abs(here[label] - there[label]) for label in here) <= 1e-6, (here, there)
    _record_camera_install(probed, in_venv)


def _record_camera_install(probed: dict, in_venv: dict) -> None:
    report = os.environ.get("EDGECLS_CAMERA_INSTALL_REPORT")
    if report:
        Path(report).write_text(json.dumps({"probe": probed, "venv_packages": in_venv}, indent=2))
