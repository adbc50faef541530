"""Load models through ``edgecls.runtime.Classifier`` and print their top-1 on fixed frames, as JSON.

Run by ``tests/test_runtime_compat.py`` with another interpreter (a venv holding an
older LiteRT and no TensorFlow), and by hand:

    PYTHONPATH=. /path/to/old-venv/bin/python tests/litert_probe.py frames.npy a.tflite b.tflite

Prints one JSON object: the engine and its version, and per model either
``{"top1": [...]}`` or ``{"error": "..."}`` (what the old runtime said).
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main(argv: list[str]) -> int:
    from edgecls.runtime import Classifier

    frames = np.load(argv[0])
    results: dict[str, dict] = {}
    engine = version = ""
    for path in argv[1:]:
        try:
            classifier = Classifier(path, threads=1, top_k=1)
        except Exception as exc:  # noqa: BLE001 - what the old runtime says is the result
            results[path] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        engine, version = classifier.engine.name, classifier.engine.version
        results[path] = {"top1": [classifier.predict(frame)[0][0] for frame in frames]}
    print(json.dumps({"engine": engine, "version": version, "models": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
