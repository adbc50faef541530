"""The search space of ``edgecls tune``: named choices, a default, and a TOML file checked before anything runs.

A candidate is a ``Choices``: backbone (every registry model, ``cnn`` included), width α (only where the backbone
has one), input size, starting weights (``imagenet`` only where Keras' cache holds the file, else ``none``), a
uniform prune ratio and a precision. The prune dimension is a *uniform* ratio, not a MACs target: the candidate's
architecture must be fixed before training for its pre-training latency to be the final artifact's, and a
``--target-macs`` cut depends on the trained weights (its sensitivity scan).

```toml
backbones = ["cnn", "mobilenetv2", "mobilenetv3small"]
alphas = [0.35, 0.5, 0.75, 1.0]   # where a backbone has a width
sizes = [64, 96, 128]
ratios = [0.0, 0.25, 0.5]
precisions = ["int8", "fp16", "fp32"]
weights = ["imagenet", "none"]    # imagenet only where Keras' cache holds it

[backbone.mobilenetv3small]       # a backbone's own lists (alphas, sizes, weights)
alphas = [0.75, 1.0]

[grid]                            # the seeds, trained before the search samples: width x input size
backbone = "mobilenetv2"
alphas = [0.35, 0.5, 1.0]
sizes = [64, 96]

[training]
epochs = 20                       # a promoted trial's budget
rung_epochs = 5                   # every feasible trial's first rung
promote = 0.34                    # the running top fraction of rung-1 scores that trains the full budget
prune_finetune_epochs = 5

[measure]
rounds = 3                        # each a fresh process of `runs` timed inferences after `warmup`
runs = 50
warmup = 10
```

>>> space = default_space(rgb=True)
>>> space.backbone("mobilenetv2").alphas
(0.35, 0.5, 0.75, 1.0)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from edgecls.base.errors import ConfigError

PRECISIONS = ("int8", "fp16", "fp32")
WEIGHTS = ("imagenet", "none")
DEFAULT_ALPHAS = (0.35, 0.5, 0.75, 1.0)
DEFAULT_SIZES = (32, 64, 96, 128)
DEFAULT_RATIOS = (0.0, 0.25, 0.5)
GRID_BACKBONE = "mobilenetv2"
TOP_KEYS = (
    "backbones",
    "alphas",
    "sizes",
    "ratios",
    "precisions",
    "weights",
    "backbone",
    "grid",
    "training",
    "measure",
)
BACKBONE_KEYS = ("alphas", "sizes", "weights")
GRID_KEYS = ("backbone", "alphas", "sizes", "ratio", "precision")


@dataclass(frozen=True)
class Choices:
    """One candidate: what a trial trains, prunes, converts and measures."""

    backbone: str
    alpha: float | None  # None: the backbone has no width
    size: int
    weights: str  # imagenet | none
    ratio: float
    precision: str

    def label(self) -> str:
        """``mobilenetv2 α0.5 96px cut 0.25 int8``."""
        alpha = f" α{self.alpha:g}" if self.alpha is not None else ""
        weights = " imagenet" if self.weights == "imagenet" else ""
        cut = f" cut {self.ratio:g}" if self.ratio else ""
        return f"{self.backbone}{alpha} {self.size}px{weights}{cut} {self.precision}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BackboneSpace:
    name: str
    alphas: tuple[float, ...]  # () where the backbone has no width
    sizes: tuple[int, ...]
    weights: tuple[str, ...]  # ("none",) or ("imagenet", "none"): imagenet asked where cached at alpha and size


@dataclass(frozen=True)
class Training:
    epochs: int = 20
    rung_epochs: int = 5
    promote: float = 0.34
    prune_finetune_epochs: int = 5
    batch_size: int = 64


@dataclass(frozen=True)
class Measuring:
    rounds: int = 3
    runs: int = 50
    warmup: int = 10


@dataclass(frozen=True)
class SearchSpace:
    backbones: tuple[BackboneSpace, ...]
    ratios: tuple[float, ...]
    precisions: tuple[str, ...]
    grid: tuple[Choices, ...]  # the seeds
    training: Training = field(default_factory=Training)
    measuring: Measuring = field(default_factory=Measuring)
    shared_alphas: tuple[float, ...] = DEFAULT_ALPHAS  # backbones with these lists share one "alpha" / "size" param
    shared_sizes: tuple[int, ...] = DEFAULT_SIZES

    def backbone(self, name: str) -> BackboneSpace:
        return next(backbone for backbone in self.backbones if backbone.name == name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(backbone.name for backbone in self.backbones)

    def param_name(self, backbone: BackboneSpace, dimension: str) -> str:
        """The Optuna parameter a dimension is asked as: shared where a backbone keeps the space's list (so the
        sampler learns it across backbones), its own (``mobilenetv3small:alpha``) where it has its own."""
        if dimension == "weights":
            return f"{backbone.name}:weights"
        own = backbone.alphas != self.shared_alphas if dimension == "alpha" else backbone.sizes != self.shared_sizes
        return f"{backbone.name}:{dimension}" if own else dimension

    def params(self, choices: Choices, *, weights_asked: bool) -> dict[str, Any]:
        """The Optuna parameters that make a trial ask ``choices`` (``enqueue_trial``)."""
        backbone = self.backbone(choices.backbone)
        params: dict[str, Any] = {"backbone": choices.backbone, self.param_name(backbone, "size"): choices.size}
        if choices.alpha is not None:
            params[self.param_name(backbone, "alpha")] = choices.alpha
        if weights_asked:
            params[self.param_name(backbone, "weights")] = choices.weights
        return {**params, "ratio": choices.ratio, "precision": choices.precision}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_space(*, rgb: bool, precision: str = "int8") -> SearchSpace:
    """Every registry backbone at the default alphas, sizes, ratios and precisions; seeds: a MobileNetV2 grid."""
    return load_space(None, rgb=rgb, precision=precision)


def load_space(path: str | Path | None, *, rgb: bool, precision: str = "int8") -> SearchSpace:
    """The space of a TOML file (None: the default), checked; ``rgb``: whether ImageNet weights can apply to the
    data; ``precision``: the grid seeds' precision unless the file says (the target's own)."""
    from edgecls.models import get_entry, list_models

    document = _read(path) if path is not None else {}
    source = str(path) if path is not None else "the default space"
    _check_keys(document, TOP_KEYS, source, "")
    names = tuple(_list(document, "backbones", str, source, list_models()))
    registry = list_models()
    for name in names:
        if name not in registry:
            raise ConfigError(f"{source}: unknown backbone {name!r}; the model registry has: {', '.join(registry)}")
    alphas = tuple(float(a) for a in _list(document, "alphas", (int, float), source, DEFAULT_ALPHAS))
    sizes = tuple(int(s) for s in _list(document, "sizes", int, source, DEFAULT_SIZES))
    weights = tuple(_list(document, "weights", str, source, WEIGHTS))
    own = document.get("backbone", {})
    if not isinstance(own, dict):
        raise ConfigError(f"{source}: backbone must be tables ([backbone.NAME])")
    for name in own:
        if name not in names:
            raise ConfigError(f"{source}: [backbone.{name}] names no backbone of backbones = {list(names)}")
    backbones = []
    for name in names:
        table = own.get(name, {})
        _check_keys(table, BACKBONE_KEYS, source, f"[backbone.{name}] ")
        entry = get_entry(name)
        own_alphas = tuple(float(a) for a in _list(table, "alphas", (int, float), source, alphas))
        if "alphas" in table and not entry.has_alpha:
            with_alpha = ", ".join(n for n in registry if get_entry(n).has_alpha)
            raise ConfigError(
                f"{source}: [backbone.{name}] alphas: {name} has no width (alpha applies to {with_alpha})"
            )
        own_sizes = tuple(int(s) for s in _list(table, "sizes", int, source, sizes))
        small = [size for size in own_sizes if size < entry.min_image_size]
        if small:
            raise ConfigError(
                f"{source}: input size {small[0]} is below {name}'s minimum of {entry.min_image_size} px; drop it, or "
                f"give {name} its own sizes ([backbone.{name}] sizes = [...])"
            )
        own_weights = tuple(_list(table, "weights", str, source, weights))
        unknown = [w for w in own_weights if w not in WEIGHTS]
        if unknown:
            raise ConfigError(f"{source}: weights {unknown[0]!r}; choose from {', '.join(WEIGHTS)}")
        imagenet = "imagenet" in own_weights and rgb and entry.keras_module is not None
        backbones.append(
            BackboneSpace(
                name,
                own_alphas if entry.has_alpha else (),
                own_sizes,
                ("imagenet", "none") if imagenet else ("none",),
            )
        )
    ratios = tuple(float(r) for r in _list(document, "ratios", (int, float), source, DEFAULT_RATIOS))
    if any(not 0.0 <= r < 1.0 for r in ratios):
        raise ConfigError(f"{source}: ratios are fractions of each group's channels to remove, in [0, 1): {ratios}")
    precisions = tuple(_list(document, "precisions", str, source, PRECISIONS))
    if any(p not in PRECISIONS for p in precisions):
        raise ConfigError(f"{source}: precisions must be among {', '.join(PRECISIONS)}, got {list(precisions)}")
    training = _table(document, "training", Training, source)
    measuring = _table(document, "measure", Measuring, source)
    _check_training(training, measuring, source)
    space = SearchSpace(tuple(backbones), ratios, precisions, (), training, measuring, alphas, sizes)
    grid = _grid(document.get("grid"), space, source, precision)
    return dataclasses.replace(space, grid=grid)


def _grid(table: Any, space: SearchSpace, source: str, precision: str) -> tuple[Choices, ...]:
    """The width x input-size seeds; by default MobileNetV2's (else the first backbone with a width, else the first)."""
    if table is None:
        with_width = [b for b in space.backbones if b.alphas]
        default = next((b for b in with_width if b.name == GRID_BACKBONE), with_width[0] if with_width else None)
        table = {"backbone": (default or space.backbones[0]).name}
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: grid must be a table ([grid])")
    _check_keys(table, GRID_KEYS, source, "[grid] ")
    name = table.get("backbone")
    if name not in space.names:
        raise ConfigError(f"{source}: [grid] backbone {name!r} is not one of backbones = {list(space.names)}")
    backbone = space.backbone(name)
    alphas = tuple(float(a) for a in table.get("alphas", backbone.alphas)) or (None,)
    sizes = tuple(int(s) for s in table.get("sizes", backbone.sizes))
    ratio = float(table.get("ratio", 0.0 if 0.0 in space.ratios else space.ratios[0]))
    chosen = str(table.get("precision", precision if precision in space.precisions else space.precisions[0]))
    outside = [a for a in alphas if a is not None and a not in backbone.alphas]
    outside += [s for s in sizes if s not in backbone.sizes]
    if outside:
        raise ConfigError(
            f"{source}: [grid] {outside[0]:g} is not among {name}'s alphas {list(backbone.alphas)} or sizes "
            f"{list(backbone.sizes)}: the seeds must lie in the space"
        )
    if ratio not in space.ratios or chosen not in space.precisions:
        raise ConfigError(
            f"{source}: [grid] ratio {ratio:g} / precision {chosen!r}: the seeds must lie in the space (ratios "
            f"{list(space.ratios)}, precisions {list(space.precisions)})"
        )
    return tuple(Choices(name, alpha, size, "none", ratio, chosen) for alpha in alphas for size in sizes)


def _check_training(training: Training, measuring: Measuring, source: str) -> None:
    if training.epochs < 1 or not 1 <= training.rung_epochs <= training.epochs:
        raise ConfigError(
            f"{source}: [training] epochs must be at least 1 and rung_epochs between 1 and epochs "
            f"(got {training.epochs}, {training.rung_epochs}); rung_epochs = epochs trains every feasible trial fully"
        )
    if not 0.0 < training.promote <= 1.0:
        raise ConfigError(f"{source}: [training] promote is a fraction in (0, 1], got {training.promote}")
    if training.prune_finetune_epochs < 0 or training.batch_size < 1:
        raise ConfigError(f"{source}: [training] prune_finetune_epochs must be 0 or more and batch_size 1 or more")
    if measuring.rounds < 1 or measuring.runs < 1 or measuring.warmup < 0:
        raise ConfigError(f"{source}: [measure] rounds and runs must be at least 1, warmup 0 or more")


def _read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such space file")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc


def _check_keys(table: dict[str, Any], valid: tuple[str, ...], source: str, where: str) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ConfigError(f"{source}: {where}unknown key(s) {', '.join(unknown)}; valid: {', '.join(valid)}")


def _list(table: dict[str, Any], key: str, kind: Any, source: str, default: Any) -> list[Any]:
    value = table.get(key, list(default))
    if not isinstance(value, list) or not value or any(isinstance(v, bool) or not isinstance(v, kind) for v in value):
        raise ConfigError(f"{source}: {key} must be a non-empty list, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{source}: {key} lists a value twice: {value!r}")
    return value


def _table(document: dict[str, Any], key: str, cls: Any, source: str) -> Any:
    table = document.get(key, {})
    valid = tuple(f.name for f in dataclasses.fields(cls))
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: {key} must be a table ([{key}])")
    _check_keys(table, valid, source, f"[{key}] ")
    for name, value in table.items():
        wanted = type(getattr(cls(), name))
        if isinstance(value, bool) or not isinstance(value, (int, float) if wanted is float else wanted):
            raise ConfigError(f"{source}: [{key}] {name} must be a number, got {value!r}")
    return cls(**table)


def space_from_dict(document: dict[str, Any]) -> SearchSpace:
    """The space as ``SearchSpace.to_dict`` wrote it (a study's record of what it searched)."""
    return SearchSpace(
        backbones=tuple(
            BackboneSpace(b["name"], tuple(b["alphas"]), tuple(b["sizes"]), tuple(b["weights"]))
            for b in document["backbones"]
        ),
        ratios=tuple(document["ratios"]),
        precisions=tuple(document["precisions"]),
        grid=tuple(Choices(**seed) for seed in document["grid"]),
        training=Training(**document["training"]),
        measuring=Measuring(**document["measuring"]),
        shared_alphas=tuple(document["shared_alphas"]),
        shared_sizes=tuple(document["shared_sizes"]),
    )
