"""Top-1 under camera corruptions: the held-out split of plain ``evaluate``, each frame corrupted before the resize.

Works on ``.keras``, ``.tflite`` and ``.onnx`` (the last two through
``edgecls.runtime``, without TensorFlow). A folder's images are read again
from their files at their own size, corrupted (``edgecls.runtime.corruptions``)
and then resized by the runtime's ``to_model_pixels``, as a camera frame would
be; the built-in digits have no larger frame than the model's input, so their
model-size pixels are the frame.

>>> result = evaluate_corruptions("runs/cnn-digits/model.tflite", "digits")  # doctest: +SKIP
>>> result.clean_top1, result.mean_corruption_top1, result.corruptions["gaussian_noise"]  # doctest: +SKIP
(0.986, 0.871, [0.98, 0.97, 0.95, 0.9, 0.8])
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgecls.base.errors import ConfigError
from edgecls.base.fileio import write_json
from edgecls.data import ImageSet
from edgecls.evaluate import describe_engine, make_scorer, model_info, validation_set
from edgecls.runtime.corruptions import SEVERITIES, corrupt, image_rng, list_corruptions, parse_severities
from edgecls.runtime.preprocess import read_image, to_model_pixels

log = logging.getLogger(__name__)

__all__ = ["CorruptionResult", "evaluate_corruptions", "parse_severities"]

CHUNK = 32  # frames decoded at a time: memory stays at one chunk of full-size frames whatever the split's size


@dataclass
class CorruptionResult:
    model: str
    engine: str
    data: str
    n_images: int
    seed: int
    severities: list[int]
    clean_top1: float
    mean_corruption_top1: float  # over every corruption and severity asked for
    corruptions: dict[str, list[float]]  # name -> top-1 per severity, in ``severities`` order
    frames: str  # what was corrupted: the source files at their size, or the model-size pixels
    plot_png: str | None = None
    notes: list[str] = field(default_factory=list)


def evaluate_corruptions(
    model_path: str | Path,
    data: str | None = None,
    *,
    severities: Sequence[int] = SEVERITIES,
    corruptions: Sequence[str] | None = None,
    seed: int = 0,
    threads: int | None = None,
    out_dir: str | Path | None = None,
) -> CorruptionResult:
    """Clean top-1, top-1 per corruption and severity, and their mean, on the model's held-out split.

    Image ``i`` of the split is corrupted with ``image_rng(seed, i)``: the same
    seed gives the same corrupted images for every artifact, so an FP32 and an
    INT8 artifact are compared on identical frames.
    """
    names = tuple(corruptions) if corruptions else list_corruptions()
    unknown = [name for name in names if name not in list_corruptions()]
    if unknown:
        raise ConfigError(f"unknown corruption {', '.join(unknown)}; choose from {', '.join(list_corruptions())}")
    severities = tuple(severities)
    info = model_info(model_path)
    images, dataset = validation_set(info, data)
    score = make_scorer(model_path, threads)
    clean_correct = 0
    correct = {name: np.zeros(len(severities), np.int64) for name in names}
    from_files = 0
    for start in range(0, len(images), CHUNK):
        stop = min(start + CHUNK, len(images))
        labels = images.labels[start:stop]
        clean_correct += int(np.sum(score(images.images[start:stop]).argmax(axis=1) == labels))
        frames, read = _source_frames(images, range(start, stop), info.channel_order)
        from_files += read
        for name in names:
            for column, severity in enumerate(severities):
                batch = np.stack(
                    [
                        to_model_pixels(
                            corrupt(frame, name, severity, image_rng(seed, index)), info.input_size, info.channel_order
                        )
                        for index, frame in zip(range(start, stop), frames)
                    ]
                )
                correct[name][column] += int(np.sum(score(batch).argmax(axis=1) == labels))
        log.info("corruptions: %d of %d images done", stop, len(images))
    n_images = len(images)
    top1 = {name: [round(float(count) / max(n_images, 1), 4) for count in counts] for name, counts in correct.items()}
    every = [value for values in top1.values() for value in values]
    frames_note = (
        "source files at their own size, corrupted before the model's resize"
        if from_files == n_images
        else "model-size pixels (the data set has no larger frames)"
        if from_files == 0
        else f"source files for {from_files} of {n_images} images, model-size pixels for the rest"
    )
    result = CorruptionResult(
        model=str(model_path),
        engine=describe_engine(model_path, threads),
        data=dataset.name,
        n_images=n_images,
        seed=seed,
        severities=list(severities),
        clean_top1=round(clean_correct / max(n_images, 1), 4),
        mean_corruption_top1=round(float(np.mean(every)), 4) if every else 0.0,
        corruptions=top1,
        frames=frames_note,
    )
    out = Path(out_dir) if out_dir else Path(model_path).parent
    stem = Path(model_path).name.replace(".", "_")
    result.plot_png = _plot_if_possible(result, out / f"corruptions_{stem}.png")
    write_json(out / f"corruptions_{stem}.json", result)
    return result


def _source_frames(images: ImageSet, indices: Iterable[int], channel_order: str) -> tuple[list[np.ndarray], int]:
    """The frames behind ``images[indices]`` as OpenCV gives them (BGR or gray), and how many came from files."""
    frames, from_files = [], 0
    for index in indices:
        source = Path(images.sources[index])
        frame = read_image(source) if source.suffix and source.is_file() else None
        if frame is not None:
            from_files += 1
        else:  # digits, or a file gone since loading: the model-size pixels are the frame
            pixels = images.images[index]
            frame = pixels[:, :, 0] if channel_order == "GRAY" else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
        frames.append(frame)
    return frames, from_files


def _plot_if_possible(result: CorruptionResult, path: Path) -> str | None:
    try:
        from edgecls.base.plots import pyplot, save_figure

        plt = pyplot()
    except ImportError:  # a device install: the table and JSON carry the same figures
        log.info("matplotlib is not installed: no corruption plot")
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, values in result.corruptions.items():
        axis.plot(result.severities, values, marker="o", label=name)
    axis.axhline(result.clean_top1, color="black", linestyle="--", label=f"clean {result.clean_top1:.1%}")
    axis.set_xticks(result.severities)
    axis.set_xlabel("severity")
    axis.set_ylabel("top-1")
    axis.set_ylim(0, 1.02)
    axis.set_title(f"{Path(result.model).name} on {result.data} val ({result.n_images} images)")
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    return str(save_figure(figure, path))
