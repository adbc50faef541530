"""``edgecls prune``: structured channel pruning, and unstructured magnitude pruning.

Structured pruning removes whole channels, so every layer after them shrinks
and the model runs faster on a CPU. It is built from named parts:

- ``channels``: layouts, channel groups and the tracer that unites them;
- ``graph``: dependency analysis of the functional model → channel groups;
- ``importance``: ``l1``, ``l2``, ``bn-gamma`` scores per channel;
- ``plan``: kept counts (``ratio``, ``round_to``, ``min_channels``) and indices;
- ``handlers``: one per layer class — how channels flow, how weights are cut;
- ``rebuild``: the smaller model of the same architecture, and the masked
  original it is verified against before anything is written;
- ``magnitude``: unstructured pruning with masks kept through fine-tuning;
- ``config``: ``PruneConfig``/``PruneResult``; ``structured``: the rounds that run the parts.

>>> config = PruneConfig(ratio=0.5, finetune_epochs=3, data="digits")  # doctest: +SKIP
>>> result = prune("runs/cnn-digits/model.keras", config)  # doctest: +SKIP
>>> result.macs_after / result.macs_before  # doctest: +SKIP
0.26
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError
from edgecls.base.fileio import write_json
from edgecls.evaluate import top1_accuracy
from edgecls.prune.config import METHODS, PruneConfig, PruneResult
from edgecls.prune.importance import CRITERIA
from edgecls.prune.structured import EQUIVALENCE_TOLERANCE, prune_channels, prune_magnitude

__all__ = [
    "CRITERIA",
    "EQUIVALENCE_TOLERANCE",
    "METHODS",
    "PruneConfig",
    "PruneResult",
    "prune",
    "prune_channels",
    "prune_magnitude",
]


_DEFAULT_CONFIG = PruneConfig()  # frozen: one shared default is safe


def _reported(config: PruneConfig) -> dict[str, Any]:
    """``config`` for the report: a ``RemoteConfig`` as its destination (where, not how: no key path); the config
    itself keeps it, so the latency budget's measurements use its key and Python."""
    remote = config.remote
    reported = dataclasses.asdict(dataclasses.replace(config, remote=None))
    reported["remote"] = remote if remote is None or isinstance(remote, str) else remote.destination
    return reported


def prune(
    model_path: str | Path, config: PruneConfig = _DEFAULT_CONFIG, *, callbacks: Sequence[Any] = ()
) -> PruneResult:
    """Prune the ``.keras`` model at ``model_path``; write the pruned model and its report.

    Nothing is written unless the pruned model has been verified: for
    structured pruning, it must compute what the original computes with the
    removed channels masked out.
    """
    from edgecls.adapters.keras_io import load_keras_model, model_info_from_keras, save_keras_model
    from edgecls.models.stats import count_params_and_macs
    from edgecls.prune.rebuild import as_functional

    config.check()
    config = dataclasses.replace(config, finetune_epochs=config.epochs_to_finetune())  # the default resolved
    started = time.time()
    model_path = Path(model_path)
    out = _output_path(model_path, config.out)
    original = as_functional(load_keras_model(model_path))
    info = model_info_from_keras(model_path, original)
    data = _resolve_data(config, info)
    images, dataset = _validation_data(info, data)
    result = PruneResult(
        model_path="",
        report_path="",
        source_model=str(model_path),
        method=config.method,
        params_before=0,
        params_after=0,
        macs_before=0,
        macs_after=0,
        config=_reported(config),
    )
    result.params_before, result.macs_before = count_params_and_macs(original)
    if images is not None:
        result.top1_before = top1_accuracy(original, images)
    fit_options = {"dataset": dataset, "callbacks": callbacks}
    if config.method == "channels":
        pruned = prune_channels(original, config, result=result, info=info, **fit_options)
    else:
        pruned = prune_magnitude(original, config, result=result, **fit_options)
    result.params_after, result.macs_after = count_params_and_macs(pruned)
    if images is not None:
        result.top1_after = top1_accuracy(pruned, images)
    _measure_files(original, pruned, info, config, result)
    provenance = {
        "pruned": {
            "method": config.method,
            "ratio": config.ratio if config.method == "channels" and not config.targeted else None,
            "budget": result.budget.get("asked") or None,
            "sparsity": config.sparsity if config.method == "magnitude" else None,
            "criterion": config.criterion,
            "from": str(model_path),
            "params": result.params_after,
            "macs": result.macs_after,
        },
    }
    if result.top1_after is not None:
        provenance["val_accuracy"] = round(result.top1_after, 6)
    save_keras_model(pruned, out, info.with_provenance(**provenance))
    result.model_path = str(out)
    result.report_path = str(out.with_name(f"{out.stem}_report.json"))
    result.seconds = round(time.time() - started, 2)
    write_json(result.report_path, result.to_dict())
    return result


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
            raise ConfigError(
                "--finetune-epochs needs training data and the model records none: pass --data digits|PATH"
            )
        return recorded
    return None


def _validation_data(info: Any, data: str | None) -> tuple[Any, Any]:
    """The model's own held-out split (and the training part, for fine-tuning)."""
    if data is None:
        return None, None
    from edgecls.evaluate import validation_set

    return validation_set(info, data)


def _measure_files(original: Any, pruned: Any, info: Any, config: PruneConfig, result: PruneResult) -> None:
    """FP32 TFLite size, gzip size and one-thread latency of both models, in one run."""
    if not config.measure_tflite:
        return
    from edgecls.prune.magnitude import gzip_size
    from edgecls.prune.measure import compare_latency, tflite_fp32

    with tempfile.TemporaryDirectory(prefix="edgecls-prune-") as scratch:
        paths = [
            tflite_fp32(model, Path(scratch) / f"{name}.tflite", info)
            for name, model in (("before", original), ("after", pruned))
        ]
        result.file_size_before, result.file_size_after = (path.stat().st_size for path in paths)
        result.gzip_size_before, result.gzip_size_after = (gzip_size(path) for path in paths)
        result.latency = compare_latency(paths, threads=1)
    result.latency_ms_before, result.latency_ms_after = result.latency["latency_ms"]
