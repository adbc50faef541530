"""``edgecls prune``: structured channel pruning, and unstructured magnitude pruning.

Structured pruning removes whole channels, so every layer after them shrinks
and the model runs faster on a CPU. It is built from named parts:

- ``graph``: dependency analysis of the functional model → channel groups;
- ``importance``: ``l1``, ``l2``, ``bn-gamma`` scores per channel;
- ``plan``: kept counts (``ratio``, ``round_to``, ``min_channels``) and indices;
- ``handlers``: one per layer class — how channels flow, how weights are cut;
- ``rebuild``: the smaller model of the same architecture, and the masked
  original it is verified against before anything is written;
- ``magnitude``: unstructured pruning with masks kept through fine-tuning.

>>> result = prune("runs/cnn-digits/model.keras", PruneConfig(ratio=0.5, finetune_epochs=3, data="digits"))  # doctest: +SKIP
>>> result.macs_after / result.macs_before  # doctest: +SKIP
0.26
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecls.errors import ConfigError, ModelError
from edgecls.evaluate import top1_accuracy
from edgecls.fileio import write_json
from edgecls.prune.importance import CRITERIA, check_criterion

log = logging.getLogger(__name__)

METHODS = ("channels", "magnitude")
# The rebuilt model must agree with the masked original to this many logit
# units per unit of logit scale; float32 summation order alone gives ~1e-6.
EQUIVALENCE_TOLERANCE = 1e-3

__all__ = ["CRITERIA", "METHODS", "PruneConfig", "PruneResult", "prune", "prune_channels"]


@dataclass(frozen=True)
class PruneConfig:
    """Options of ``edgecls prune``; the defaults are the CLI's."""

    method: str = "channels"  # channels (structured) | magnitude (unstructured)
    ratio: float = 0.5  # channels: fraction of each group's channels to remove
    criterion: str = "l1"  # l1 | l2 | bn-gamma
    steps: int = 1  # channels: prune in this many rounds, fine-tuning between them
    min_channels: int = 8
    round_to: int = 8  # kept channel counts are rounded up to a multiple of this
    exclude: tuple[str, ...] = ()  # layers whose channels stay
    sparsity: float = 0.8  # magnitude: fraction of each kernel zeroed
    data: str | None = None  # digits | folder; top-1 before/after, and fine-tuning data
    finetune_epochs: int = 0
    learning_rate: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    out: str | None = None  # the pruned .keras; default beside the input, *_pruned.keras
    measure_tflite: bool = True  # convert both to FP32 TFLite: size, gzip size, 1-thread latency

    def check(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown --method {self.method!r}; choose one of: {', '.join(METHODS)}")
        check_criterion(self.criterion)
        if not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"--ratio must be in [0, 1), got {self.ratio}")
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"--sparsity must be in [0, 1), got {self.sparsity}")
        if self.steps < 1 or self.min_channels < 1 or self.round_to < 1 or self.finetune_epochs < 0:
            raise ConfigError("--steps, --min-channels and --round-to must be at least 1, --finetune-epochs at least 0")
        if self.steps > 1 and self.finetune_epochs == 0:
            raise ConfigError(f"--steps {self.steps} prunes in rounds with fine-tuning between them; add --finetune-epochs N (and --data)")


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
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def prune(model_path: str | Path, config: PruneConfig = PruneConfig(), *, callbacks: Sequence[Any] = ()) -> PruneResult:
    """Prune the ``.keras`` model at ``model_path``; write the pruned model and its report.

    Nothing is written unless the pruned model has been verified: for
    structured pruning, it must compute what the original computes with the
    removed channels masked out.
    """
    from edgecls.keras_io import load_keras_model, model_info_from_keras, save_keras_model
    from edgecls.modelstats import count_params_and_macs
    from edgecls.prune.rebuild import as_functional

    config.check()
    started = time.time()
    model_path = Path(model_path)
    out = _output_path(model_path, config.out)
    original = as_functional(load_keras_model(model_path))
    info = model_info_from_keras(model_path, original)
    data = _resolve_data(config, info)
    images, dataset = _validation_data(info, data)
    result = PruneResult(
        model_path="", report_path="", source_model=str(model_path), method=config.method,
        params_before=0, params_after=0, macs_before=0, macs_after=0, config=dataclasses.asdict(config),
    )
    result.params_before, result.macs_before = count_params_and_macs(original)
    if images is not None:
        result.top1_before = top1_accuracy(original, images)
    fit_options = {"dataset": dataset, "callbacks": callbacks}
    if config.method == "channels":
        pruned = prune_channels(original, config, result=result, **fit_options)
    else:
        pruned = _prune_magnitude(original, config, result=result, **fit_options)
    result.params_after, result.macs_after = count_params_and_macs(pruned)
    if images is not None:
        result.top1_after = top1_accuracy(pruned, images)
    _measure_files(original, pruned, info, config, result)
    provenance = {
        "pruned": {"method": config.method, "ratio": config.ratio if config.method == "channels" else None,
                   "sparsity": config.sparsity if config.method == "magnitude" else None, "criterion": config.criterion,
                   "from": str(model_path), "params": result.params_after, "macs": result.macs_after},
    }
    if result.top1_after is not None:
        provenance["val_accuracy"] = round(result.top1_after, 6)
    save_keras_model(pruned, out, info.with_provenance(**provenance))
    result.model_path = str(out)
    result.report_path = str(out.with_name(f"{out.stem}_report.json"))
    result.seconds = round(time.time() - started, 2)
    write_json(result.report_path, result.to_dict())
    return result


def prune_channels(model: Any, config: PruneConfig, *, result: PruneResult | None = None, dataset: Any = None, callbacks: Sequence[Any] = ()) -> Any:
    """Structured pruning of a Keras model in memory (``config.steps`` rounds); returns the smaller model.

    ``result``, when given, receives the per-group counts, what was left
    alone, and each round's equivalence check.
    """
    from edgecls.prune.graph import analyze
    from edgecls.prune.plan import plan_channels
    from edgecls.prune.rebuild import mask_removed_channels, max_abs_difference, rebuild

    result = result if result is not None else PruneResult("", "", "", "channels", 0, 0, 0, 0)
    original_channels: dict[str, int] | None = None
    first_plans = None
    for step in range(1, config.steps + 1):
        graph = analyze(model, exclude=config.exclude)
        if original_channels is None:
            original_channels = {group.name: group.channels for group in graph.groups}
            result.unsupported_layers = graph.unsupported
        keep, plans = plan_channels(
            model, graph, ratio=config.ratio * step / config.steps, criterion=config.criterion,
            min_channels=config.min_channels, round_to=config.round_to, original_channels=original_channels,
        )
        first_plans = first_plans or plans
        smaller = rebuild(model, graph, keep)
        difference = max_abs_difference(mask_removed_channels(model, graph, keep), smaller) if keep else max_abs_difference(model, smaller)
        scale = max(1.0, _logit_scale(model))
        if difference > EQUIVALENCE_TOLERANCE * scale:
            raise ModelError(f"the rebuilt model differs from the masked original by {difference:.3g} (logits of scale {scale:.3g}); "
                             "this is a pruner bug: please report it with the model's layer types; --exclude the affected layers to go on")
        result.equivalence_max_abs.append(difference)
        log.info("step %d/%d: %d groups pruned, max |Δ| vs masked original %.2e", step, config.steps, len(keep), difference)
        model = smaller
        if config.finetune_epochs:
            _finetune(model, dataset, config, result, callbacks, label=f"step {step}")
    _group_report(first_plans or [], plans, result)
    return model


def _prune_magnitude(model: Any, config: PruneConfig, *, result: PruneResult, dataset: Any, callbacks: Sequence[Any]) -> Any:
    from edgecls.prune.magnitude import apply_masks, keep_masks_callback, magnitude_masks, sparsity_report
    from edgecls.prune.rebuild import clone_with_config

    pruned = clone_with_config(model, model.get_config())
    pruned.set_weights(model.get_weights())
    masks = magnitude_masks(pruned, config.sparsity, exclude=config.exclude)
    apply_masks(pruned, masks)
    if config.finetune_epochs:
        _finetune(pruned, dataset, config, result, (*callbacks, keep_masks_callback(masks)), label="magnitude")
        apply_masks(pruned, masks)  # the best epoch's weights were saved after a batch: masked already; make sure
    result.sparsity = sparsity_report(pruned, masks)
    return pruned


def _finetune(model: Any, dataset: Any, config: PruneConfig, result: PruneResult, callbacks: Sequence[Any], *, label: str) -> None:
    from edgecls.train import fit

    if dataset is None:
        raise ConfigError("--finetune-epochs needs training data: pass --data digits|PATH")
    history = fit(model, dataset, epochs=config.finetune_epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
                  seed=config.seed, callbacks=callbacks)
    accuracies = history.get("val_accuracy", [])
    result.finetune.setdefault("rounds", []).append({"round": label, "epochs": len(accuracies), "val_accuracy": accuracies})
    result.finetune.update({"data": dataset.name, "n_train": len(dataset.train), "n_val": len(dataset.val),
                            "learning_rate": config.learning_rate, "batch_size": config.batch_size, "seed": config.seed})


def _group_report(first: list[Any], last: list[Any], result: PruneResult) -> None:
    before = {plan.name: plan.channels_before for plan in first}
    for plan in last:
        channels_before = before.get(plan.name, plan.channels_before)
        if plan.left_alone or channels_before == plan.channels_after:
            result.left_alone.append({"group": plan.name, "channels": channels_before, "layers": list(plan.layers),
                                      "reason": plan.left_alone or "ratio 0: nothing to remove"})
        else:
            result.groups.append({"group": plan.name, "channels_before": channels_before, "channels_after": plan.channels_after,
                                  "layers": list(plan.layers), "criterion": plan.criterion})


def _output_path(model_path: Path, out: str | None) -> Path:
    path = Path(out) if out else model_path.with_name(f"{model_path.stem}_pruned.keras")
    if path.suffix != ".keras":
        raise ConfigError(f"--out must end in .keras, got {path}")
    if path.resolve() == model_path.resolve():
        raise ConfigError(f"--out {path} is the input model; pruning never overwrites its input")
    return path


def _resolve_data(config: PruneConfig, info: Any) -> str | None:
    if config.data:
        return config.data
    if config.finetune_epochs:
        recorded = info.provenance.get("dataset")
        if not recorded:
            raise ConfigError("--finetune-epochs needs training data and the model records none: pass --data digits|PATH")
        return recorded
    return None


def _validation_data(info: Any, data: str | None) -> tuple[Any, Any]:
    """The model's own held-out split (and the training part, for fine-tuning)."""
    if data is None:
        return None, None
    from edgecls.evaluate import validation_set

    return validation_set(info, data)


def _logit_scale(model: Any) -> float:
    """Typical logit magnitude on random pixels (the equivalence tolerance scales with it)."""
    from edgecls.prune.rebuild import comparison_output

    shape = tuple(int(d) for d in model.input_shape[1:])
    pixels = np.random.default_rng(1).uniform(0.0, 255.0, size=(2, *shape)).astype(np.float32)
    return float(np.max(np.abs(np.asarray(comparison_output(model)(pixels, training=False)))))


def _measure_files(original: Any, pruned: Any, info: Any, config: PruneConfig, result: PruneResult) -> None:
    """FP32 TFLite size, gzip size and one-thread latency of both models, in one run."""
    if not config.measure_tflite:
        return
    from edgecls.prune.magnitude import gzip_size
    from edgecls.prune.measure import compare_latency, tflite_fp32

    with tempfile.TemporaryDirectory(prefix="edgecls-prune-") as scratch:
        paths = [tflite_fp32(model, Path(scratch) / f"{name}.tflite", info) for name, model in (("before", original), ("after", pruned))]
        result.file_size_before, result.file_size_after = (path.stat().st_size for path in paths)
        result.gzip_size_before, result.gzip_size_after = (gzip_size(path) for path in paths)
        result.latency = compare_latency(paths, threads=1)
    result.latency_ms_before, result.latency_ms_after = result.latency["latency_ms"]
