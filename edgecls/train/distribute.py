"""More than one GPU or machine: the ``tf.distribute`` strategy of a training run, and who writes its folder.

One machine trains under ``MirroredStrategy`` over its GPUs (the default
strategy with one or none). When ``TF_CONFIG`` names a cluster of two or more
workers, every worker runs the same ``edgecls train`` under
``MultiWorkerMirroredStrategy``: the input is sharded across the workers by
``tf.data``'s auto-sharding, the global batch is ``--batch-size`` x the number
of replicas (the learning rate is *not* scaled; ``config.json`` says so), and
gradients are all-reduced every step, so every worker ends on the same weights.

Only the chief (the ``chief`` task, or worker 0 when the cluster has none)
writes the run folder. Every other worker writes the same files to its own
scratch folder (``worker_run_dir``: a fixed name under the temporary folder, so
a worker restarted with ``--resume`` finds its own ``BackupAndRestore``
checkpoint there) and deletes it when the run completes.

``MultiWorkerMirroredStrategy`` must exist before TensorFlow runs anything
(listing devices included): ``train`` calls ``strategy()`` first.

>>> import os, json
>>> os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["a:2222", "b:2222"]},
...                                       "task": {"type": "worker", "index": 1}})
>>> cluster_from_env()  # doctest: +SKIP
Cluster(task_type='worker', task_index=1, num_workers=2)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError

log = logging.getLogger(__name__)

_strategy: Any = None  # one per process: TensorFlow cannot reconfigure its collectives afterwards


@dataclass(frozen=True)
class Cluster:
    """This process's place in a ``TF_CONFIG`` cluster."""

    task_type: str  # chief | worker
    task_index: int
    num_workers: int  # chief included
    has_chief: bool = False  # the cluster names a chief task (else worker 0 is the chief)

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or (self.task_index == 0 and not self.has_chief)


def cluster_from_env(environ: Mapping[str, str] = os.environ) -> Cluster | None:
    """The cluster ``TF_CONFIG`` names, or None (unset, or a cluster of one)."""
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        config = json.loads(raw)
        cluster, task = config.get("cluster") or {}, config.get("task") or {}
        task_type, task_index = str(task["type"]), int(task.get("index", 0))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(
            f"TF_CONFIG is not a cluster description ({error}); expected "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
        ) from None
    if task_type not in ("chief", "worker"):
        raise ConfigError(f"TF_CONFIG task type {task_type!r}: edgecls train runs as a chief or a worker")
    members = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    listed = len(cluster.get(task_type, []))
    if task_index >= listed:
        raise ConfigError(f"TF_CONFIG task {task_type} {task_index}: the cluster lists {listed} {task_type}(s)")
    if members < 2:
        return None
    return Cluster(task_type, task_index, members, has_chief=bool(cluster.get("chief")))


def strategy():
    """The process's strategy, created once: ``MultiWorkerMirroredStrategy`` for a ``TF_CONFIG``
    cluster, ``MirroredStrategy`` over two or more GPUs, else the default strategy."""
    global _strategy
    if _strategy is not None:
        return _strategy
    import tensorflow as tf

    cluster = cluster_from_env()
    if cluster is not None:
        log.info(
            "TF_CONFIG: %s %d of a %d-worker cluster (%s); MultiWorkerMirroredStrategy",
            cluster.task_type,
            cluster.task_index,
            cluster.num_workers,
            "the chief: writes the run folder" if cluster.is_chief else "writes a scratch folder only",
        )
        _strategy = _reduce_leaf_by_leaf(tf.distribute.MultiWorkerMirroredStrategy())
    elif len(tf.config.list_logical_devices("GPU")) > 1:
        _strategy = tf.distribute.MirroredStrategy()
    else:
        _strategy = tf.distribute.get_strategy()
    return _strategy


def _reduce_leaf_by_leaf(strategy):
    """Let Keras 3's ``fit`` run under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585, open).

    Keras 3.15 hands ``strategy.reduce`` a nested (x, y) batch before training and
    ``axis=0`` for the scalar logs of every step; the multi-worker strategy reduces
    one value, and a scalar has no axis 0. Reduce each value alone, a scalar over
    replicas only: the same all-reduce, which is what Keras meant.
    """
    import tensorflow as tf

    reduce_one = strategy.reduce

    def rank(value) -> int | None:
        if isinstance(value, tf.distribute.DistributedValues):
            value = strategy.experimental_local_results(value)[0]
        return getattr(getattr(value, "shape", None), "rank", None)

    def reduce(reduce_op, value, axis=None):
        return tf.nest.map_structure(
            lambda leaf: reduce_one(reduce_op, leaf, axis=None if rank(leaf) == 0 else axis), value
        )

    strategy.reduce = reduce
    return strategy


def average_across_workers(model) -> None:
    """Give every worker the mean of its non-trainable weights (BatchNorm's moving statistics).

    Gradients are all-reduced, so the trainable weights agree on every worker; a
    BatchNorm layer's moving mean and variance are updated from each worker's
    own shard and drift apart. Averaged once at the end (a collective: every
    worker calls this), the workers hold identical models, with the statistics
    of the whole data set. Nothing happens outside a multi-worker cluster.
    """
    import tensorflow as tf

    chosen = getattr(model, "distribute_strategy", None)
    if not isinstance(chosen, tf.distribute.MultiWorkerMirroredStrategy):
        return
    for variable in model.non_trainable_variables:
        if "float" in str(variable.dtype):
            variable.assign(chosen.reduce("MEAN", tf.convert_to_tensor(variable.value), axis=None))


def worker_run_dir(run_dir: Path, cluster: Cluster | None) -> Path:
    """Where this process writes: ``run_dir`` on the chief (and alone), a scratch folder on other workers."""
    if cluster is None or cluster.is_chief:
        return run_dir
    tag = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"edgecls-{cluster.task_type}{cluster.task_index}-{tag}"


def finish_worker(run_dir: Path, cluster: Cluster | None) -> None:
    """A non-chief worker's scratch folder goes when its run completes."""
    if cluster is not None and not cluster.is_chief:
        shutil.rmtree(run_dir, ignore_errors=True)
        log.info(
            "worker %d: run complete; the chief holds the run folder, scratch %s removed", cluster.task_index, run_dir
        )


def describe(chosen, cluster: Cluster | None, batch_size: int) -> dict[str, Any]:
    """What ``config.json`` records about the distribution of a run."""
    replicas = int(chosen.num_replicas_in_sync)
    return {
        "strategy": type(chosen).__name__,
        "workers": cluster.num_workers if cluster else 1,
        "task": f"{cluster.task_type} {cluster.task_index}" if cluster else "alone",
        "replicas": replicas,
        "batch_size_per_replica": batch_size,
        "global_batch_size": batch_size * replicas,
        "learning_rate_scaled": False,  # --lr is used as given for the global batch
    }
