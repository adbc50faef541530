"""Files: atomic writes (an output is complete or absent, never half-written) and digests of inputs.

Kept free of heavy imports so the runtime can use it on a device.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; rename it into place on success.

    The temporary file keeps the final suffixes, because some writers (Keras'
    ``model.save``) insist on them. On any exception the temporary is removed and
    whatever already stood at ``final_path`` is left untouched.

    >>> with atomic_path("runs/a/model.keras") as tmp:  # doctest: +SKIP
    ...     model.save(tmp)
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # keep every suffix: Keras wants "x.weights.h5", not "x.h5"
    handle, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix="".join(final.suffixes) or ".tmp", dir=final.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.is_file():  # mkstemp makes 0600; an artifact should read like any written file
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        if tmp.is_dir():
            if final.exists():
                shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays, Paths, dataclasses: what result objects hold.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex, first 16): what an artifact records of the model it was made from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def folder_digest(path: str) -> str:
    """Names, sizes and modification times of every file under ``path``, or of the file ``path``.

    ``digits`` or a model name (no such path) is its own digest.
    """
    root = Path(path)
    if path == "digits" or not root.exists():
        return path
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]:
        stat = file.stat()
        digest.update(f"{file.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
