"""The artifacts a box runs, made here on x86 through edgecls' public functions: two models, three precisions, and QAT.

``cnn`` and ``mobilenetv3small`` (from scratch: no download here) are trained briefly on ``textures4``
(``benchmarks/photoset.py``: patches of photographs shipped in scikit-image), at 48 x 48 pixels, the patches'
own size: ``Classifier``'s resize is then a copy on every OpenCV version, and a score difference between x86
and a box is the engines' and kernels' alone. Each model is exported (FP32 ``.tflite`` and ``.onnx``) and
quantized (FP16 ``.tflite``; INT8 ``.tflite`` and ``.onnx``, calibrated on training patches); MobileNetV3-Small
also through quantization-aware training (``--qat``, one epoch: INT8 ``.tflite`` and ``.onnx`` with its ranges).
The evaluation folder is the validation patches: another region of each photo than any training or calibration
patch.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

IMAGE_SIZE = 48  # pixels, the photoset's patch side and both models' input (emulated inference: cost ~ pixels)
TRAIN_PER_CLASS, EVAL_PER_CLASS = 100, 6  # 400 training patches; 24 images scored in every box (emulated: slow)
CALIB_PER_CLASS = 25
# name -> TrainConfig options: enough steps (20 a epoch) for confident, well-separated scores on textures; a model
# at chance scores near-ties, and a near-tie's top-1 is no test of two engines agreeing.
MODELS = {
    "cnn": {"epochs": 10, "batch_size": 16},
    "mobilenetv3small": {"epochs": 15, "batch_size": 16, "alpha": 0.75, "weights": "none"},
}

QAT_MODELS, QAT_EPOCHS = ("mobilenetv3small",), 1  # hard-swish and squeeze-excite: what QAT is for (issue 27)


@dataclass
class Artifacts:
    eval_dir: Path
    files: dict[str, Path] = field(default_factory=dict)  # "cnn_int8.tflite" -> path
    val_accuracy: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def precision(self, name: str) -> str:
        return name.rsplit(".", 1)[0].rsplit("_", 1)[1]

    def named(self, *, suffixes: tuple[str, ...] = (".tflite", ".onnx")) -> list[str]:
        return [name for name in self.files if name.endswith(suffixes)]


def make_artifacts(out: Path) -> Artifacts:
    """Train, export and quantize both models into ``out``; returns where everything is."""
    import shutil

    from photoset import TEXTURES4, make_photoset

    from edgecls.export import export
    from edgecls.quantize import QuantizeConfig, quantize
    from edgecls.train import TrainConfig, train

    started = time.monotonic()
    photos = make_photoset(
        out / "textures", TEXTURES4, train_per_class=TRAIN_PER_CLASS, val_per_class=EVAL_PER_CLASS,
        patch_size=IMAGE_SIZE, seed=0,
    )  # fmt: skip
    calib = out / "calib"
    for folder in sorted((photos / "train").iterdir()):
        (calib / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.png"))[:CALIB_PER_CLASS]:
            shutil.copyfile(image, calib / folder.name / image.name)
    artifacts = Artifacts(photos / "val")
    for model, options in MODELS.items():
        run = out / model
        config = TrainConfig(
            data=str(photos / "train"), model=model, img_size=IMAGE_SIZE, patience=0, out=str(run), seed=0, **options
        )
        trained = train(config)
        artifacts.val_accuracy[model] = float(trained.val_accuracy)
        exported = export(trained.model_path, out_dir=run / "fp32")
        fp16 = quantize(trained.model_path, QuantizeConfig(precision="fp16", out=str(run / "fp16")))
        int8 = quantize(trained.model_path, QuantizeConfig(calib=str(calib), formats=("tflite", "onnx"), out=str(run)))
        results = [(model, "fp32", exported), (model, "fp16", fp16), (model, "int8", int8)]
        if model in QAT_MODELS:  # quantization-aware training's INT8 (fake-quant ranges) on the Pi's OS too
            qat = QuantizeConfig(
                calib=str(calib), formats=("tflite", "onnx"), qat=True, qat_epochs=QAT_EPOCHS, out=str(run / "qat")
            )
            results.append((f"{model}-qat", "int8", quantize(trained.model_path, qat)))
        for name, precision, result in results:
            for artifact in result.artifacts:
                suffix = Path(artifact.path).suffix
                if suffix in (".tflite", ".onnx"):
                    target = out / f"{name}_{precision}{suffix}"
                    shutil.copyfile(artifact.path, target)
                    artifacts.files[target.name] = target
    artifacts.seconds = round(time.monotonic() - started, 1)
    return artifacts
