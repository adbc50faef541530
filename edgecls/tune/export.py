"""A trial as stage options: what the objective runs, and the pipeline TOML that reproduces it (``--export``).

``stage_tables`` is the one place a trial's choices become stage options; the objective builds its ``TrainConfig``,
``PruneConfig`` and ``QuantizeConfig`` from these tables, and ``edgecls tune --export runs/tune --trial N`` writes
the same tables as a pipeline file, so ``edgecls pipeline`` runs the very same stages (INT8 kept fully integer:
``max_float_layers = 0``, as the candidate whose latency was measured before training).

>>> tables = stage_tables(Choices("cnn", None, 32, "none", 0.25, "fp16"), Training(), calib=None)
>>> sorted(tables), tables["prune"]["ratio"], tables["quantize"]["precisions"]
(['prune', 'quantize', 'train'], 0.25, ['fp16'])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError
from edgecls.base.fileio import write_text
from edgecls.tune.space import Choices, Training


def stage_tables(
    choices: Choices, training: Training, *, calib: str | None, epochs: int | None = None
) -> dict[str, dict[str, Any]]:
    """The [train], [prune] and [quantize] or [export] options of a trial trained for ``epochs`` (default: the full
    budget). A pretrained start spends half the epochs on the head, half fine-tuning the base."""
    epochs = epochs or training.epochs
    batch_size = training.batch_size
    train: dict[str, Any] = {"model": choices.backbone, "img_size": choices.size, "weights": choices.weights}
    if choices.alpha is not None:
        train["alpha"] = choices.alpha
    if choices.weights == "imagenet" and epochs > 1:
        train.update(epochs=(epochs + 1) // 2, finetune_epochs=epochs // 2)
    else:
        train["epochs"] = epochs
    train["batch_size"] = batch_size
    tables: dict[str, dict[str, Any]] = {"train": train}
    if choices.ratio:
        tables["prune"] = {
            "ratio": choices.ratio,
            "finetune_epochs": training.prune_finetune_epochs,
            "batch_size": batch_size,
            "measure_tflite": False,
        }
    if choices.precision == "fp32":
        tables["export"] = {"formats": ["tflite"]}
    else:
        quantize: dict[str, Any] = {"precisions": [choices.precision], "max_float_layers": 0}
        if choices.precision == "int8":
            if calib is None:
                raise ConfigError("an INT8 trial needs a calibration folder")
            quantize.update(calib=calib, formats=["tflite"])
        tables["quantize"] = quantize
    return tables


def pipeline_toml(
    tables: dict[str, dict[str, Any]], *, name: str, data: str, seed: int, targets: list[str], comment: list[str]
) -> str:
    """A pipeline file: the trial's stage tables, then [bench] on its targets."""
    lines = [f"# {line}" for line in comment]
    lines += [f"name = {_value(name)}", f"data = {_value(data)}", f"seed = {seed}"]
    for stage, table in [*tables.items(), ("bench", {"targets": targets})]:
        lines += ["", f"[{stage}]"]
        lines += [f"{key} = {_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    """A TOML value: strings and numbers as JSON writes them (valid TOML), lists of them, booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, (int, float, str)):
        return json.dumps(value)
    raise TypeError(f"no TOML form for {value!r}")


def export_trial(out: str | Path, number: int, *, path: str | Path | None = None, storage: str | None = None) -> Path:
    """Write the pipeline TOML that reproduces trial ``number`` of the study in ``out`` (``out/trial-N.toml``)."""
    from edgecls.tune.storage import load_saved_study

    saved = load_saved_study(out, storage=storage)
    trial = saved.trial(number)
    attrs = trial.user_attrs
    if "artifact" not in attrs:
        verdict = attrs.get("verdict", trial.state.name.lower())
        raise ConfigError(
            f"{out}: trial {number} made no artifact ({verdict}); export a trained trial (edgecls tune --show {out})"
        )
    choices = Choices(**attrs["choices"])
    tables = stage_tables(choices, saved.space.training, calib=saved.calib)
    comment = [
        f"trial {number} of the edgecls tune study in {out}: {choices.label()}",
        f"tuned: top-1 {100 * trial.values[0]:.2f} % at {trial.values[1]:.3f} ms (p50; {attrs['latency']['where']})",
        "reproduce it with: edgecls pipeline THIS_FILE",
    ]
    text = pipeline_toml(
        tables,
        name=f"tune-trial-{number}",
        data=saved.data,
        seed=saved.seed,
        targets=[target for target, _remote in saved.devices],
        comment=comment,
    )
    destination = Path(path) if path else Path(out) / f"trial-{number}.toml"
    write_text(destination, text)
    return destination
