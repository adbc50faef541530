"""Options and report of ``edgecls prune`` (``PruneConfig``, ``PruneResult``).

>>> PruneConfig(ratio=0.5).check()
>>> PruneConfig(method="random").check()
Traceback (most recent call last):
...
edgecls.base.errors.ConfigError: unknown --method 'random'; choose one of: channels, magnitude
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from edgecls.base.errors import ConfigError
from edgecls.prune.importance import check_criterion

METHODS = ("channels", "magnitude")
# Fine-tuning after pruning when there is data to fine-tune on (--data): 15 epochs at 2e-3. Measured at --ratio 0.5
# on digits (cnn teachers of seeds 0-2, benchmarks/results/defaults_chain.json, issue 26), top-1 lost in points:
# 15 epochs at 2e-3 -> 0.00 / 0.28 / 0.28; at 1e-3 -> 0.00-0.28 / 0.56 / 0.56; 10 at 2e-3 -> 0.28 / 0.84 / 0.84;
# 10 at 1e-3 -> 0.84 / 1.11 / 0.84; 20 at 1e-3 -> 0.00 / 0.00 / 0.56; 3 at 1e-3 (seed 0) 2.51, 5 -> 1.67.
PRUNE_FINETUNE_EPOCHS = 15
PRUNE_FINETUNE_LEARNING_RATE = 2e-3
PRUNE_DISTILL = True
PRUNE_TEMPERATURE = 2.0
PRUNE_KD_WEIGHT = 0.5


@dataclass(frozen=True)
class PruneConfig:
    """Options of ``edgecls prune``; the defaults are the CLI's."""

    method: str = "channels"  # channels (structured) | magnitude (unstructured)
    ratio: float = 0.5  # channels: fraction of each group's channels to remove (uniform; no target below)
    target_macs: float | None = None  # channels: keep this fraction of the MACs; per-group ratios from the scan
    target_latency_ms: float | None = None  # channels: prune until the model runs this fast on `target`, measured
    target: str = "host"  # the device profile --target-latency-ms is measured with (its precision and threads)
    remote: Any = None  # a RemoteConfig or "user@host[:port]": measure --target-latency-ms on the device over SSH
    threads: int | None = None  # threads the latency is measured with (None: the target's)
    criterion: str = "l1"  # l1 | l2 | bn-gamma
    steps: int = 1  # channels: prune in this many rounds, fine-tuning between them
    min_channels: int = 8
    round_to: int = 8  # kept channel counts are rounded up to a multiple of this
    exclude: tuple[str, ...] = ()  # layers whose channels stay
    sparsity: float = 0.8  # magnitude: fraction of each kernel zeroed
    data: str | None = None  # digits | folder; top-1 before/after, and fine-tuning data
    finetune_epochs: int | None = None  # None: PRUNE_FINETUNE_EPOCHS with data (--data), 0 without
    learning_rate: float = PRUNE_FINETUNE_LEARNING_RATE  # fine-tuning's start (Adam, cosine decay)
    distill: bool = PRUNE_DISTILL  # fine-tune on the unpruned model's softened outputs too (keras.distillation)
    temperature: float = PRUNE_TEMPERATURE
    kd_weight: float = PRUNE_KD_WEIGHT  # the distillation term's weight; the label loss gets 1 - kd_weight
    augment: str = "auto"  # fine-tuning's augmentation, as `edgecls train --augment`
    adaptive_bn: bool = True  # re-estimate BatchNorm statistics after each cut, before fine-tuning and in the scan
    batch_size: int = 64
    seed: int = 0
    out: str | None = None  # the pruned .keras; default beside the input, *_pruned.keras
    measure_tflite: bool = True  # convert both to FP32 TFLite: size, gzip size, 1-thread latency

    @property
    def targeted(self) -> bool:
        """A MACs or latency budget: the per-group ratios come from the sensitivity scan, not ``ratio``."""
        return self.target_macs is not None or self.target_latency_ms is not None

    def remote_config(self) -> Any:
        """``remote`` as a ``RemoteConfig`` (a "user@host[:port]" string gets ssh's defaults), or None."""
        if self.remote is None or not isinstance(self.remote, str):
            return self.remote
        from edgecls.runtime.ssh import RemoteConfig

        return RemoteConfig(destination=self.remote)

    def epochs_to_finetune(self) -> int:
        """``finetune_epochs``, or by default ``PRUNE_FINETUNE_EPOCHS`` when there is data to fine-tune on."""
        if self.finetune_epochs is not None:
            return self.finetune_epochs
        return PRUNE_FINETUNE_EPOCHS if self.data else 0

    def check(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown --method {self.method!r}; choose one of: {', '.join(METHODS)}")
        check_criterion(self.criterion)
        if not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"--ratio must be in [0, 1), got {self.ratio}")
        if self.target_macs is not None and not 0.0 < self.target_macs < 1.0:
            raise ConfigError(f"--target-macs is the fraction of the MACs to keep, in (0, 1); got {self.target_macs}")
        if self.target_latency_ms is not None and self.target_latency_ms <= 0:
            raise ConfigError(f"--target-latency-ms must be positive, got {self.target_latency_ms}")
        if self.target_macs is not None and self.target_latency_ms is not None:
            raise ConfigError("--target-macs and --target-latency-ms: choose one budget")
        if self.targeted and self.method != "channels":
            raise ConfigError("--target-macs / --target-latency-ms plan a structured cut: use --method channels")
        if self.targeted and not self.data:
            raise ConfigError(
                "--target-macs / --target-latency-ms choose each group's ratio from a sensitivity scan that scores the "
                "model's held-out images: pass --data digits|PATH"
            )
        if self.target_latency_ms is not None:  # an unknown target is an error now, not after the scan
            from edgecls.runtime.targets import get_target

            get_target(self.target)
        if not 0.0 <= self.kd_weight <= 1.0 or self.temperature <= 0:
            raise ConfigError(
                "the fine-tuning's kd_weight must be in [0, 1] and its temperature positive ([prune] kd_weight, "
                f"temperature), got {self.kd_weight}, {self.temperature}"
            )
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"--sparsity must be in [0, 1), got {self.sparsity}")
        epochs = self.epochs_to_finetune()
        if self.steps < 1 or self.min_channels < 1 or self.round_to < 1 or epochs < 0:
            raise ConfigError("--steps, --min-channels and --round-to must be at least 1, --finetune-epochs at least 0")
        if self.steps > 1 and epochs == 0:
            raise ConfigError(
                f"--steps {self.steps} prunes in rounds with fine-tuning between them; add --finetune-epochs N (and "
                "--data)"
            )


@dataclass
class PruneResult:
    """What pruning changed, measured; saved as JSON beside the pruned model."""

    model_path: str
    report_path: str
    source_model: str
    method: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    file_size_before: int | None = None  # FP32 .tflite bytes (what ships)
    file_size_after: int | None = None
    gzip_size_before: int | None = None  # the same, gzip -9
    gzip_size_after: int | None = None
    top1_before: float | None = None
    top1_after: float | None = None
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None
    latency: dict[str, Any] = field(default_factory=dict)  # where and how it was measured
    groups: list[dict[str, Any]] = field(default_factory=list)  # pruned groups: channels before/after
    left_alone: list[dict[str, Any]] = field(default_factory=list)  # groups not pruned, and why
    unsupported_layers: list[dict[str, str]] = field(default_factory=list)
    equivalence_max_abs: list[float] = field(default_factory=list)  # per step: rebuilt vs masked original
    sparsity: dict[str, Any] = field(default_factory=dict)  # magnitude
    finetune: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)  # --target-*: asked, reached, each group's ratio, probes
    sensitivity: dict[str, Any] = field(default_factory=dict)  # the scan: loss and top-1 per group and ratio
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
