"""``DistillConfig`` (the options of ``edgecls distill``; the defaults are the CLI's) and ``DistillResult``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError
from edgecls.data import parse_augment
from edgecls.train.distillation import DistillLoss
from edgecls.train.fit import FitOptions

REPORT_NAME = "distill.json"


@dataclass(frozen=True)
class DistillConfig:
    """Options of ``edgecls distill``; the defaults are the CLI's."""

    teacher: str  # a trained .keras
    student: str  # a registry name (built for the teacher's labels and input), or a .keras file (e.g. a pruned model)
    data: str | None = None  # None: the data set recorded in the teacher
    alpha: float | None = None  # width multiplier of a registry student (MobileNets); not the loss weight
    # T 2 / kd-weight 0.5: a pruned student distilled from its unpruned teacher (10 epochs, digits, seeds 0-2)
    # ended 0.19 points behind on average against 0.37 for T 4 / 0.9 (benchmarks/results/defaults_chain.json,
    # issue 26); benchmarks/distill.py measured the same order for prune recovery (0.77 vs 1.15 points).
    temperature: float = 2.0
    kd_weight: float = 0.5  # weight of the distillation term; the label loss gets 1 - kd_weight
    feature_layers: tuple[tuple[str, str], ...] = ()  # (teacher layer, student layer) pairs, outputs of equal shape
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 8  # early stopping on val accuracy; 0 = off
    augment: str = "auto"  # auto | none | comma list of flip,rotate,zoom
    baseline: bool = False  # also train the same student alone (same data, epochs, seed)
    seed: int = 0
    out: str | None = None  # None: runs/<student>-distilled
    resume: bool = False

    def __post_init__(self) -> None:
        # JSON (a resumed run's config.json) gives lists: keep the config hashable and comparable
        object.__setattr__(self, "feature_layers", tuple((str(t), str(s)) for t, s in self.feature_layers))

    def check(self) -> None:
        if not 0.0 <= self.kd_weight <= 1.0:
            raise ConfigError(
                f"--kd-weight must be between 0 and 1 (the label loss gets 1 - kd-weight), got {self.kd_weight}"
            )
        if self.temperature <= 0.0:
            raise ConfigError(f"--temperature must be positive (typically 2 to 6), got {self.temperature}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"--epochs and --batch-size must be at least 1, got {self.epochs} and {self.batch_size}")
        if self.alpha is not None and self.student_is_file:
            raise ConfigError(
                f"--alpha sets the width of a registry student; {self.student} is a .keras file whose width is fixed: "
                "drop --alpha"
            )
        if self.alpha is not None and self.alpha <= 0.0:
            raise ConfigError(f"--alpha (student width multiplier) must be positive, got {self.alpha}")

    @property
    def student_is_file(self) -> bool:
        """A path (``pruned.keras``, ``runs/a/model.keras``) rather than a registry name (``mobilenetv2``)."""
        return Path(self.student).suffix != "" or "/" in self.student

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return Path("runs") / f"{Path(self.student).stem}-distilled"

    def loss(self) -> DistillLoss:
        return DistillLoss(self.temperature, self.kd_weight, self.feature_layers)

    def fit_options(self, data: str) -> FitOptions:
        """``fit``'s options for both the distillation and the baseline; ``data`` names the set (augmentation)."""
        return FitOptions(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            seed=self.seed,
            augment=parse_augment(self.augment, data),
            patience=self.patience or None,
            resume=self.resume,
        )


@dataclass
class DistillResult:
    """What distillation produced, measured on the teacher's held-out split."""

    model_path: str
    run_dir: str
    report_path: str
    curves_png: str
    teacher_top1: float
    student_top1: float  # the saved student: the distilled one, unless another scored better (``kept``)
    baseline_top1: float | None  # the same student trained alone (--baseline), else None
    teacher_params: int
    teacher_macs: int
    student_params: int  # the baseline has the same architecture
    student_macs: int
    data: str
    n_train: int
    n_val: int
    evaluated_with: str  # where the top-1 figures were computed
    epochs_run: int
    best_epoch: int
    baseline_best_epoch: int | None
    baseline_model_path: str | None
    teacher_path: str
    student_source: str
    temperature: float
    kd_weight: float
    feature_layers: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = ""
    kept: str = "distilled"  # or the student as given / trained alone, when distillation ended below it
    distilled_top1: float | None = None  # the distillation's own result, kept or not
    given_top1: float | None = None  # a .keras student's held-out top-1 before distillation
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
