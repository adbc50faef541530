"""Everything a box test asks of one Python, in one process: emulated Python starts slowly (seconds per start).

Run by the box's venv (``~/edgecls/bin/python driver.py job.json out.json``) and, for the reference, by the
workstation's: the same code scores the same images on both sides. The job (JSON) names:

- ``models``: artifact paths; each scores every image of ``data`` through ``Classifier.predict`` (all classes,
  dequantised, one thread), image order as ``edgecls evaluate``'s (class folder, then path);
- ``kernels``: each ``.tflite`` is scored again through these LiteRT kernel families (``Classifier(kernels=)``):
  ``builtin`` (the built-in kernels without XNNPACK, what a box runs) and ``reference`` (LiteRT's reference
  kernels: plain C++, the same integer arithmetic on every ISA);
- ``cli``: ``edgecls`` argument lists, each run in this process as the console script runs (its exit code,
  stdout, stderr and seconds recorded);
- ``target``: the profile whose ``placement()`` label is recorded.

The output records the machine (``machine_info()``, emulation included), the engines' versions, what ``/sys``
holds, and which heavy modules (TensorFlow, Keras, …) were imported by the end: none may be.
Standard library and ``edgecls.runtime`` only.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import os
import sys
import time
from pathlib import Path

HEAVY = ("tensorflow", "keras", "sklearn", "matplotlib", "torch", "jax", "tf_keras")
DISTRIBUTIONS = ("ai-edge-litert", "tflite-runtime", "onnxruntime", "numpy", "opencv-python-headless", "edgecls")


def score_images(model: str, data: Path, *, kernels: tuple[str, ...] = ()) -> dict:
    """Every class's score for each image of ``data/<label>/``."""
    from edgecls.runtime import Classifier
    from edgecls.runtime.preprocess import IMAGE_SUFFIXES, read_image

    classifier = Classifier(model, threads=1)
    labels = list(classifier.labels)
    others = {kind: Classifier(model, threads=1, kernels=kind) for kind in kernels} if model.endswith(".tflite") else {}
    images, scores, other_scores = [], [], {kind: [] for kind in others}
    for label in sorted(entry.name for entry in data.iterdir() if entry.is_dir()):
        for path in sorted(p for p in (data / label).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            image = read_image(path)
            if image is None:
                continue
            ranked = dict(classifier.predict(image, top_k=len(labels)))
            images.append(f"{label}/{path.name}")
            scores.append([float(ranked[name]) for name in labels])
            for kind, other in others.items():
                other_ranked = dict(other.predict(image, top_k=len(labels)))
                other_scores[kind].append([float(other_ranked[name]) for name in labels])
    scored = {"labels": labels, "images": images, "scores": scores, "engine": classifier.engine.name}
    scored["provider"] = classifier.engine.provider
    scored.update({f"scores_{kind}": values for kind, values in other_scores.items()})
    return scored


def run_cli(arguments: list[str]) -> dict:
    """``edgecls ARGUMENTS`` in this process: exit code, stdout, stderr, seconds."""
    from edgecls.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = 0
    sys.argv = ["edgecls", *arguments]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main()
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        except Exception as exc:  # a crash is a result too: its traceback goes to stderr as the script's would
            import traceback

            traceback.print_exc()
            code = f"crashed: {type(exc).__name__}"
    seconds = round(time.monotonic() - started, 2)
    return {"argv": arguments, "code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "s": seconds}


def versions() -> dict:
    found = {}
    for name in DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    with contextlib.suppress(ImportError):
        import cv2

        found["cv2"] = cv2.__version__  # apt's OpenCV has no distribution of that name
    return found


def main(job_path: str, out_path: str) -> int:
    os.environ.setdefault("COLUMNS", "200")
    job = json.loads(Path(job_path).read_text())
    started = time.monotonic()
    from edgecls.runtime.device import machine_info, placement
    from edgecls.runtime.targets import get_target

    machine = machine_info()
    result = {
        "machine": machine.to_dict(),
        "placement": placement(get_target(job.get("target", "host")), machine).to_dict(),
        "sys_entries": sorted(os.listdir("/sys")) if os.path.isdir("/sys") else [],
        "python": sys.version.split()[0],
        "import_s": round(time.monotonic() - started, 2),
        "scores": {},
        "cli": [],
    }
    for model in job.get("models", []):
        scoring = time.monotonic()
        result["scores"][model] = score_images(model, Path(job["data"]), kernels=tuple(job.get("kernels", ())))
        result["scores"][model]["s"] = round(time.monotonic() - scoring, 2)
    for arguments in job.get("cli", []):
        result["cli"].append(run_cli(arguments))
    result["versions"] = versions()
    result["heavy"] = sorted({name.partition(".")[0] for name in sys.modules} & set(HEAVY))
    result["total_s"] = round(time.monotonic() - started, 2)
    Path(out_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
