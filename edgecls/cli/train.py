"""``edgecls train``: a classifier from a data set, with a progress bar on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecls.cli.app import JsonOption, app, console, progress_console, require_workstation, run, styled

DataOption = Annotated[
    str,
    typer.Option(
        "--data",
        "-d",
        help="'digits' (built-in 8x8 handwritten digits) or a folder of <class>/ image subfolders (optionally train/ "
        "and val/).",
    ),
]


@app.command()
def train(
    data: DataOption = "digits",
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Registry name: cnn, mobilenetv2, mobilenetv3small, resnet50 (see `edgecls models`)."
        ),
    ] = "cnn",
    img_size: Annotated[
        int | None,
        typer.Option(
            "--img-size",
            help="Square input size in pixels (default: the model's: cnn 32, MobileNets 96, ResNet50 224).",
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Maximum epochs (early stopping may end sooner). Default: a keras.applications base from scratch "
            "(--weights none) trains 2,000 optimiser steps, at least 25 epochs; anything else 20 epochs."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = 64,
    val_split: Annotated[
        float, typer.Option("--val-split", help="Fraction held out per class when the data has no val/ folder.")
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for the split, initialisation and shuffling.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default: runs/<model>-<data>).")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run in --out from its last completed epoch.")
    ] = False,
    alpha: Annotated[float, typer.Option(help="Width multiplier for MobileNets.")] = 1.0,
    weights: Annotated[
        str | None,
        typer.Option(
            help="Where the base starts: imagenet (Keras' cache, downloaded once), none (from scratch), or a file "
            "(a Keras *_notop.h5 / .weights.h5, or a model.keras from an earlier edgecls train). "
            "Default: imagenet for a photo folder where Keras has ImageNet weights for this "
            "--model/--alpha/--img-size, else none."
        ),
    ] = None,
    freeze_base: Annotated[
        bool,
        typer.Option(
            "--freeze-base", help="Train only the head on the frozen base (phase 1 only, unless --finetune-epochs)."
        ),
    ] = False,
    learning_rate: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help="Initial learning rate (cosine decay to 1 %). Default: 3e-3 for a keras.applications base from "
            "scratch (--weights none), else 1e-3.",
        ),
    ] = None,
    finetune_epochs: Annotated[
        int | None,
        typer.Option(
            "--finetune-epochs",
            help=(
                "Phase 2 of a pretrained base: epochs fine-tuning its top after --epochs of the head "
                "(default 10; 0 = off)."
            ),
        ),
    ] = None,
    finetune_lr: Annotated[
        float | None,
        typer.Option("--finetune-lr", help="Phase 2's initial learning rate (default: a tenth of --lr)."),
    ] = None,
    unfreeze: Annotated[
        int | None,
        typer.Option(
            "--unfreeze",
            help="Phase 2 trains the top N layers of the base (default: all of it; BatchNorm stays frozen).",
        ),
    ] = None,
    unfreeze_from: Annotated[
        str | None, typer.Option("--unfreeze-from", help="Phase 2 trains this base layer and every one after it.")
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(
            help="Early stopping: epochs without a better val accuracy (0 = off; default 8, a quarter of the epochs "
            "for a base from scratch); an epoch does not count while validation has never left chance and training "
            "accuracy still rises."
        ),
    ] = None,
    class_weights: Annotated[
        str, typer.Option("--class-weights", help="'auto' weights classes inversely to their frequency; 'none'.")
    ] = "none",
    augment: Annotated[
        str,
        typer.Option(
            help="'auto' (none for digits; flip,rotate,zoom for photos), 'none', or a list of flip, rotate, zoom, "
            "robust (camera noise, blur, JPEG, low light, …) and randaugment (Keras' RandAugment), like flip,robust."
        ),
    ] = "auto",
    mixed_precision: Annotated[bool, typer.Option("--mixed-precision", help="float16 compute on GPUs.")] = False,
    channels: Annotated[
        str | None, typer.Option(help="gray or rgb (default: gray for digits, rgb for folders).")
    ] = None,
    cache: Annotated[
        str,
        typer.Option(
            help="Where decoded pixels live: memory, disk (decoded once into <run>/cache/, streamed each epoch), "
            "none (decoded from the files every epoch), or auto (memory if they take at most half the free RAM)."
        ),
    ] = "auto",
    adversarial: Annotated[
        float, typer.Option(help="Adversarial training: FGSM images at EPS pixel levels (1..255) in every batch.")
    ] = 0.0,
    init_from: Annotated[
        Path | None, typer.Option("--init-from", help="Fine-tune this model.keras on --data (the deployment loop).")
    ] = None,
    replay: Annotated[
        str | None, typer.Option(help="With --init-from: the original training data, a sample of it replayed.")
    ] = None,
    replay_fraction: Annotated[
        float, typer.Option("--replay-fraction", help="Share of the training set replayed from --replay (0..1).")
    ] = 0.5,
    precise_bn: Annotated[
        int | None,
        typer.Option(
            "--precise-bn",
            help="BatchNorm statistics re-estimated from N training images before each validation (default: 512 "
            "for a keras.applications base from scratch, else 0 = off: the moving averages of training).",
        ),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Train a classifier; writes model.keras, history, metrics, config and curves to runs/NAME/."""
    require_workstation()
    from edgecls.train import TrainConfig
    from edgecls.train import train as train_model

    def call():
        config = TrainConfig(  # inside run(): a bad value is a one-line error
            data=data,
            model=model,
            img_size=img_size,
            epochs=epochs,
            batch_size=batch_size,
            val_split=val_split,
            seed=seed,
            out=str(out) if out else None,
            resume=resume,
            alpha=alpha,
            weights=weights,
            freeze_base=freeze_base,
            learning_rate=learning_rate,
            finetune_epochs=finetune_epochs,
            finetune_lr=finetune_lr,
            unfreeze=unfreeze,
            unfreeze_from=unfreeze_from,
            patience=patience,
            class_weights=class_weights,
            augment=augment,
            mixed_precision=mixed_precision,
            channels=channels,
            cache=cache,
            adversarial=adversarial,
            init_from=str(init_from) if init_from else None,
            replay=replay,
            replay_fraction=replay_fraction,
            precise_bn=precise_bn,
        )
        return train_model(config, callbacks=[epoch_progress(epochs or 0)])

    run(call, as_json=json, render=_render_train)


def epoch_progress(epochs: int = 0):
    """A Keras callback drawing a progress bar on stderr (batches within epochs)."""
    import keras
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class RichProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=progress_console(),
                transient=False,
            )
            self.progress.start()
            self.task = None

        def on_epoch_begin(self, epoch, logs=None):
            steps = self.params.get("steps") or None
            self.task = self.progress.add_task(
                f"epoch {epoch + 1}/{self.params.get('epochs') or epochs}", total=steps, metrics=""
            )

        def on_train_batch_end(self, batch, logs=None):
            self.progress.update(
                self.task, completed=batch + 1, metrics=f"loss {logs.get('loss', 0):.3f}" if logs else ""
            )

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            summary = " ".join(
                f"{k} {v:.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")
            )
            self.progress.update(self.task, metrics=summary)

        def on_train_end(self, logs=None):
            self.progress.stop()

    return RichProgress()


def _render_train(result) -> None:
    out = console()
    out.print(
        styled(f"val top-1 {result.val_accuracy:.2%}"),
        f"on {result.n_val} held-out images (best epoch {result.best_epoch}/{result.epochs_run}, trained on "
        f"{result.device}, {result.seconds:.0f} s)",
    )
    phases = (
        " + ".join(f"{n} epochs phase {i}" for i, n in enumerate(result.phase_epochs, start=1))
        if len(result.phase_epochs) > 1
        else ""
    )
    out.print(f"weights: {result.weights}" + (f" (two phases: {phases})" if phases else ""))
    for split in ("old", "new"):
        if split in result.validation:
            figures = result.validation[split]
            out.print(f"{split} val top-1 {figures['top1']:.2%} on {figures['n']} images of {figures['data']}")
    for warning in result.warnings:
        out.print(styled("warning:", "bold yellow"), warning)
    if result.skipped_files:
        out.print(f"skipped {len(result.skipped_files)} undecodable file(s): " + ", ".join(result.skipped_files))
    out.print(f"model: {result.model_path}")
    out.print(f"run:   {result.run_dir}/ (history.json, metrics.json, config.json, curves.png, tb/)")
