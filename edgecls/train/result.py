"""What a training run leaves: the kept model with its metadata, ``metrics.json``, ``history.json`` and curves."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecls.base.fileio import write_json
from edgecls.data import Dataset, to_tf_dataset
from edgecls.runtime.metadata import ModelInfo
from edgecls.train.config import TrainConfig
from edgecls.train.fit import best_epoch
from edgecls.train.runs import describe_device, version
from edgecls.train.watch import kept_warnings


@dataclass
class TrainResult:
    model_path: Path
    run_dir: Path
    val_accuracy: float
    val_loss: float
    epochs_run: int
    best_epoch: int
    n_train: int
    n_val: int
    class_names: list[str]
    skipped_files: list[str]
    seconds: float
    device: str
    weights: str = "none"  # what the base started from: imagenet, none, or the file
    phase_epochs: list[int] = field(default_factory=list)  # epochs run in phase 1 (and phase 2)
    warnings: list[str] = field(default_factory=list)  # e.g. validation accuracy at chance
    validation: dict[str, Any] = field(default_factory=dict)  # --init-from: top-1 on the old and the new val split

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model_path"], data["run_dir"] = str(self.model_path), str(self.run_dir)
        return data


def finish(
    model,
    dataset: Dataset,
    config: TrainConfig,
    run_dir: Path,
    history: dict[str, list[float]],
    channel_order: str,
    started: float,
    watch: Any,
) -> TrainResult:
    val_loss, val_accuracy = (
        float(v)
        for v in model.evaluate(to_tf_dataset(dataset.val, batch_size=config.batch_size, training=False), verbose=0)
    )
    accuracies = history.get("val_accuracy", [val_accuracy])
    info = ModelInfo(
        labels=dataset.class_names,
        input_size=tuple(model.input_shape[1:3]),
        channels=int(model.input_shape[3]),
        channel_order=channel_order,
        provenance={
            "source_model": config.model,
            "dataset": dataset.name,
            "split": dataset.split,
            "val_accuracy": round(val_accuracy, 6),
            "n_train": len(dataset.train),
            "n_val": len(dataset.val),
            "run": str(run_dir),
            "precision": "fp32",
            "weights": str(config.weights),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "edgecls": version(),
        },
    )
    from edgecls.adapters.keras_io import save_keras_model

    model_path = save_keras_model(model, run_dir / "model.keras", info)
    result = TrainResult(
        model_path=model_path,
        run_dir=run_dir,
        val_accuracy=val_accuracy,
        val_loss=val_loss,
        epochs_run=len(accuracies),
        best_epoch=best_epoch(history),
        n_train=len(dataset.train),
        n_val=len(dataset.val),
        class_names=list(dataset.class_names),
        skipped_files=dataset.skipped,
        seconds=round(time.time() - started, 2),
        device=describe_device(),
        weights=str(config.weights),
        phase_epochs=[
            history.get("phase", []).count(phase) for phase in (1.0, 2.0) if phase in history.get("phase", [])
        ],
        warnings=kept_warnings(watch, val_accuracy),
    )
    write_json(run_dir / "history.json", history)
    write_json(run_dir / "metrics.json", result.to_dict())
    from edgecls.base.plots import plot_curves

    plot_curves(history, run_dir / "curves.png")
    return result
