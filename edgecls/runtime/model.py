"""``Classifier``: a camera frame in, the top-k labels out, on any engine.

>>> from edgecls.runtime import Classifier  # doctest: +SKIP
>>> clf = Classifier("model.tflite", threads=4)  # doctest: +SKIP
>>> clf.predict(cv2.imread("cat.jpg"))  # doctest: +SKIP
[('cat', 0.93), ('dog', 0.05), ...]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from edgecls.base.errors import ModelError
from edgecls.runtime.engines import Engine, TensorSpec, load_engine
from edgecls.runtime.metadata import METADATA_KEY, ModelInfo, read_model_info
from edgecls.runtime.preprocess import to_model_pixels

if TYPE_CHECKING:
    from edgecls.runtime.collect import Collector

Prediction = list[tuple[str, float]]


class Classifier:
    """An image classifier artifact (``.tflite`` or ``.onnx``) ready for frames.

    Labels, input size and channel order are read from the file itself.
    ``predict`` takes a BGR (or gray) uint8 frame of any size, as
    ``cv2.imread`` and ``cv2.VideoCapture`` give it.

    Thread safety: one ``Classifier`` may be shared by several threads; calls
    into the engine are serialised by a lock. For parallel inference, give each
    thread its own ``Classifier``.

    ``collect``: a ``Collector`` that keeps the frames ``predict`` and
    ``predict_batch`` were unsure about (see ``edgecls.runtime.collect``).

    ``precision`` (fp32, fp16, int8: a target's first) is what TensorRT builds
    an ``.onnx`` for (see ``load_engine``); other engines run the graph as it is.

    ``kernels`` (a ``.tflite``'s): ``default`` (XNNPACK where it takes the
    graph), ``builtin`` or ``reference``: LiteRT's other CPU kernel families,
    e.g. to see on x86 what a device without XNNPACK computes.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        threads: int | None = None,
        top_k: int = 5,
        providers: tuple[str, ...] = (),
        collect: Collector | None = None,
        precision: str | None = None,
        kernels: str = "default",
    ) -> None:
        self.path = Path(model_path)
        _check_top_k(top_k)
        self.engine: Engine = load_engine(
            self.path, threads=threads, providers=providers, precision=precision, kernels=kernels
        )
        self.info: ModelInfo = self._read_info()
        self.top_k = top_k
        self.labels = self.info.labels
        # Decided once here, not per frame: on a camera loop every call counts.
        self._encode = _input_encoder(self.engine.input)
        self._scale, self._zero_point = (
            (self.engine.output.scale, self.engine.output.zero_point) if self.engine.output.quantized else (1.0, 0)
        )
        height, width = self.info.input_size
        if self.engine.input.shape[1:3] != (height, width):
            raise ModelError(
                f"{self.path}: metadata says input {height}x{width} but the graph takes {self.engine.input.shape}"
            )
        self.collect = collect
        self._digest = ""
        if collect is not None:
            from edgecls.runtime.collect import file_sha256

            self._digest = file_sha256(self.path)  # once: every kept frame names the model that judged it

    def _read_info(self) -> ModelInfo:
        custom = getattr(self.engine, "custom_metadata", None)
        if custom is not None:
            raw = custom.get(METADATA_KEY)
            info = ModelInfo.from_dict(json.loads(raw), source=str(self.path)) if raw else None
        else:
            info = read_model_info(self.path)
        if info is None:
            return self._info_from_graph()
        return info

    def _info_from_graph(self) -> ModelInfo:
        # A model not made by edgecls: infer what we can, label classes by index.
        shape = self.engine.input.shape
        if len(shape) != 4 or shape[3] not in (1, 3):
            layout = " (channels first, as PyTorch exports)" if len(shape) == 4 and shape[1] in (1, 3) else ""
            raise ModelError(
                f"{self.path}: input {self.engine.input.name!r} has shape {shape}{layout}; the runtime feeds images as "
                "(batch, height, width, 1 or 3 channels) of pixels 0..255, with any normalisation inside the model"
            )
        _, height, width, channels = shape
        classes = self.engine.output.shape[-1]
        return ModelInfo(
            tuple(str(i) for i in range(classes)), (height, width), channels, "GRAY" if channels == 1 else "RGB"
        )

    # -- the three steps, public so benchmarks can time each ------------------

    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        """BGR/gray uint8 frame → the model's HxWxC uint8 pixels (resize + channel order)."""
        return to_model_pixels(frame, self.info.input_size, self.info.channel_order)

    def to_input(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels (N,H,W,C) → the input tensor's dtype.

        A uint8 input with scale 1 and zero point 0 takes the bytes as they are
        (no float math); an int8 input takes ``pixel - 128`` when quantised that
        way; anything else is quantised with the tensor's own parameters.
        """
        return self._encode(pixels)

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Class scores (N, classes) for model-ready uint8 pixels (N,H,W,C)."""
        if pixels.ndim == 3:
            pixels = pixels[None]
        return self.engine.run(self.to_input(pixels))

    # -- what camera scripts call ----------------------------------------------

    def predict(self, frame: np.ndarray, top_k: int | None = None) -> Prediction:
        """Top-k ``(label, score)`` for one BGR/gray uint8 frame of any size."""
        raw = self.engine.invoke_raw(self.to_input(self.preprocess(frame)[None]))[0]
        if self.collect is not None:
            self._offer(self.collect, frame, raw)
        return self._top_k(raw, top_k)

    def predict_batch(self, frames: list[np.ndarray], top_k: int | None = None) -> list[Prediction]:
        """``predict`` for many frames, run as one batch."""
        if not len(frames):
            return []
        batch = np.stack([self.preprocess(frame) for frame in frames])
        raw = self.engine.invoke_raw(self.to_input(batch))
        if self.collect is not None:
            for frame, row in zip(frames, raw):
                self._offer(self.collect, frame, row)
        return [self._top_k(row, top_k) for row in raw]

    def _offer(self, collect: Collector, frame: np.ndarray, raw: np.ndarray) -> None:
        scores = (raw.astype(np.float32) - self._zero_point) * self._scale
        collect.consider(frame, self.labels, scores, model=self.path.name, model_sha256=self._digest)

    def _top_k(self, raw: np.ndarray, top_k: int | None) -> Prediction:
        """The k best classes of one raw output row (quantised or not), dequantising only those k."""
        k = self.top_k if top_k is None else top_k
        _check_top_k(k)
        best, values = best_indices(raw, k)
        scale, zero_point, labels = self._scale, self._zero_point, self.labels
        return [(labels[i], float((values[i] - zero_point) * scale)) for i in best]

    def __repr__(self) -> str:
        height, width = self.info.input_size
        return (
            f"Classifier({str(self.path)!r}, engine={self.engine.name} {self.engine.version}, "
            f"provider={self.engine.provider}, threads={self.engine.threads}, "
            f"input={height}x{width}x{self.info.channels} {self.engine.input.dtype}, classes={len(self.labels)})"
        )


def _check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise ValueError(f"top_k must be 1 or more, got {top_k}")


def best_indices(row: np.ndarray, k: int) -> tuple[list[int], list[Any]]:
    """Indices of the ``k`` largest values of ``row``, largest first, ties in index order; and the row as a list."""
    k = min(k, row.shape[0])
    if row.shape[0] <= 256:  # short rows: one Python sort costs less than several numpy calls
        values = row.tolist()
        return sorted(range(len(values)), key=values.__getitem__, reverse=True)[:k], values
    values = row.astype(np.float64)
    return np.argsort(-values, kind="stable")[:k].tolist(), values.tolist()


def _input_encoder(spec: TensorSpec) -> Callable[[np.ndarray], np.ndarray]:
    """The uint8 pixels → input tensor conversion for this input."""
    if spec.dtype == np.uint8 and (not spec.quantized or (abs(spec.scale - 1.0) < 1e-6 and spec.zero_point == 0)):
        return lambda pixels: np.ascontiguousarray(pixels, dtype=np.uint8)
    if spec.quantized and spec.dtype == np.int8 and abs(spec.scale - 1.0) < 1e-6 and spec.zero_point == -128:
        return lambda pixels: np.bitwise_xor(pixels, 128).view(np.int8)  # pixel - 128 in one pass: flip the top bit
    if spec.quantized:
        info = np.iinfo(spec.dtype)

        def quantize(pixels: np.ndarray) -> np.ndarray:
            quantized = np.round(pixels.astype(np.float32) / spec.scale) + spec.zero_point
            return cast(np.ndarray, np.clip(quantized, info.min, info.max).astype(spec.dtype))

        return quantize
    return lambda pixels: pixels.astype(spec.dtype)
