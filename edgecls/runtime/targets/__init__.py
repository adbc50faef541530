"""Device profiles: the ``*.toml`` files beside this module, loaded into frozen ``Target`` objects.

Targets are data, not code: adding a device is adding a file. The files ship
inside the package (``edgecls/runtime/targets/``; the top-level ``targets/`` is
a link to it), so an installed wheel finds them too. A target can also be named by
the path of a ``.toml`` (or ``.json``) file of the same shape.

>>> get_target("rpi").name  # doctest: +SKIP
'rpi5'
>>> list_targets()  # doctest: +SKIP
['host', 'jetson-nano', 'jetson-orin-nano', 'rpi4', 'rpi5']
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError

TARGET_KINDS = ("raspberry-pi", "jetson", "host")
ENGINE_NAMES = ("litert", "onnxruntime")
PRECISIONS = ("int8", "fp16", "fp32")


@dataclass(frozen=True)
class Target:
    """One device profile: how to run a model there, and what suits it."""

    name: str
    description: str
    kind: str  # raspberry-pi | jetson | host
    board: str  # a substring of /proc/device-tree/model on the device; "" for the host
    arch: str  # aarch64, x86_64, or "any"
    engines: tuple[str, ...]  # preference order
    delegate: str  # what LiteRT uses on the device's CPU
    providers: tuple[str, ...]  # ONNX Runtime execution providers, in order
    threads: int  # 0 = every core of the machine it runs on
    precisions: tuple[str, ...]  # precisions that suit the device, best first
    memory_mb: int  # 0 = not stated
    install: str  # how to install the runtime there
    aliases: tuple[str, ...] = ()
    notes: str = ""
    source: str = ""  # the file it came from (not a key in the file)

    def resolved_threads(self) -> int:
        """Threads to use on the machine the benchmark runs on."""
        return self.threads or max(1, os.cpu_count() or 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_OPTIONAL = {"aliases": (), "notes": ""}
_KEYS = tuple(f.name for f in fields(Target) if f.name != "source")


def targets_dir() -> Path:
    """The folder of the packaged target files (works from a checkout and a wheel)."""
    return Path(str(resources.files("edgecls.runtime.targets")))


def list_targets() -> list[str]:
    """Names of the packaged targets, sorted."""
    return sorted(_packaged().keys())


def get_target(name_or_path: str | Path) -> Target:
    """A packaged target by name or alias, or a target file by path."""
    text = str(name_or_path)
    if text.endswith((".toml", ".json")) or os.sep in text:
        return load_target_file(text)
    packaged = _packaged()
    by_alias = {alias: target for target in packaged.values() for alias in target.aliases}
    target = packaged.get(text) or by_alias.get(text)
    if target is None:
        known = ", ".join(sorted([*packaged, *by_alias]))
        raise ConfigError(f"unknown target {text!r}; choose one of: {known} (or pass a target .toml file)")
    return target


def load_target_file(path: str | Path) -> Target:
    """Load and check one target file (``.toml``, or ``.json`` as shipped to a device)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such target file")
    try:
        if path.suffix == ".json":
            document = json.loads(path.read_text(encoding="utf-8"))
        else:
            document = _load_toml(path)
    except (ValueError, OSError) as exc:  # tomllib.TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ConfigError(f"{path}: not a valid target file ({exc})") from exc
    return target_from_dict(document, source=str(path))


def target_from_dict(document: dict[str, Any], *, source: str) -> Target:
    """Check every key and type; an unknown key is an error that lists the valid ones."""
    if not isinstance(document, dict):
        raise ConfigError(
            f"{source}: a target file holds one table of keys ({', '.join(_KEYS[:3])}, …), not a "
            f"{type(document).__name__}"
        )
    document = {key: value for key, value in document.items() if key != "source"}
    unknown = sorted(set(document) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; valid keys are: {', '.join(_KEYS)}")
    missing = [key for key in _KEYS if key not in document and key not in _OPTIONAL]
    if missing:
        raise ConfigError(
            f"{source}: missing key {missing[0]!r}; a target file needs: "
            f"{', '.join(k for k in _KEYS if k not in _OPTIONAL)}"
        )
    values = {**_OPTIONAL, **document}
    for field in fields(Target):
        if field.name == "source":
            continue
        values[field.name] = _checked(values[field.name], field.name, source)
    _check_choices(values, source)
    return Target(**values, source=source)


def _checked(value: Any, key: str, source: str) -> Any:
    expected = {"threads": int, "memory_mb": int}.get(
        key, tuple if key in ("engines", "providers", "precisions", "aliases") else str
    )
    if expected is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{source}: key {key!r} must be a list of strings, got {value!r}")
        return tuple(value)
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{source}: key {key!r} must be a whole number >= 0, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{source}: key {key!r} must be a string, got {value!r}")
    return value


def _check_choices(values: dict[str, Any], source: str) -> None:
    for key, allowed in (("kind", TARGET_KINDS),):
        if values[key] not in allowed:
            raise ConfigError(f"{source}: key {key!r} is {values[key]!r}; choose one of: {', '.join(allowed)}")
    for key, items in (("engines", ENGINE_NAMES), ("precisions", PRECISIONS)):
        bad = [item for item in values[key] if item not in items]
        if bad or not values[key]:
            raise ConfigError(f"{source}: key {key!r} has {bad or 'nothing'}; use items of: {', '.join(items)}")


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10 (JetPack 6): the tomli backport
        try:
            import tomli as tomllib
        except ImportError as exc:
            raise ConfigError(f"{path}: reading target files on Python 3.10 needs tomli: pip install tomli") from exc
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _packaged() -> dict[str, Target]:
    folder = targets_dir()
    targets: dict[str, Target] = {}
    names: dict[str, str] = {}  # name or alias → the file that claims it
    for path in sorted(folder.glob("*.toml")):
        target = load_target_file(path)
        if target.name != path.stem:
            raise ConfigError(
                f"{path}: key 'name' is {target.name!r} but the file is {path.name}; name the file {target.name}.toml"
            )
        for claimed in (target.name, *target.aliases):
            if claimed in names:
                raise ConfigError(f"{path}: {claimed!r} is already the name or an alias of {names[claimed]}")
            names[claimed] = str(path)
        targets[target.name] = target
    if not targets:
        raise ConfigError(f"{folder}: no target files found; the edgecls install is incomplete")
    return targets
