"""One worker of a two-worker float16 run with three faults: train.py's main, with its
TF_CONFIG, where

- worker 1's scaled D gradients are made infinite whenever D's loss scale has counted two
  applied updates in a row (an overflow on that worker alone; the other's gradients stay as
  they are), and
- the chief (worker 0) comes late to the stop check before step --behind_at: it sleeps
  --collective_timeout + 5 s first, while worker 1 waits in that host agreement (untimed);
- then worker 1 falls behind before that step: it sleeps --collective_timeout + 5 s before
  starting it, while the other worker waits in that step's collectives.

Each worker prints, for each update, whether its own gradients overflowed: lines 'overflowed
d_loss_scale 0|1' and 'overflowed g_loss_scale 0|1', in order; and a line before each sleep.

    TF_CONFIG=... python3 tests/scripts/overflow_on_one_worker.py --behind_at N TRAIN_ARGS..."""
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import gan  # noqa: E402
import train  # noqa: E402
import trainer  # noqa: E402

FAULTY_WORKER = 1
worker = json.loads(os.environ['TF_CONFIG'])['task']['index']
apply_unchanged, train_step_unchanged = gan.DynamicLossScale.apply, gan.LadaGAN.train_step
stop_agreed_unchanged = trainer.Trainer._stop_agreed


def apply_with_an_overflow_on_one_worker(self, optimizer, scaled_grads, variables):
    """Worker 1's first D gradient infinite after two applied updates in a row (a replica-context
    condition, traced into the step); then the scaler decides as it does."""
    if self.name == 'd_loss_scale' and worker == FAULTY_WORKER:
        first = scaled_grads[0]
        scaled_grads = [tf.where(tf.equal(self.finite_steps, 2),
                                 tf.cast(float('inf'), first.dtype), first)] + scaled_grads[1:]
    tf.print('overflowed', self.name,
             tf.cast(tf.logical_not(gan._all_finite(scaled_grads)), tf.int32),
             output_stream=sys.stdout)
    return apply_unchanged(self, optimizer, list(scaled_grads), variables)


def main(argv):
    behind_at = int(argv[argv.index('--behind_at') + 1])
    del argv[argv.index('--behind_at'):argv.index('--behind_at') + 2]
    timeout = float(argv[argv.index('--collective_timeout') + 1])
    steps = []

    def stop_agreed_late_on_the_chief(self):
        if worker == 0 and self.step == behind_at - 1:  # the check before step behind_at
            print(f'late to the stop check before step {behind_at}', flush=True)
            time.sleep(timeout + 5)
        return stop_agreed_unchanged(self)

    def train_step_behind_on_one_worker(self, *args, **kwargs):
        steps.append(len(steps) + 1)
        if worker == FAULTY_WORKER and steps[-1] == behind_at:
            print(f'behind before step {behind_at}', flush=True)
            time.sleep(timeout + 5)
        return train_step_unchanged(self, *args, **kwargs)

    gan.DynamicLossScale.apply = apply_with_an_overflow_on_one_worker
    trainer.Trainer._stop_agreed = stop_agreed_late_on_the_chief
    gan.LadaGAN.train_step = train_step_behind_on_one_worker
    return train.main(argv)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
