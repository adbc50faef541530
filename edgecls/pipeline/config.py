"""The pipeline's TOML file: data, seed, and one table per stage that runs.

```toml
name = "digits"            # outputs in runs/<name>/
data = "digits"            # or a folder of <class>/ images
seed = 0

[train]                    # the options of `edgecls train`
model = "cnn"
epochs = 20

[prune]                    # of `edgecls prune` (the trained model is the input)
ratio = 0.5

[distill]                  # of `edgecls distill` (teacher: the trained model; student: the pruned one)
epochs = 10

[quantize]                 # of `edgecls quantize`, for each precision listed
precisions = ["int8", "fp16"]
calib = "calib_data/digits"

[export]                   # FP32 artifacts of every Keras stage
formats = ["tflite", "onnx"]

[robustness]               # optional: `edgecls evaluate --corruptions` of every artifact (a report column)
severities = [1, 2, 3, 4, 5]   # default: all; corruptions = [...] picks some (default: all)

[bench]                    # of `edgecls bench`, once per target
targets = ["host", "rpi5"]
runs = 100

[compare]                  # optional: `edgecls compare A B`, the A/B verdict against the model in the field
a = "deployed/v1.tflite"   # A: the model deployed today (a file; required)
b = "INT8 tflite"          # B: a report row's name or a file; default: the deployed candidate of this run
target = "rpi5"            # also both latencies there (optional); data = "..." scores another folder
```
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from edgecls.base.errors import ConfigError

log = logging.getLogger(__name__)

STAGES = ("train", "prune", "distill", "quantize", "export", "robustness", "bench", "compare")
TOP_LEVEL = ("name", "data", "seed", "runs_dir", *STAGES)


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    data: str
    seed: int
    stages: dict[str, dict[str, Any]]  # stage name → its options, in STAGES order, enabled ones only
    source: str
    base_dir: Path = field(default=Path("."))  # relative paths in the file are relative to it
    runs_dir: Path = field(default=Path("runs"))

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name

    def resolve(self, path: str) -> str:
        """A relative path from the file: found beside it, else in the folder above it (a repository's
        ``calib_data/`` for ``examples/*.toml``), else from the current directory; ``digits`` stays ``digits``."""
        if path == "digits" or Path(path).is_absolute():
            return path
        for candidate in (self.base_dir / path, self.base_dir.parent / path, Path(path)):
            if candidate.exists():
                return str(candidate)
        return str(self.base_dir / path)  # missing: the error names where it was looked for first

    def resolve_target(self, target: str) -> str:
        """A target name as given; a target file (``.toml``/``.json``) found as ``resolve`` finds paths."""
        return self.resolve(target) if target.endswith((".toml", ".json")) else target


def load_pipeline_config(path: str | Path, *, runs_dir: str | Path | None = None) -> PipelineConfig:
    """Read and check a pipeline file; unknown tables or keys are errors that list the valid ones."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such pipeline file")
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    unknown = sorted(set(document) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(TOP_LEVEL)}")
    if "train" not in document:
        raise ConfigError(f"{path}: a pipeline needs a [train] table (the model every later stage starts from)")
    for stage in STAGES:
        if stage in document and not isinstance(document[stage], dict):
            raise ConfigError(f"{path}: '{stage}' must be a table ([{stage}])")
    for key, kind, wanted in (
        ("name", str, "a string"),
        ("data", str, "a string"),
        ("seed", int, "an integer"),
        ("runs_dir", str, "a string"),
    ):
        if key in document and (not isinstance(document[key], kind) or isinstance(document[key], bool)):
            raise ConfigError(f"{path}: {key} must be {wanted}, got {document[key]!r}")
    config = PipelineConfig(
        name=str(document.get("name", path.stem)),
        data=str(document.get("data", "digits")),
        seed=int(document.get("seed", 0)),
        stages={stage: dict(document[stage]) for stage in STAGES if stage in document},
        source=str(path),
        base_dir=path.parent,
        runs_dir=Path(runs_dir) if runs_dir else Path(document.get("runs_dir", "runs")),
    )
    return with_target_scheme(config)


def with_target_scheme(config: PipelineConfig) -> PipelineConfig:
    """A pipeline that benches a Jetson quantizes its ONNX INT8 as TensorRT builds it (``onnx_scheme = "tensorrt"``).

    Chosen here, in the [quantize] options, so that the stage's key changes with it (adding a Jetson to
    [bench] re-runs [quantize]); an ``onnx_scheme`` the file sets itself is kept.
    """
    quantize = config.stages.get("quantize")
    targets = config.stages.get("bench", {}).get("targets", ())
    if quantize is None or "onnx_scheme" in quantize or not isinstance(targets, (list, tuple)):
        return config
    from edgecls.quantize.config import onnx_scheme_for

    resolved = [config.resolve_target(t) for t in targets if isinstance(t, str)]
    jetsons = [target for target in resolved if onnx_scheme_for(target) == "tensorrt"]
    if not jetsons:
        return config
    log.info("[quantize] onnx_scheme = tensorrt: [bench] targets %s", ", ".join(jetsons))
    return dataclasses.replace(config, stages={**config.stages, "quantize": {**quantize, "onnx_scheme": "tensorrt"}})


def stage_options(config_class: type, options: dict[str, Any], *, stage: str, source: str, **fixed: Any):
    """Build ``config_class`` from a stage table plus the pipeline's fixed fields, with a clear error."""
    import dataclasses

    valid = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ConfigError(
            f"{source}: [{stage}] has unknown option(s) {', '.join(unknown)}; valid: "
            f"{', '.join(sorted(valid - set(fixed)))}"
        )
    values = {**options, **fixed}
    for name, value in values.items():  # TOML arrays → the tuples frozen configs use
        if isinstance(value, list):
            values[name] = tuple(value)
    return config_class(**values)
