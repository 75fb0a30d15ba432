"""Broadcast every step below 2^20 from one worker through distribute.py's all-reduce, on
MirroredStrategy over six and over seven logical CPU devices (the replicas one worker of a
multi-worker run would have), and the old way (each replica sending step / devices, in float32)
through the same all-reduce. Run as its own process: logical devices must be set before
TensorFlow initialises.

    python3 tests/scripts/exact_broadcast.py

Prints one JSON line {devices: {"exact": steps that came back changed, "divided": the same for
the old way}}."""
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 7)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import distribute  # noqa: E402

STEPS = np.arange(2 ** 20, dtype=np.float64)
report = {}
for devices in (6, 7):
    strategy = tf.distribute.MirroredStrategy([f'/cpu:{i}' for i in range(devices)])
    exact = distribute._sum_over_workers(strategy, STEPS)
    # The old way: every replica sends its share in float32, through the same reduction.
    share = tf.constant((STEPS / devices).astype(np.float32))
    shares = strategy.experimental_distribute_values_from_function(lambda context: share)
    divided = strategy.reduce(tf.distribute.ReduceOp.SUM, shares, axis=None).numpy()
    report[devices] = {'exact': int(np.sum(exact != STEPS)),
                       'divided': int(np.sum(divided != STEPS.astype(np.float32)))}
print(json.dumps(report))
