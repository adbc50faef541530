"""Load models through ``edgecls.runtime.Classifier`` and print their top-1 on fixed frames, and what
``edgecls info --json`` says of each, as JSON.

Run by ``tests/test_runtime_compat.py`` with another interpreter (a venv holding an
older LiteRT and no TensorFlow), and by hand:

    PYTHONPATH=. /path/to/old-venv/bin/python tests/litert_probe.py frames.npy a.tflite b.tflite

Prints one JSON object: the engine and its version, and per model either
``{"top1": [...], "info": {...}}`` or ``{"error": "..."}`` (what the old runtime said); ``info`` is the
console script's JSON, or ``{"exit": CODE, "stderr": ...}`` when it failed.
"""

from __future__ import annotations

import contextlib
import io
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
        results[path] = {"top1": [classifier.predict(frame)[0][0] for frame in frames], "info": _info(path)}
    print(json.dumps({"engine": engine, "version": version, "models": results}))
    return 0


def _info(path: str) -> dict:
    """``edgecls info PATH --json`` as the console script runs it, in this process."""
    from edgecls.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    sys.argv = ["edgecls", "info", path, "--json"]
    code = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main()
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    if code != 0:
        return {"exit": code, "stderr": stderr.getvalue()[-2000:]}
    return json.loads(stdout.getvalue())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
