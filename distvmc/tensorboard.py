"""TensorBoard scalars of the optimization (``output.tensorboard: true``; rank 0 only).

Written with ``tf.summary.write`` and the scalar plugin's metadata, which is
what ``tf.summary.scalar`` writes, so the ``tensorboard`` package is needed
only to look at them (``tensorboard --logdir RUN_DIR/tensorboard``), not to
write them. Tags (step = iterations done before the iteration):

    energy/mean, energy/error, energy/variance, energy/tau
    sampler/acceptance, sampler/step
    optimizer/lr, optimizer/update_norm, optimizer/sr_shift (SR only)
    time/iteration, time/sample, time/eloc, time/optimizer, time/jacobian,
    time/overlap, time/allreduce, time/solve           (seconds)
    recovery/rewinds                                   (at each rewind)
"""

from __future__ import annotations

import math
import os

TAGS = {
    "energy": "energy/mean", "energy_err": "energy/error", "variance": "energy/variance",
    "tau": "energy/tau", "acceptance": "sampler/acceptance", "step": "sampler/step",
    "lr": "optimizer/lr", "update_norm": "optimizer/update_norm",
    "seconds": "time/iteration", "t_sample": "time/sample", "t_eloc": "time/eloc",
    "t_optimizer": "time/optimizer", "t_jacobian": "time/jacobian",
    "t_overlap": "time/overlap", "t_allreduce": "time/allreduce", "t_solve": "time/solve",
}


class Scalars:
    """A TensorBoard event file in ``logdir``; :meth:`write` one history record at a time."""

    def __init__(self, logdir: str):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        os.makedirs(logdir, exist_ok=True)
        self._tf = tf
        self.logdir = logdir
        self._writer = tf.summary.create_file_writer(logdir, flush_millis=10_000)
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=summary_pb2.DATA_CLASS_SCALAR)

    def scalar(self, tag: str, value, step: int) -> None:
        try:
            v = float(value)
        except (TypeError, ValueError):
            return
        if not math.isfinite(v):
            return
        tf = self._tf
        with self._writer.as_default():
            tf.summary.write(tag, tf.constant(v, tf.float32), step=step, metadata=self._metadata)

    def write(self, rec: dict, shift: float | None = None, rewinds: int = 0) -> None:
        """The scalars of one history record (``rec['iteration']`` is the step)."""
        step = int(rec["iteration"])
        if "rewind" in rec:
            self.scalar("recovery/rewinds", rewinds, step)
            return
        for key, tag in TAGS.items():
            if key in rec:
                self.scalar(tag, rec[key], step)
        if shift is not None:
            self.scalar("optimizer/sr_shift", shift, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()
