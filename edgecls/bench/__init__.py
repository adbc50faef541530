"""``edgecls bench``, the workstation side: measure artifacts here or on the device, compare them, write reports.

Named parts: ``config`` (``BenchConfig``, ``BenchReport``, a fleet's devices), ``run``
(``bench``: the target, here or over SSH, the reports), ``evalset`` (the held-out images that ``--data`` scores)
``report`` (table, Markdown, JSON, latency plot) and ``fleet`` (several devices
at once, one table). The measuring loop itself
is the runtime's, ``edgecls.runtime.measure``, the same code here and on the device.

>>> from edgecls.bench import BenchConfig, bench  # doctest: +SKIP
>>> report = bench(BenchConfig(models=("m_int8.tflite", "m_fp32.onnx"), target="rpi5", data="digits"))  # doctest: +SKIP
>>> report.run.results[0].where  # doctest: +SKIP
'x86_64 host with rpi5 settings'
"""

from edgecls.bench.config import BenchConfig, BenchReport, DeviceOutcome, FleetDevice
from edgecls.bench.evalset import prepare_eval_set
from edgecls.bench.fleet import FleetReport, bench_fleet, load_fleet, parse_remotes
from edgecls.bench.run import bench

__all__ = [
    "BenchConfig",
    "BenchReport",
    "DeviceOutcome",
    "FleetDevice",
    "FleetReport",
    "bench",
    "bench_fleet",
    "load_fleet",
    "parse_remotes",
    "prepare_eval_set",
]
