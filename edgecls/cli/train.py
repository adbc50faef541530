"""``edgecls train``, ``edgecls evaluate``, ``edgecls export``: the spine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgecls.cli.app import app, console, progress_console, run, styled

DataOption = Annotated[str, typer.Option("--data", "-d", help="'digits' (built-in 8x8 handwritten digits) or a folder of <class>/ image subfolders (optionally train/ and val/).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (progress stays on stderr).")]


@app.command()
def train(
    data: DataOption = "digits",
    model: Annotated[str, typer.Option("--model", "-m", help="Registry name: cnn, mobilenetv2, mobilenetv3small, resnet50 (see `edgecls models`).")] = "cnn",
    img_size: Annotated[Optional[int], typer.Option("--img-size", help="Square input size in pixels (default: the model's: cnn 32, MobileNets 96, ResNet50 224).")] = None,
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping may end sooner).")] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = 64,
    val_split: Annotated[float, typer.Option("--val-split", help="Fraction held out per class when the data has no val/ folder.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for the split, initialisation and shuffling.")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: runs/<model>-<data>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out from its last completed epoch.")] = False,
    alpha: Annotated[float, typer.Option(help="Width multiplier for MobileNets.")] = 1.0,
    weights: Annotated[Optional[Path], typer.Option(help="Local weights file for the base network (e.g. a Keras *_notop.h5).")] = None,
    freeze_base: Annotated[bool, typer.Option("--freeze-base", help="Train only the head (transfer learning).")] = False,
    learning_rate: Annotated[float, typer.Option("--lr", help="Initial learning rate (cosine decay to 1 %).")] = 1e-3,
    patience: Annotated[int, typer.Option(help="Early stopping: epochs without a better val accuracy (0 = off).")] = 8,
    class_weights: Annotated[str, typer.Option("--class-weights", help="'auto' weights classes inversely to their frequency; 'none'.")] = "none",
    augment: Annotated[str, typer.Option(help="'auto' (none for digits; flip,rotate,zoom for photos), 'none', or a list like flip,zoom.")] = "auto",
    mixed_precision: Annotated[bool, typer.Option("--mixed-precision", help="float16 compute on GPUs.")] = False,
    channels: Annotated[Optional[str], typer.Option(help="gray or rgb (default: gray for digits, rgb for folders).")] = None,
    json: JsonOption = False,
) -> None:
    """Train a classifier; writes model.keras, history, metrics, config and curves to runs/NAME/."""
    from edgecls.train import TrainConfig, train as train_model

    def call():
        config = TrainConfig(  # inside run(): a bad value is a one-line error
            data=data, model=model, img_size=img_size, epochs=epochs, batch_size=batch_size, val_split=val_split, seed=seed,
            out=str(out) if out else None, resume=resume, alpha=alpha, weights=str(weights) if weights else None, freeze_base=freeze_base,
            learning_rate=learning_rate, patience=patience, class_weights=class_weights, augment=augment, mixed_precision=mixed_precision, channels=channels,
        )
        return train_model(config, callbacks=[epoch_progress(epochs)])

    run(call, as_json=json, render=_render_train)


def epoch_progress(epochs: int):
    """A Keras callback drawing a progress bar on stderr (batches within epochs)."""
    import keras
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class RichProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[metrics]}"), console=progress_console(), transient=False)
            self.progress.start()
            self.task = None

        def on_epoch_begin(self, epoch, logs=None):
            steps = self.params.get("steps") or None
            self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.params.get('epochs', epochs)}", total=steps, metrics="")

        def on_train_batch_end(self, batch, logs=None):
            self.progress.update(self.task, completed=batch + 1, metrics=f"loss {logs.get('loss', 0):.3f}" if logs else "")

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            summary = " ".join(f"{k} {v:.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
            self.progress.update(self.task, metrics=summary)

        def on_train_end(self, logs=None):
            self.progress.stop()

    return RichProgress()


def _render_train(result) -> None:
    out = console()
    out.print(styled(f"val top-1 {result.val_accuracy:.2%}"), f"on {result.n_val} held-out images (best epoch {result.best_epoch}/{result.epochs_run}, trained on {result.device}, {result.seconds:.0f} s)")
    if result.skipped_files:
        out.print(f"skipped {len(result.skipped_files)} undecodable file(s): " + ", ".join(result.skipped_files))
    out.print(f"model: {result.model_path}")
    out.print(f"run:   {result.run_dir}/ (history.json, metrics.json, config.json, curves.png, tb/)")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help=".keras, .tflite or .onnx (the last two run through edgecls.runtime).")],
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="digits or a folder (default: the data set recorded in the model).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Engine threads for .tflite/.onnx (default: all cores).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where the confusion matrix PNG and JSON go (default: beside the model).")] = None,
    json: JsonOption = False,
) -> None:
    """Top-1/top-5, per-class precision/recall/F1 and a confusion matrix on the held-out split."""
    from edgecls.evaluate import evaluate as evaluate_model

    run(lambda: evaluate_model(model, data, threads=threads, out_dir=out), as_json=json, render=_render_evaluate)


def _render_evaluate(result) -> None:
    from rich.table import Table

    out = console()
    top5 = f", top-5 {result.top5:.2%}" if result.top5 is not None else ""
    out.print(styled(f"top-1 {result.top1:.2%}") + top5, f"on {result.n_images} validation images of {result.data}")
    out.print(f"measured with {result.engine}")
    table = Table("class", "precision", "recall", "F1", "support")
    for row in result.per_class:
        table.add_row(row["label"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    out.print(table)
    out.print(f"confusion matrix: {result.confusion_png}")


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="A trained .keras model.")],
    format: Annotated[str, typer.Option("--format", "-f", help="Comma-separated: tflite, onnx.")] = "tflite,onnx",
    fp16: Annotated[bool, typer.Option("--fp16", help="FP16 weights for the TFLite artifact (GPU delegates, Jetson).")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: <model folder>/export).")] = None,
    unsafe_load: Annotated[bool, typer.Option("--unsafe-load", help="Load a .keras file with safe mode off (only for files you trust).")] = False,
    json: JsonOption = False,
) -> None:
    """Write .tflite/.onnx with labels and provenance inside, and check parity against Keras."""
    from edgecls.export import export as export_model

    formats = tuple(part.strip() for part in format.split(",") if part.strip())
    run(lambda: export_model(model, formats=formats, fp16=fp16, out_dir=out, unsafe=unsafe_load), as_json=json, render=_render_export)


def _render_export(result) -> None:
    from rich.table import Table

    table = Table("artifact", "format", "precision", "size", "parity top-1", "max |Δ score|")
    for artifact in result.artifacts:
        table.add_row(artifact.path, artifact.format, artifact.precision, f"{artifact.size_bytes / 1024:.0f} KiB", f"{artifact.parity_top1:.2%}", f"{artifact.parity_max_abs:.2e}")
    out = console()
    out.print(table)
    if result.artifacts:
        out.print(f"parity against Keras on {result.artifacts[0].parity_sample}, through edgecls.runtime on this host")


@app.command()
def models(json: JsonOption = False) -> None:
    """List the model registry."""
    from edgecls.models import get_entry, list_models

    def registry() -> dict:
        entries = [get_entry(name) for name in list_models()]
        return {"models": [{"name": e.name, "default_image_size": e.default_image_size, "min_image_size": e.min_image_size, "description": e.description} for e in entries]}

    def render(result: dict) -> None:
        for entry in result["models"]:
            typer.echo(f"{entry['name']:18s} {entry['default_image_size']:>4d}px  {entry['description']}")

    run(registry, as_json=json, render=render, tensorflow=False)
