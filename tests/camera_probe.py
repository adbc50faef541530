"""A camera install, probed from inside: which NumPy and OpenCV it imports, and a real GStreamer pipeline through
``FrameSource`` into ``Classifier.predict``. Run by the "Pi with a camera" venvs (apt's NumPy and OpenCV under a
``--system-site-packages`` venv): on this machine (tests/test_install.py) and in the Pi OS 64-bit box
(tests/test_box.py). Standard library and ``edgecls.runtime`` only.

    python camera_probe.py job.json out.json

The job: ``{"runs": [{"source": URI, "models": [path, ...], "first_frame": path.png}, ...]}``; each run reads its
source to the end, predicts every frame with every model (all classes), and saves its first frame as a PNG.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import sys
import time
from pathlib import Path

HEAVY = ("tensorflow", "keras", "sklearn", "matplotlib", "torch", "jax")
DISTRIBUTIONS = ("edgecls", "ai-edge-litert", "tflite-runtime", "onnxruntime", "numpy", "opencv-python-headless")


def one_run(run: dict) -> dict:
    import cv2

    from edgecls.runtime import Classifier, FrameSource

    classifiers = {model: Classifier(model, threads=1) for model in run["models"]}
    frames, predictions = [], {model: [] for model in run["models"]}
    started = time.monotonic()
    with FrameSource(run["source"], timeout_s=60) as source:
        for frame in source:
            if not frames and run.get("first_frame"):
                cv2.imwrite(run["first_frame"], frame.image)
            frames.append({"sequence": frame.sequence, "dropped": frame.dropped, "shape": list(frame.image.shape)})
            for model, classifier in classifiers.items():
                ranked = classifier.predict(frame.image, top_k=len(classifier.labels))
                predictions[model].append({label: float(score) for label, score in ranked})
        stats = source.stats().to_dict()
    return {"frames": frames, "predictions": predictions, "stats": stats, "s": round(time.monotonic() - started, 2)}


def main(job_path: str, out_path: str) -> int:
    import cv2
    import numpy

    job = json.loads(Path(job_path).read_text())
    result: dict = {
        "python": sys.version.split()[0],
        "numpy": {"version": numpy.__version__, "file": numpy.__file__},
        "cv2": {
            "version": cv2.__version__,
            "file": cv2.__file__,
            "gstreamer": bool(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER)),
        },
        "runs": [one_run(run) for run in job["runs"]],
        "versions": {},
    }
    for name in DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            result["versions"][name] = importlib.metadata.version(name)
    result["heavy"] = sorted({name.partition(".")[0] for name in sys.modules} & set(HEAVY))
    Path(out_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
