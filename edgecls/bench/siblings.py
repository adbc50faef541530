"""An INT8 artifact slower than its float sibling on the target: flagged, since a user picks INT8 to be faster.

INT8 is not faster by construction: on an x86 host an INT8 MobileNetV3-Small TFLite ran at 0.47 ms against its
FP32's 0.29 ms under XNNPACK, and ONNX Runtime's INT8 kernels depend on the CPU. A *sibling* is a float (FP32 or
FP16) artifact of the same format made from the same model: both record the source model's digest in their
metadata (``source_digest``, written by ``edgecls export`` and ``edgecls quantize``), or the INT8 one was quantized
from the float file itself; artifacts without that record are siblings when labels, input size and channels agree.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from edgecls.base.errors import EdgeclsError
from edgecls.base.fileio import file_digest
from edgecls.runtime.metadata import ModelInfo, read_model_info
from edgecls.runtime.results import MeasureResult, MeasureRun

log = logging.getLogger(__name__)

FLOAT_PRECISIONS = ("fp32", "fp16")
NOTE_PREFIX = "INT8 slower than its float sibling"


@dataclasses.dataclass(frozen=True)
class SlowerInt8:
    model: str
    sibling: str
    int8_p50_ms: float
    float_p50_ms: float

    @property
    def note(self) -> str:
        return (
            f"{NOTE_PREFIX} {Path(self.sibling).name} here ({self.int8_p50_ms:.3f} vs {self.float_p50_ms:.3f} ms p50): "
            "deploy the float one on this target"
        )


def slower_int8(results: list[MeasureResult]) -> list[SlowerInt8]:
    """Each INT8 result whose p50 is above its fastest float sibling's (emulated latencies are not compared)."""
    timed = [result for result in results if result.samples_ms and not result.emulated]
    return slower_than_siblings([(result.model, result.precision, result.latency_ms.p50) for result in timed])


def slower_than_siblings(measured: list[tuple[str, str, float]]) -> list[SlowerInt8]:
    """The same over (model path, precision, p50 ms) entries measured on one target (the pipeline's rows)."""
    infos = {model: _info(model) for model, _, _ in measured}
    found = []
    for model, precision, p50 in measured:
        if precision != "int8":
            continue
        siblings = [
            (other, other_p50)
            for other, other_precision, other_p50 in measured
            if other_precision in FLOAT_PRECISIONS
            and Path(other).suffix == Path(model).suffix
            and _siblings(model, infos[model], other, infos[other])
        ]
        if not siblings:
            continue
        fastest, fastest_p50 = min(siblings, key=lambda sibling: sibling[1])
        if p50 > fastest_p50:
            found.append(SlowerInt8(model, fastest, p50, fastest_p50))
    return found


def flag_slower_int8(run: MeasureRun) -> MeasureRun:
    """``run`` with the flag in the notes of each INT8 result slower than its float sibling (tables, JSON)."""
    flagged = {item.model: item for item in slower_int8(run.results)}
    if not flagged:
        return run
    for item in flagged.values():
        log.warning("%s: %s", Path(item.model).name, item.note)
    results = [
        dataclasses.replace(result, notes=[*result.notes, flagged[result.model].note])
        if result.model in flagged
        else result
        for result in run.results
    ]
    return dataclasses.replace(run, results=results)


def _info(path: str) -> ModelInfo | None:
    try:
        return read_model_info(path)
    except (EdgeclsError, OSError):
        return None


def _siblings(int8_path: str, int8: ModelInfo | None, float_path: str, other: ModelInfo | None) -> bool:
    if int8 is None or other is None:
        return False
    source = int8.provenance.get("source_digest")
    if source and other.provenance.get("source_digest"):
        return bool(source == other.provenance["source_digest"])
    if source and Path(float_path).is_file() and source == file_digest(float_path):  # quantized from this file
        return True
    if source or other.provenance.get("source_digest"):  # one knows its source, the other does not: not provable
        return False
    return (int8.labels, int8.input_size, int8.channels) == (other.labels, other.input_size, other.channels)
