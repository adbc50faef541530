"""A stage's key: everything that decides its output, so a reused stage is never stale.

The key is a digest of
- the stage's **resolved configuration**: the options the file wrote and the defaults they resolved to
  (``resolve.resolved_options``), so an upgrade that changes a default re-runs the stage;
- the **content of its inputs**: the data folder, the files its options name (calibration images, weights, a
  deployed model, target files) and the artifacts of the stages before it, by their bytes, not their names or
  modification times;
- the **code**: the edgecls version and a digest of the installed package's sources, so a run made by another
  edgecls is never reused;
- the previous stage's key, so a change re-runs everything downstream of it.

Hashing a large data folder every run would cost a read of every image: ``ContentDigests`` remembers each file's
digest by its size and modification time in ``runs/NAME/digests.json``, so only new or changed files are read
(git's index does the same).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from edgecls.base.fileio import write_json

DIGESTS_FILE = "digests.json"


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """The edgecls version and a digest of every source file of the package this process imported."""
    import edgecls

    package = Path(edgecls.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".toml") and path.is_file() and "__pycache__" not in path.parts:
            digest.update(f"{path.relative_to(package)}\0".encode())
            digest.update(path.read_bytes())
    return f"{edgecls.__version__}+{digest.hexdigest()[:16]}"


class ContentDigests:
    """Content digests of files and folders, each file read only when its size or modification time changed."""

    def __init__(self, memo_path: Path) -> None:
        self.memo_path = memo_path
        try:
            self._memo: dict[str, list[Any]] = json.loads(memo_path.read_text()) if memo_path.is_file() else {}
        except ValueError:
            self._memo = {}
        self._changed = False

    def of(self, path: str) -> str:
        """A folder's or file's digest; ``digits`` and anything that is not a path (a registry name) are themselves."""
        root = Path(path)
        if path == "digits" or not root.exists():
            return path
        if root.is_file():
            return self._file(root)
        digest = hashlib.sha256()
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(root)}\0{self._file(file)}\n".encode())
        return digest.hexdigest()[:16]

    def _file(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        known = self._memo.get(key)
        if known is not None and known[:2] == [stat.st_size, stat.st_mtime_ns]:
            return str(known[2])
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        value = digest.hexdigest()[:16]
        self._memo[key] = [stat.st_size, stat.st_mtime_ns, value]
        self._changed = True
        return value

    def save(self) -> None:
        if self._changed:
            self._memo = {key: value for key, value in self._memo.items() if os.path.exists(key)}
            write_json(self.memo_path, self._memo)
            self._changed = False


def stage_key(name: str, resolved: dict[str, Any], inputs: dict[str, str], previous_key: str) -> str:
    document = {
        "stage": name,
        "resolved": resolved,
        "inputs": inputs,
        "previous": previous_key,
        "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


# The options, per stage, that name a file or folder the stage reads (besides the pipeline's data).
FILE_OPTIONS = {
    "train": ("weights", "init_from", "replay"),
    "distill": ("student",),
    "quantize": ("calib",),
    "compare": ("a", "b", "data"),  # b: a file, or a report row's name (its own digest)
    "bench": ("targets",),  # a target file beside the pipeline file (a name is its own digest)
}
NO_DATA = ("export",)  # the stages that never read the pipeline's data


def stage_inputs(
    config: Any, name: str, options: dict[str, Any], summaries: dict[str, dict[str, Any]], digests: ContentDigests
) -> dict[str, str]:
    """The content digests of what the stage reads: data, the files its options name, the artifacts before it."""
    inputs: dict[str, str] = {}
    if name not in NO_DATA:
        inputs["data"] = digests.of(config.resolve(config.data))
    for option in FILE_OPTIONS.get(name, ()):
        values = options.get(option)
        for index, value in enumerate(values if isinstance(values, list) else [values]):
            if isinstance(value, str) and value.lower() not in ("imagenet", "none"):
                inputs[f"{option}[{index}]"] = digests.of(config.resolve(value))
    for stage, summary in summaries.items():
        paths = {summary["model"]} if isinstance(summary.get("model"), str) else set()
        paths.update(row["path"] for row in summary.get("artifacts", []))
        for path in sorted(paths):
            inputs[f"{stage}:{_within(Path(path), config.run_dir)}"] = digests.of(path)
    return inputs


def _within(path: Path, run_dir: Path) -> str:
    """``path`` relative to the run's folder where it lies inside it (a moved --runs-dir keeps its keys)."""
    try:
        return str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path)
