"""Benchmark of ``edgecls quantize --qat`` (issue 27): where post-training INT8 loses, does QAT win it back?

Writes ``benchmarks/results/qat.json``: for each model and seed, the float
model and four INT8 variants — PTQ per-channel, PTQ per-tensor, QAT
per-channel, QAT per-tensor — each as TFLite and ONNX, with top-1 on held-out
real photos, size, agreement with the model it came from, and host latency.

Protocol:

- data: ``photos10`` cut from photographs shipped in scikit-image /
  scikit-learn (``benchmarks/photoset.py``): 150 training and 60 validation
  patches per class from the left 70 % of each photo, and a *test* folder of
  100 patches per class from the right 30 % (another patch seed): the float
  model's best epoch is chosen on ``val/``, every top-1 here is on ``test``
  (1,000 images, one image = 0.1 point), which no stage has seen;
- float: ``edgecls train`` from scratch (no ImageNet weights here) at 64 px
  with the library's defaults (``TrainConfig(data, model, alpha, img_size=64,
  weights="none", seed)``: the from-scratch epochs, learning rate, early
  stopping and precise BatchNorm a user gets), per seed;
- calibration: 300 training images (``edgecls calib-data``), the same for
  PTQ and for QAT's starting ranges;
- INT8: ``edgecls.quantize.quantize`` with ``max_float_layers=0`` (plain INT8:
  the budget may not keep a layer float), TFLite ``--io int8``, ONNX in the
  default ``cpu`` scheme; QAT with the library's defaults (``QuantizeConfig``'s
  ``qat_epochs`` and ``qat_lr``: the float model as teacher) on the training
  split, seeded like the float model;
- control (``--control``): the float model fine-tuned the same way *without*
  fake quantization (``qat.finetune`` on the float model, itself as teacher):
  how much of QAT's top-1 is further training rather than quantization
  awareness;
- kernels: each INT8 TFLite's top-1 through LiteRT's default (XNNPACK) and
  its built-in kernels, image by image (``kernel_agreement``): the engine's
  own consistency, beside QAT's agreement with its Keras model;
- latency: ``edgecls.runtime.measure.measure_model`` (the ``edgecls bench``
  code path), one thread, 100 runs after 10 warm-up, on this x86 host (not a
  Pi: host numbers are host numbers).

Run: ``nice -n 10 .venv/bin/python benchmarks/qat.py --models efficientnetb0 --seeds 0,1,2``
(about 15 minutes of training and an hour of quantizing, QAT's 12 epochs most of it, per EfficientNet-B0 seed on
2 shared cores). Seeds already in ``--out`` are kept, and so is a variant's
quantized folder whose report has this run's configuration (it is measured
again, not quantized again); to measure a new QAT recipe
on the same float models, write to a new ``--out`` with ``--reuse-ptq
benchmarks/results/qat.json`` (the float and PTQ rows are taken from there).

Recheck: ``--recheck`` scores the same files on the same test cut through the
runtime as it is now (after a runtime fix, without retraining), and bounds each
QAT ONNX's agreement with its QAT Keras model from below by its agreement with
the TFLite twin plus the TFLite's own agreement with the Keras model, less 1
(the Keras predictions are not kept).

Rescore: ``--rescore 500`` scores the artifacts the results file describes (the
same files, nothing retrained) on a larger held-out cut, 500 patches per class
from the same right 30 % with another patch seed (5,000 images, one image =
0.02 point), and adds a ``rescore`` section with its own checks; the section
goes when the benchmark next writes its seeds (new artifacts).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from photoset import PHOTOS10, make_photoset  # noqa: E402

from edgecls.quantize.config import QAT_EPOCHS, QAT_LR  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "qat.json"
WORK = ROOT / "runs" / "bench-qat"
IMAGE_SIZE = 64
THREADS, RUNS, WARMUP = 1, 100, 10
VARIANTS = {  # name → (per_channel, qat)
    "ptq_per_channel": (True, False),
    "ptq_per_tensor": (False, False),
    "qat_per_channel": (True, True),
    "qat_per_tensor": (False, True),
}
log = logging.getLogger("benchmarks.qat")


def photo_data(work: Path) -> tuple[Path, Path, Path]:
    """(train+val folder, test folder, calibration folder), made once."""
    from edgecls.quantize.calibration import CalibDataConfig, make_calibration_folder

    data, calib = work / "data" / "photos10", work / "data" / "calib"
    if not data.exists():
        make_photoset(data, PHOTOS10, train_per_class=150, val_per_class=60, patch_size=IMAGE_SIZE, seed=0)
    test = held_out_cut(work / "data" / "photos10-test", per_class=100, seed=1)
    if not calib.exists():
        make_calibration_folder(CalibDataConfig(source=str(data), out=str(calib), n=300))
    return data, test, calib


def held_out_cut(folder: Path, *, per_class: int, seed: int) -> Path:
    """``folder``: ``per_class`` patches per class from the right 30 % of each photo (patch ``seed``), made once."""
    import shutil

    if not folder.exists():
        other = make_photoset(
            folder.parent / f".{folder.name}", PHOTOS10, train_per_class=1, val_per_class=per_class, seed=seed
        )
        shutil.move(str(other / "val"), str(folder))
        shutil.rmtree(other)
    return folder


def float_model(spec: str, seed: int, data: Path, work: Path) -> Path:
    """``spec`` (``name`` or ``name@alpha``) trained from scratch on ``data`` with ``seed`` and the library's
    defaults (reused when present)."""
    from edgecls.train import TrainConfig, train

    name, _, alpha = spec.partition("@")
    out = work / f"{spec.replace('@', '-')}-s{seed}"
    if not (out / "model.keras").exists():
        config = TrainConfig(
            data=str(data),
            model=name,
            alpha=float(alpha or 1.0),
            img_size=IMAGE_SIZE,
            weights="none",
            seed=seed,
            out=str(out),
        )
        train(config)
    return out / "model.keras"


def latency(path: str) -> dict:
    from edgecls.runtime.measure import measure_model

    measured = measure_model(Path(path), threads=THREADS, runs=RUNS, warmup=WARMUP)
    return {"p50_ms": round(measured.latency_ms.p50, 4), "min_ms": round(measured.latency_ms.min, 4)}


def kernel_agreement(path: str, test: Path) -> float | None:
    """Share of the test images on which LiteRT's two CPU kernel families give an INT8 TFLite the same top-1: the
    default (XNNPACK, what ``edgecls.runtime`` runs on x86 and a Pi) and the built-in kernels (what runs where
    XNNPACK cannot, e.g. a Pi OS box under qemu). Their INT8 requantization rounds differently; this is the
    engine's own consistency, the scale against which QAT's agreement with "the" artifact is read."""
    from edgecls.evaluate import evaluation_images, model_info, predict_scores
    from edgecls.runtime import Classifier

    if not path.endswith(".tflite"):
        return None
    images = evaluation_images(model_info(path), str(test)).images
    default = predict_scores(Classifier(path, threads=1), images).argmax(1)
    builtin = predict_scores(Classifier(path, threads=1, kernels="builtin"), images).argmax(1)
    return float(np.mean(default == builtin))


def control_top1(model_path: Path, data: Path, test: Path, *, epochs: int, lr: float, seed: int) -> float:
    """Top-1 of the float model fine-tuned like QAT (same data, epochs, rate, seed, teacher) without fake
    quantization."""
    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.evaluate import evaluation_images, model_info, predict_scores
    from edgecls.quantize.qat import finetune, qat_augment, training_split

    info = model_info(model_path)
    model = load_keras_model(model_path)
    for layer in model.layers:  # frozen BatchNorm statistics, as QAT folds them
        if type(layer).__name__ == "BatchNormalization":
            layer.trainable = False
    train = training_split(info, str(data)).train
    teacher = load_keras_model(model_path)
    finetune(
        model,
        train,
        teacher=teacher,
        epochs=epochs,
        learning_rate=lr,
        seed=seed,
        augment=qat_augment(str(data)),
    )
    images = evaluation_images(info, str(test)).images
    return float(np.mean(predict_scores(model, images).argmax(1) == images.labels))


def reuse_rows(results: Path, spec: str, seed: int, model_path: Path) -> list[dict]:
    """The float and PTQ rows of ``spec``'s ``seed`` in an earlier ``results`` file, when they are of the same float
    model (``--reuse-ptq``: PTQ is deterministic, the two runs of 5246b18 and ebc514d gave identical rows);
    ``[]`` when the file has no such seed."""
    for run in json.loads(results.read_text()).get("models", {}).get(spec, {}).get("seeds", []):
        if run["seed"] == seed and run["model_path"] == os.path.relpath(model_path, ROOT):
            rows = [dict(row, reused_from=str(results)) for row in run["rows"] if not row["variant"].startswith("qat")]
            log.info("%s seed %d: float and PTQ rows reused from %s", spec, seed, results)
            return rows
    return []


def earlier_quantize(model_path: Path, config):
    """The result of an earlier ``quantize(model_path, config)`` whose report is already in ``config.out`` with the
    same configuration (the folder aside) and is newer than the model file, its artifacts read from that folder; None
    when there is none. A run interrupted after hours of QAT resumes from it instead of training again."""
    import dataclasses

    from edgecls.quantize.config import QuantizedArtifact, QuantizeResult

    out = Path(config.out)
    report = out / f"{model_path.stem}_{config.precision}_quantize.json"
    if not report.exists() or report.stat().st_mtime < model_path.stat().st_mtime:
        return None
    earlier = json.loads(report.read_text())
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))
    if {k: v for k, v in earlier["config"].items() if k != "out"} != {k: v for k, v in wanted.items() if k != "out"}:
        return None
    artifacts = [QuantizedArtifact(**dict(a, path=str(out / Path(a["path"]).name))) for a in earlier["artifacts"]]
    if not all(Path(a.path).exists() for a in artifacts):
        return None
    log.info("%s: quantized earlier with this configuration (%s), measured again", out, report)
    return QuantizeResult(**dict(earlier, artifacts=artifacts, report_json=str(report)))


def run_seed(spec: str, seed: int, args, data: Path, test: Path, calib: Path, work: Path) -> dict:
    from edgecls.export import export
    from edgecls.quantize import QuantizeConfig, quantize

    started = time.time()
    model_path = float_model(spec, seed, data, work)
    rows, float_top1 = [], None
    reused = reuse_rows(args.reuse_ptq, spec, seed, model_path) if args.reuse_ptq else []
    if reused:
        rows += reused
    else:
        exported = export(model_path, formats=("tflite", "onnx"), out_dir=model_path.parent / "fp32")
        for artifact in exported.artifacts:
            rows.append(
                {
                    "variant": "float",
                    "format": artifact.format,
                    "size_bytes": artifact.size_bytes,
                    **latency(artifact.path),
                }
            )
    qat_keras = {}
    for variant, (per_channel, qat) in VARIANTS.items():
        if reused and not qat:
            continue
        config = QuantizeConfig(
            calib=str(calib),
            eval_data=str(test),
            max_float_layers=0,
            per_channel=per_channel,
            formats=("tflite", "onnx"),
            seed=seed,
            qat=qat,
            qat_data=str(data) if qat else None,
            out=str(model_path.parent / variant),
        )
        result = earlier_quantize(model_path, config) or quantize(model_path, config)
        float_top1 = result.float_top1
        if qat:
            qat_keras[variant] = result.qat.get("keras_top1")
        for artifact in result.artifacts:
            rows.append(
                {
                    "variant": variant,
                    "format": artifact.format,
                    "top1": artifact.top1,
                    "drop_points": artifact.drop,
                    "agreement_with_float": artifact.agreement,
                    "agreement_with_qat_keras": artifact.qat_agreement,
                    "ptq_top1_same_run": artifact.ptq_top1,
                    "xnnpack_vs_builtin_kernels_same_top1": kernel_agreement(artifact.path, test),
                    "float_ops": artifact.float_ops,
                    "size_bytes": artifact.size_bytes,
                    "scheme": artifact.scheme,
                    "quantize_report": os.path.relpath(result.report_json, ROOT),
                    "quantize_seconds": result.seconds,
                    **latency(artifact.path),
                }
            )
    for row in rows:
        if row["variant"] == "float":
            row["top1"] = float_top1
    control = None
    if args.control:
        control = control_top1(model_path, data, test, epochs=QAT_EPOCHS, lr=QAT_LR, seed=seed)
    return {
        "seed": seed,
        "model_path": os.path.relpath(model_path, ROOT),
        "float_top1": float_top1,
        "qat_keras_top1": qat_keras,
        "float_finetuned_like_qat_top1": control,
        "rows": rows,
        "seconds": round(time.time() - started, 1),
    }


def summary(seeds: list[dict]) -> dict:
    """Mean (and each seed's) top-1 per variant and format, in points; drops against float."""
    table: dict[str, dict[str, list[float]]] = {}
    for run in seeds:
        for row in run["rows"]:
            table.setdefault(row["variant"], {}).setdefault(row["format"], []).append(100.0 * row["top1"])
        if run.get("float_finetuned_like_qat_top1") is not None:
            table.setdefault("float_finetuned_like_qat", {}).setdefault("keras", []).append(
                100.0 * run["float_finetuned_like_qat_top1"]
            )
    float_mean = float(np.mean([100.0 * run["float_top1"] for run in seeds]))
    out = {"float_top1_mean": round(float_mean, 2)}
    for variant, formats in table.items():
        for fmt, values in formats.items():
            out[f"{variant}/{fmt}"] = {
                "top1_mean": round(float(np.mean(values)), 2),
                "top1_per_seed": [round(v, 2) for v in values],
                "drop_mean_points": round(float_mean - float(np.mean(values)), 2),
            }
    return out


def top1_verdicts(table: dict) -> dict:
    """Figure 1's verdicts from a summary (``variant/format`` → ``drop_mean_points``): some PTQ artifact loses at
    least 1 point, and every QAT artifact ends within 0.3 points of float (mean of the seeds)."""

    def drops(method: str) -> list[float]:
        return [
            table[f"{method}_per_{kind}/{fmt}"]["drop_mean_points"]
            for kind in ("channel", "tensor")
            for fmt in ("tflite", "onnx")
        ]

    return {
        "some_ptq_loses_at_least_1_point_mean": max(drops("ptq")) >= 1.0,
        "qat_within_0.3_points_of_float_mean_every_qat_artifact": all(drop <= 0.3 for drop in drops("qat")),
    }


def checks(models: dict) -> dict:
    """The issue's verdicts, per model: PTQ loses ≥ 1 point, QAT within 0.3 of float, agreement, integer-only."""
    verdicts = {}
    for spec, entry in models.items():
        rows = [row for run in entry["seeds"] for row in run["rows"] if row["variant"].startswith("qat")]
        verdicts[spec] = {
            **top1_verdicts(entry["summary"]),
            "qat_artifacts_agree_with_qat_keras_99_percent_min": min(r["agreement_with_qat_keras"] for r in rows),
            # LiteRT's XNNPACK and built-in kernels on the same INT8 TFLite: the engine's own top-1 consistency
            "int8_tflite_xnnpack_vs_builtin_same_top1_min": min(
                (
                    row["xnnpack_vs_builtin_kernels_same_top1"]
                    for run in entry["seeds"]
                    for row in run["rows"]
                    if row.get("xnnpack_vs_builtin_kernels_same_top1") is not None
                ),
                default=None,
            ),  # None where the results predate the column
            "qat_tflite_integer_only": all(r["float_ops"] == 0 for r in rows if r["format"] == "tflite"),
        }
    return verdicts


RESCORE_PATCH_SEED = 2  # the rescore cut's patch seed: not the training split's (0) nor the test cut's (1)


def rescore(models: dict, test: Path) -> dict:
    """Top-1 of every artifact of every seed in ``models`` on ``test``, through ``edgecls.runtime``; the files are
    where ``run_seed`` wrote them (``fp32/model_fp32.*``, ``<variant>/model_int8.*`` beside the float model)."""
    from edgecls.evaluate import evaluation_images, model_info, predict_scores

    section: dict = {}
    for spec, entry in models.items():
        seeds = []
        for run in entry["seeds"]:
            folder = (ROOT / run["model_path"]).parent
            files = {f"float/{fmt}": folder / "fp32" / f"model_fp32.{fmt}" for fmt in ("tflite", "onnx")}
            files.update(
                {f"{v}/{fmt}": folder / v / f"model_int8.{fmt}" for v in VARIANTS for fmt in ("tflite", "onnx")}
            )
            missing = [str(path) for path in files.values() if not path.is_file()]
            if missing:
                raise SystemExit(f"seed {run['seed']}: artifacts gone ({', '.join(missing[:3])}); rerun that seed")
            images = evaluation_images(model_info(files["float/tflite"]), str(test)).images
            top1, predictions = {}, {}
            for key, path in files.items():
                predictions[key] = predict_scores(path, images.images, threads=2).argmax(axis=1)
                top1[key] = round(float(np.mean(predictions[key] == images.labels)), 4)
                log.info("rescore %s seed %d %s: %.4f", spec, run["seed"], key, top1[key])
            same = {  # the two formats of one variant, image by image
                variant: round(float(np.mean(predictions[f"{variant}/onnx"] == predictions[f"{variant}/tflite"])), 4)
                for variant in ("float", *VARIANTS)
            }
            seeds.append(
                {
                    "seed": run["seed"],
                    "n_images": int(len(images.labels)),
                    "top1": top1,
                    "onnx_same_top1_as_tflite": same,
                }
            )
        means = {key: float(np.mean([100.0 * run["top1"][key] for run in seeds])) for key in seeds[0]["top1"]}
        drops = {key: round(means[f"float/{key.split('/')[1]}"] - mean, 2) for key, mean in means.items()}
        summary = {key: {"top1_mean": round(mean, 2), "drop_mean_points": drops[key]} for key, mean in means.items()}
        section[spec] = {"seeds": seeds, "summary": summary, "checks": top1_verdicts(summary)}
    return section


def main(argv=None) -> int:
    from edgecls.runtime.device import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnetb0", help="name or name@alpha, comma-separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--control", action="store_true", help="also the float model fine-tuned like QAT")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--reuse-ptq",
        type=Path,
        default=None,
        help="take the float and PTQ rows of each seed from this earlier results file (same float models); "
        "train and measure QAT only",
    )
    parser.add_argument(
        "--rescore",
        type=int,
        metavar="PER_CLASS",
        default=None,
        help="score the artifacts --out describes on a larger held-out cut (PER_CLASS patches per class) and add a "
        "'rescore' section to --out; nothing is trained",
    )
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="score the artifacts --out describes again on the benchmark's own test cut through the current "
        "edgecls.runtime and add a 'recheck' section to --out (with a bound on each QAT ONNX's agreement with its QAT "
        "Keras model: its agreement with the TFLite twin plus the TFLite's with the Keras model, less 1); nothing is "
        "trained",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.time()
    if args.recheck:
        from edgecls.base.fileio import write_json

        document = json.loads(args.out.read_text())
        _, test, _ = photo_data(args.work)
        section = rescore(document["models"], test)
        for spec, entry in section.items():
            runs = {run["seed"]: run for run in document["models"][spec]["seeds"]}
            bounds = []
            for seed in entry["seeds"]:
                rows = {(row["variant"], row["format"]): row for row in runs[seed["seed"]]["rows"]}
                seed["qat_onnx_agrees_with_qat_keras_at_least"] = {
                    variant: round(
                        seed["onnx_same_top1_as_tflite"][variant]
                        + rows[(variant, "tflite")]["agreement_with_qat_keras"]
                        - 1.0,
                        4,
                    )
                    for variant in VARIANTS
                    if variant.startswith("qat")
                }
                bounds += list(seed["qat_onnx_agrees_with_qat_keras_at_least"].values())
            entry["checks"]["qat_onnx_agrees_with_qat_keras_at_least_min"] = min(bounds)
        document["recheck"] = {
            "test": "the benchmark's own test cut (the same 1,000 images), the same artifact files, through the "
            "edgecls.runtime of this commit (the seeds' rows were measured by the runtime of their run)",
            "models": section,
            "seconds": round(time.time() - started, 1),
        }
        write_json(args.out, document)
        print(json.dumps({spec: entry["checks"] for spec, entry in section.items()}, indent=1))
        return 0
    if args.rescore is not None:
        from edgecls.base.fileio import write_json

        document = json.loads(args.out.read_text())
        test = held_out_cut(
            args.work / "data" / f"photos10-test-{args.rescore}", per_class=args.rescore, seed=RESCORE_PATCH_SEED
        )
        document["rescore"] = {
            "test": f"{args.rescore} patches per class from the right 30 % of each photo, patch seed "
            f"{RESCORE_PATCH_SEED} (the test cut's is 1: a few patches may coincide); the same artifact files",
            "models": rescore(document["models"], test),
            "seconds": round(time.time() - started, 1),
        }
        write_json(args.out, document)
        print(json.dumps({spec: entry["summary"] for spec, entry in document["rescore"]["models"].items()}, indent=1))
        return 0
    data, test, calib = photo_data(args.work)
    models = json.loads(args.out.read_text()).get("models", {}) if args.out.exists() else {}
    for spec in args.models.split(","):
        done = {run["seed"]: run for run in models.get(spec, {}).get("seeds", [])}
        for seed in (int(s) for s in args.seeds.split(",")):
            if seed not in done:
                log.info("%s seed %d", spec, seed)
                done[seed] = run_seed(spec, seed, args, data, test, calib, args.work)
                seeds = [done[s] for s in sorted(done)]
                models[spec] = {"seeds": seeds, "summary": summary(seeds)}
                write(args, models, started, machine_info())
    write(args, models, started, machine_info())
    print(json.dumps({spec: entry["summary"] for spec, entry in models.items()}, indent=1))
    return 0


def write(args, models: dict, started: float, machine) -> None:
    from edgecls.base.fileio import write_json

    document = {
        "benchmark": "quantize --qat (issue 27)",
        "protocol": __doc__.split("Protocol:")[1].split("Run:")[0].strip(),
        "data": "photos10: 150 train + 60 val patches per class (left 70 % of each photo); test: 100 patches per class "
        "(right 30 %, another patch seed), 64 px",
        "float_training": "edgecls train's defaults (from scratch, 64 px)",
        "qat_epochs": QAT_EPOCHS,
        "qat_lr": QAT_LR,
        "where": f"{machine.arch} host ({platform.processor() or machine.system}, {machine.cpu_count} cores shared "
        "with other jobs), latency through edgecls.runtime, 1 thread; not a device",
        "models": models,
        "checks": checks({spec: entry for spec, entry in models.items() if entry.get("seeds")}),
        "seconds": round(time.time() - started, 1),
    }
    write_json(args.out, document)


if __name__ == "__main__":
    sys.exit(main())
