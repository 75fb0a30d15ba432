"""train.py's main in a process whose CPU is split into two logical devices, so that
`--strategy mirrored` trains on two replicas: the per-replica data path, mirrored variables and
the Trainer with them. Logical devices must be set before TensorFlow initialises, so this runs
as a process of its own (SIGKILL it as a user's run would be killed).

    python3 tests/scripts/two_devices.py TRAIN_ARGS... [--then TRAIN_ARGS...]

Each group of arguments is one train.main call, in order, in this process (the second saves a
process start); the exit code is the first non-zero one, or 0."""
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import train  # noqa: E402


def main(argv):
    groups, group = [], []
    for word in argv:
        if word == '--then':
            groups.append(group)
            group = []
        else:
            group.append(word)
    for args in groups + [group]:
        code = train.main(args)
        if code:
            return code
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
