"""``TrainConfig``: the options of ``edgecls train``, checked when made; the defaults are the CLI's."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from edgecls.base.errors import ConfigError
from edgecls.data import parse_augment
from edgecls.data.cache import CACHE_MODES
from edgecls.train.fit import FitOptions


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``edgecls train``; defaults are the CLI's defaults."""

    data: str = "digits"
    model: str = "cnn"
    img_size: int | None = None  # None: the model's default (cnn 32, MobileNets 96, ResNet50 224)
    epochs: int | None = (
        None  # None: SCRATCH_STEPS' worth for a keras.applications base from scratch, else DEFAULT_EPOCHS
    )
    batch_size: int = 64
    val_split: float = 0.2
    seed: int = 0
    out: str | None = None  # None: runs/<model>-<data name>
    resume: bool = False
    alpha: float = 1.0
    weights: str | None = (
        None  # imagenet | none | a file; None: imagenet for a photo folder where Keras has them, else none
    )
    freeze_base: bool = False  # phase 1 only (no fine-tuning unless finetune_epochs says so)
    learning_rate: float | None = None  # None: as epochs, SCRATCH_ or DEFAULT_LEARNING_RATE (resolved())
    finetune_epochs: int | None = None  # phase 2; None: DEFAULT_FINETUNE_EPOCHS with a pretrained base, else 0
    finetune_lr: float | None = None  # None: learning_rate / 10
    unfreeze: int | None = None  # phase 2 trains the top N base layers; None (and no unfreeze_from): the whole base
    unfreeze_from: str | None = None  # phase 2 trains this base layer and every one after it
    patience: int | None = None  # None: PATIENCE, or a quarter of a from-scratch budget's epochs (resolved())
    class_weights: str = "none"  # none | auto
    augment: str = "auto"  # auto | none | comma list of flip,rotate,zoom
    mixed_precision: bool = False
    channels: str | None = None  # None: GRAY for digits, RGB for folders
    cache: str = "auto"  # memory | disk | none | auto: where a folder's decoded pixels live (edgecls.data.cache)
    adversarial: float = 0.0  # FGSM examples at this many pixel levels mixed into each batch; 0: off
    init_from: str | None = None  # fine-tune this model.keras (edgecls.train.retrain) instead of building one
    replay: str | None = None  # with init_from: the original training data, sampled into training
    replay_fraction: float = 0.5  # with replay: the share of the training set that is replayed old images
    precise_bn: int | None = None  # images for BatchNorm statistics before each validation; None: precise_bn_for

    def __post_init__(self) -> None:
        if self.cache not in CACHE_MODES:
            raise ConfigError(f"--cache must be one of {', '.join(CACHE_MODES)}, got {self.cache!r}")
        for name, value, ok, wanted in (
            ("--epochs", self.epochs, self.epochs is None or self.epochs >= 1, "1 or more"),
            ("--batch-size", self.batch_size, self.batch_size >= 1, "1 or more"),
            ("--img-size", self.img_size, self.img_size is None or self.img_size >= 1, "1 or more"),
            ("--alpha", self.alpha, self.alpha > 0, "above 0 (MobileNets: 0.35 to 1.4)"),
            ("--lr", self.learning_rate, self.learning_rate is None or self.learning_rate > 0, "above 0"),
            ("--patience", self.patience, self.patience is None or self.patience >= 0, "0 (off) or more"),
            (
                "--finetune-epochs",
                self.finetune_epochs,
                self.finetune_epochs is None or self.finetune_epochs >= 0,
                "0 (off) or more",
            ),
            ("--finetune-lr", self.finetune_lr, self.finetune_lr is None or self.finetune_lr > 0, "above 0"),
            ("--unfreeze", self.unfreeze, self.unfreeze is None or self.unfreeze >= 1, "1 or more layers"),
            ("--adversarial", self.adversarial, self.adversarial == 0 or 1 <= self.adversarial <= 255, "1..255 levels"),
            ("--replay-fraction", self.replay_fraction, 0 <= self.replay_fraction < 1, "from 0 up to (not) 1"),
            ("--precise-bn", self.precise_bn, self.precise_bn is None or self.precise_bn >= 0, "0 (off) or more"),
        ):
            if not ok:
                raise ConfigError(f"{name} must be {wanted}, got {value}")
        if self.unfreeze is not None and self.unfreeze_from is not None:
            raise ConfigError(f"--unfreeze {self.unfreeze} and --unfreeze-from {self.unfreeze_from}: choose one")

    def resolved(self, *, keras_base_from_scratch: bool, train_images: int = 0) -> TrainConfig:
        """The config with ``epochs``, ``learning_rate`` and ``patience`` filled in. A ``keras.applications`` base
        trained from scratch gets ``SCRATCH_LEARNING_RATE`` and a budget of ``SCRATCH_STEPS`` optimiser steps over its
        ``train_images`` (at least ``SCRATCH_EPOCHS`` epochs), with early stopping's patience a quarter of them;
        anything else (edgecls' own ``cnn``, a pretrained base, a retrained model) ``DEFAULT_EPOCHS``,
        ``DEFAULT_LEARNING_RATE`` and ``PATIENCE``. What ``config.json`` records, so a resumed run continues with
        the same values.

        >>> TrainConfig().resolved(keras_base_from_scratch=True, train_images=600).epochs  # 10 steps an epoch
        200
        >>> TrainConfig().resolved(keras_base_from_scratch=True, train_images=600).patience
        50
        >>> TrainConfig(epochs=5).resolved(keras_base_from_scratch=False).epochs
        5
        """
        epochs = self.epochs or (
            scratch_epochs(train_images, self.batch_size) if keras_base_from_scratch else DEFAULT_EPOCHS
        )
        patience = self.patience
        if patience is None:
            patience = max(PATIENCE, epochs // 4) if keras_base_from_scratch and not self.epochs else PATIENCE
        return replace(
            self,
            epochs=epochs,
            learning_rate=self.learning_rate
            or (SCRATCH_LEARNING_RATE if keras_base_from_scratch else DEFAULT_LEARNING_RATE),
            patience=patience,
        )

    def phase2_epochs(self, pretrained: bool) -> int:
        """Epochs of fine-tuning: none without a pretrained base (an error when asked for), none with
        --freeze-base unless asked for, else ``finetune_epochs`` or the default."""
        if not pretrained:
            if self.finetune_epochs:
                raise ConfigError(
                    f"--finetune-epochs {self.finetune_epochs} fine-tunes a pretrained base, and this run "
                    "trains from scratch (--weights none): raise --epochs instead, or pass --weights imagenet|FILE"
                )
            return 0
        if self.finetune_epochs is not None:
            return self.finetune_epochs
        return 0 if self.freeze_base else DEFAULT_FINETUNE_EPOCHS

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        data_name = Path(self.data).name if self.data != "digits" else "digits"
        return Path("runs") / f"{self.model}-{data_name}"

    def fit_options(self) -> FitOptions:
        """``fit``'s options; of a ``resolved`` config (``epochs`` and ``learning_rate`` set)."""
        if self.epochs is None or self.learning_rate is None:
            raise ConfigError("TrainConfig.fit_options needs epochs and learning_rate: call resolved() first")
        return FitOptions(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            seed=self.seed,
            augment=parse_augment(self.augment, self.data),
            patience=self.patience,
            resume=self.resume,
            adversarial=self.adversarial,
        )


DEFAULT_FINETUNE_EPOCHS = 10

# A keras.applications base from scratch (--weights none): measured on textures4 and photos10 (64 px, 25 epochs,
# seed 0, the branch's other defaults; benchmarks/results/defaults_scratch.json, issue 26). Adam's start: 3e-3 ->
# mean val top-1 88.6 % over mobilenetv3small and mobilenetv2 alpha 0.35 on both sets, 2e-3 -> 87.9, 1e-3 -> 84.8,
# 3e-4 -> 72.8; at 3e-3 mobilenetv2, mobilenetv3large reached 98.5 / 100 % on textures4 (97.0 / 96.5 at 1e-3) and
# 84.0 / 92.0 % on photos10. Epochs: photos10 at 3e-3, 15 -> 83.0 / 74.0 %, 25 -> 87.7 / 73.7, 40 -> 88.0 / 74.0
# (mobilenetv3small / mobilenetv2 alpha 0.35; the 40-epoch runs stopped early at epochs 24 and 21).
SCRATCH_LEARNING_RATE = 3e-3
# Budgeted in optimiser steps, not epochs: photos10's 800 training images leave 640 after the 20 % held-out split,
# 10 steps an epoch, and 25 epochs (250 steps) left a MobileNet from scratch still learning (photos10, 64 px, seed 0;
# top-1 on the photos' other region, benchmarks/results/budget.json): MobileNetV2 alpha 0.35 74.2 % after 25 epochs,
# 83.7 % with 154 epochs and patience 40 (stopped at 95); MobileNetV3-Small 69.3 -> 89.2 %; EfficientNet-B0
# 74.3 -> 83.6 %. Those runs were sized for 800 images (154 epochs: about 1,540 steps on 640); this default gives
# that folder 200 epochs and patience 50, which was not itself run. With patience 8 the long budget stopped at epoch
# 25-35, while the learning rate was still high, and gained little or lost (73.4, 81.4, 71.8 %): the patience scales
# with the budget. budget.py's "check" kind runs the defaults on photos6, a set no default was chosen on.
SCRATCH_STEPS = 2000
SCRATCH_EPOCHS = 25  # the floor: a large data set still trains this many epochs
PATIENCE = 8  # early stopping's epochs without a better validation; a from-scratch budget gets a quarter of its epochs
# edgecls' cnn (digits 98.9 % at 1e-3, 99.2 at 3e-3; photos10 92.7 and 94.7: within a run's noise), a pretrained
# base (the Keras transfer-learning guide's 1e-3; no ImageNet weights can be downloaded here to measure it) and a
# retrained model keep the defaults they had.
DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_EPOCHS = 20


def scratch_epochs(train_images: int, batch_size: int) -> int:
    """Epochs of a from-scratch budget: ``SCRATCH_STEPS`` steps of ``batch_size``, at least ``SCRATCH_EPOCHS``.

    >>> scratch_epochs(600, 64), scratch_epochs(100_000, 64)
    (200, 25)
    """
    steps_per_epoch = max(1, math.ceil(train_images / batch_size))
    return max(SCRATCH_EPOCHS, math.ceil(SCRATCH_STEPS / steps_per_epoch))


FINETUNE_LR_FACTOR = 0.1  # phase 2 starts at a tenth of --lr (the Keras guide uses 1e-5 after 1e-3 with plain Adam)
