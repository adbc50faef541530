"""A pipeline file checked before anything runs: every stage's options against its config class.

A typo in ``[bench]`` should not surface after ten minutes of training: names, value
types (against each option's default) and the values the stages choose from are all
checked when the pipeline starts (``check_options``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError
from edgecls.pipeline.config import PipelineConfig

# stage → (module, config class, options the pipeline fills in, options of the pipeline's own)
STAGE_CONFIGS: dict[str, tuple[str | None, str | None, tuple[str, ...], tuple[str, ...]]] = {
    "train": ("edgecls.train", "TrainConfig", ("data", "seed", "out", "resume"), ()),
    "prune": ("edgecls.prune", "PruneConfig", ("data", "seed", "out"), ()),
    "distill": ("edgecls.distill", "DistillConfig", ("teacher", "data", "seed", "out", "resume"), ("student",)),
    "quantize": (
        "edgecls.quantize",
        "QuantizeConfig",
        ("precision", "seed", "out", "eval_data", "qat_data"),
        ("precisions",),
    ),
    "export": (None, None, (), ("formats",)),
    "robustness": (None, None, (), ("severities", "corruptions")),
    "bench": ("edgecls.bench", "BenchConfig", ("models", "target", "data", "out"), ("targets",)),
    "compare": (None, None, (), ("a", "b", "data", "target", "runs", "warmup")),
}


MODEL_SUFFIXES = (".keras", ".tflite", ".onnx")


def check_options(config: PipelineConfig) -> None:
    """Every stage's options against its config class, before anything runs:
    a typo in [bench] should not surface after ten minutes of training.

    Names, value types (against each option's default) and the values the
    pipeline itself chooses from (targets, precisions, formats) are checked.
    """
    import dataclasses
    import importlib

    for stage, options in config.stages.items():
        module, class_name, filled, own = STAGE_CONFIGS[stage]
        valid = set(own)
        defaults: dict[str, Any] = {}
        if module is not None:
            config_class = getattr(importlib.import_module(module), class_name)
            fields = [f for f in dataclasses.fields(config_class) if f.name not in filled]
            valid |= {f.name for f in fields}
            # an optional option (default None: resolved later, e.g. TrainConfig.epochs) is typed by its annotation
            defaults = {
                f.name: f.default if f.default is not None else OPTIONAL_TYPES.get(str(f.type))
                for f in fields
                if f.default is not dataclasses.MISSING
            }
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ConfigError(
                f"{config.source}: [{stage}] has unknown option(s) {', '.join(unknown)}; valid: "
                f"{', '.join(sorted(valid))}"
            )
        for name, value in options.items():
            expected = _expected_type(defaults[name]) if name in defaults else OWN_OPTION_TYPES.get(name)
            if expected is not None and not _is_a(value, expected):
                raise ConfigError(f"{config.source}: [{stage}] {name} must be {expected}, got {value!r}")
    _check_choices(config)


# the types of the options the pipeline reads itself (STAGE_CONFIGS' last column)
OWN_OPTION_TYPES = {
    "precisions": "a list",
    "formats": "a list",
    "targets": "a list",
    "student": "a string",
    "severities": "a list",
    "corruptions": "a list",
    "a": "a string",
    "b": "a string",
    "data": "a string",
    "target": "a string",
    "runs": "an integer",
    "warmup": "an integer",
}


# annotations (strings: ``from __future__ import annotations``) of options whose default is None
OPTIONAL_TYPES = {"int | None": 0, "float | None": 0.0, "str | None": "", "bool | None": False}


def _expected_type(default: Any) -> str | None:
    for kind, name in (
        (bool, "true or false"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (tuple, "a list"),
    ):
        if isinstance(default, kind):
            return name
    return None  # None defaults (paths, optional numbers) take what the stage checks itself


def _is_a(value: Any, expected: str) -> bool:
    return {
        "true or false": isinstance(value, bool),
        "an integer": isinstance(value, int) and not isinstance(value, bool),
        "a number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "a string": isinstance(value, str),
        "a list": isinstance(value, (list, tuple)),
    }[expected]


def _check_choices(config: PipelineConfig) -> None:
    """The values the pipeline loops over: an unknown one fails now, not after the stages before it."""
    from edgecls.export import FORMATS
    from edgecls.quantize import PRECISIONS
    from edgecls.runtime.targets import get_target

    stages = config.stages
    for stage, name, allowed in (
        ("quantize", "precisions", PRECISIONS),
        ("export", "formats", FORMATS),
        ("quantize", "formats", FORMATS),
    ):
        chosen = stages.get(stage, {}).get(name, ())
        wrong = [value for value in chosen if value not in allowed]
        if wrong:
            raise ConfigError(
                f"{config.source}: [{stage}] {name} has {', '.join(map(repr, wrong))}; choose from {', '.join(allowed)}"
            )
    from edgecls.runtime.corruptions import SEVERITIES, list_corruptions

    robustness = stages.get("robustness", {})
    for name, chosen, allowed in (
        ("severities", robustness.get("severities", ()), SEVERITIES),
        ("corruptions", robustness.get("corruptions", ()), list_corruptions()),
    ):
        wrong = [value for value in chosen if value not in allowed]
        if wrong:
            raise ConfigError(
                f"{config.source}: [robustness] {name} has {', '.join(map(repr, wrong))}; "
                f"choose from {', '.join(map(str, allowed))}"
            )
    for target in map(str, stages.get("bench", {}).get("targets", ())):
        get_target(config.resolve_target(target))
    if "compare" in stages:
        _check_compare(config, stages["compare"])


def _check_compare(config: PipelineConfig, options: dict[str, Any]) -> None:
    """[compare]: A a model file that exists, B (when a file) too, the target known, the counts positive."""
    from edgecls.runtime.targets import get_target

    where = f"{config.source}: [compare]"
    if "a" not in options:
        raise ConfigError(f'{where} needs a = "<the deployed model: .keras, .tflite or .onnx>" to compare against')
    for name in ("a", "b"):
        value = options.get(name)
        if value is None or (name == "b" and not value.endswith(MODEL_SUFFIXES)):
            continue  # b: a report row's name, checked when the stage runs (the rows exist then)
        path = Path(config.resolve(value))
        if not value.endswith(MODEL_SUFFIXES):
            raise ConfigError(f"{where} {name} = {value!r}: not a model file ({', '.join(MODEL_SUFFIXES)})")
        if not path.is_file():
            raise ConfigError(f"{where} {name} = {value!r}: no such file ({path})")
    if "data" in options and options["data"] != "digits" and not Path(config.resolve(options["data"])).is_dir():
        raise ConfigError(f"{where} data = {options['data']!r}: no such folder")
    for name in ("runs", "warmup"):
        if name in options and options[name] < (1 if name == "runs" else 0):
            raise ConfigError(f"{where} {name} must be {'at least 1' if name == 'runs' else '0 or more'}")
    if "target" in options:
        get_target(config.resolve_target(options["target"]))
