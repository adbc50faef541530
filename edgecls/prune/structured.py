"""The pruner: structured channel rounds and magnitude masks on a model in memory, with fine-tuning.

``prune_channels`` runs graph → groups → importance → plan → rebuild for
``config.steps`` rounds and checks every rebuilt model against the masked
original; ``prune_magnitude`` zeroes the smallest weights and keeps them zero
through fine-tuning. ``edgecls.prune.prune`` loads, measures and writes around them.

>>> small = prune_channels(model, PruneConfig(ratio=0.5))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgecls.base.errors import ConfigError, ModelError
from edgecls.prune.config import PruneConfig, PruneResult

log = logging.getLogger(__name__)

# The rebuilt model must agree with the masked original to this many logit
# units per unit of logit scale; float32 summation order alone gives ~1e-6.
EQUIVALENCE_TOLERANCE = 1e-3


def prune_channels(
    model: Any,
    config: PruneConfig,
    *,
    result: PruneResult | None = None,
    dataset: Any = None,
    callbacks: Sequence[Any] = (),
    info: Any = None,
) -> Any:
    """Structured pruning of a Keras model in memory (``config.steps`` rounds); returns the smaller model.

    Each group loses ``config.ratio`` of its channels, or, with a budget (``target_macs``, ``target_latency_ms``),
    what the sensitivity scan's allocation says (``budget.plan_budget``). After each cut the BatchNorm statistics
    are re-estimated (``adaptive_bn``) and, with data, the model is fine-tuned, learning from the unpruned model's
    softened outputs too (``distill``). ``result``, when given, receives the per-group counts, what was left
    alone, the budget's plan and each round's equivalence check; ``info`` (the model's metadata) names the files
    a latency budget measures.
    """
    from edgecls.prune.graph import analyze
    from edgecls.prune.plan import plan_channels
    from edgecls.prune.rebuild import mask_removed_channels, max_abs_difference, rebuild

    result = result if result is not None else PruneResult("", "", "", "channels", 0, 0, 0, 0)
    teacher = model  # the unpruned model: what the fine-tuning distils from
    final_kept = None
    if config.targeted:
        from edgecls.prune.budget import plan_budget

        final_kept = plan_budget(model, config, dataset, result, info)
    original_channels: dict[str, int] | None = None
    first_plans = None
    for step in range(1, config.steps + 1):
        graph = analyze(model, exclude=config.exclude)
        if original_channels is None:
            original_channels = {group.name: group.channels for group in graph.groups}
            result.unsupported_layers = graph.unsupported
        keep, plans = plan_channels(
            model,
            graph,
            ratio=config.ratio * step / config.steps,
            criterion=config.criterion,
            min_channels=config.min_channels,
            round_to=config.round_to,
            original_channels=original_channels,
            final_kept=final_kept,
            progress=step / config.steps,
        )
        first_plans = first_plans or plans
        smaller = rebuild(model, graph, keep)
        difference = (
            max_abs_difference(mask_removed_channels(model, graph, keep), smaller)
            if keep
            else max_abs_difference(model, smaller)
        )
        scale = max(1.0, _logit_scale(model))
        if difference > EQUIVALENCE_TOLERANCE * scale:
            raise ModelError(
                f"the rebuilt model differs from the masked original by {difference:.3g} (logits of scale "
                f"{scale:.3g}); this is a pruner bug: please report it with the model's layer types; --exclude the "
                "affected layers to go on"
            )
        result.equivalence_max_abs.append(difference)
        log.info(
            "step %d/%d: %d groups pruned, max |Δ| vs masked original %.2e", step, config.steps, len(keep), difference
        )
        model = smaller
        if config.adaptive_bn and dataset is not None and keep:
            reestimate_batchnorm(model, dataset, seed=config.seed, batch_size=config.batch_size)
        if config.finetune_epochs:
            _finetune(model, dataset, config, result, callbacks, label=f"step {step}", teacher=teacher)
    _group_report(first_plans or [], plans, result)
    return model


def reestimate_batchnorm(model: Any, dataset: Any, *, seed: int, batch_size: int) -> int:
    """Adaptive BatchNorm (EagleEye, ECCV 2020): the statistics of the pruned model, from training images."""
    from edgecls.train.precise_bn import PRECISE_BN_IMAGES, BatchNormEstimator, sample_images

    images = sample_images(dataset.train, PRECISE_BN_IMAGES, seed=seed)
    updated = BatchNormEstimator(model, images, batch_size=batch_size).update()
    log.info("BatchNorm statistics of %d layers re-estimated from %d training images", updated, len(images))
    return updated


def prune_magnitude(
    model: Any, config: PruneConfig, *, result: PruneResult, dataset: Any, callbacks: Sequence[Any]
) -> Any:
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


def _finetune(
    model: Any,
    dataset: Any,
    config: PruneConfig,
    result: PruneResult,
    callbacks: Sequence[Any],
    *,
    label: str,
    teacher: Any = None,
) -> None:
    """Fine-tune ``model`` in place: on the labels, and with ``config.distill`` on ``teacher``'s softened outputs."""
    from edgecls.data import parse_augment
    from edgecls.train import FitOptions, fit

    if dataset is None:
        raise ConfigError("--finetune-epochs needs training data: pass --data digits|PATH")
    options = FitOptions(
        epochs=config.finetune_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        augment=parse_augment(config.augment, dataset.name),
    )
    distilled = config.distill and teacher is not None and config.kd_weight > 0
    if distilled:
        from edgecls.train.distillation import DistillLoss, distill_model

        loss = DistillLoss(temperature=config.temperature, kd_weight=config.kd_weight)
        history = distill_model(teacher, model, dataset, options, loss=loss, callbacks=callbacks)
    else:
        history = fit(model, dataset, options=options, callbacks=callbacks)
    accuracies = history.get("val_accuracy", [])
    result.finetune.setdefault("rounds", []).append(
        {"round": label, "epochs": len(accuracies), "val_accuracy": accuracies}
    )
    result.finetune.update(
        {
            "data": dataset.name,
            "n_train": len(dataset.train),
            "n_val": len(dataset.val),
            "learning_rate": config.learning_rate,
            "batch_size": config.batch_size,
            "seed": config.seed,
            "augment": list(options.augment),
            "distilled_from_unpruned": distilled,
            **({"temperature": config.temperature, "kd_weight": config.kd_weight} if distilled else {}),
        }
    )


def _group_report(first: list[Any], last: list[Any], result: PruneResult) -> None:
    before = {plan.name: plan.channels_before for plan in first}
    for plan in last:
        channels_before = before.get(plan.name, plan.channels_before)
        if plan.left_alone or channels_before == plan.channels_after:
            result.left_alone.append(
                {
                    "group": plan.name,
                    "channels": channels_before,
                    "layers": list(plan.layers),
                    "reason": plan.left_alone or "ratio 0: nothing to remove",
                }
            )
        else:
            result.groups.append(
                {
                    "group": plan.name,
                    "channels_before": channels_before,
                    "channels_after": plan.channels_after,
                    "layers": list(plan.layers),
                    "criterion": plan.criterion,
                }
            )


def _logit_scale(model: Any) -> float:
    """Typical logit magnitude on random pixels (the equivalence tolerance scales with it)."""
    from edgecls.prune.rebuild import comparison_output

    shape = tuple(int(d) for d in model.input_shape[1:])
    pixels = np.random.default_rng(1).uniform(0.0, 255.0, size=(2, *shape)).astype(np.float32)
    return float(np.max(np.abs(np.asarray(comparison_output(model)(pixels, training=False)))))
