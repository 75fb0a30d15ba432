"""Training that watches itself: one place decides what a run does when it goes wrong.

The Trainer (train.py) reports two kinds of trouble and one kind of news:

* a non-finite loss or weight: restore the latest checkpoint with both learning rates halved,
  at most `nan_retries` times in all, else stop (exit code 1);
* FID worse than the best FID by more than `fid_guard_factor` for `fid_guard_patience`
  evaluations in a row (divergence, collapse): per `fid_guard`, only warn (the default, so that
  a reproduction is never changed silently), stop, or roll back to the best checkpoint with both
  learning rates halved, at most `fid_guard_retries` times, then stop;
* no new best FID for `early_stop_patience` evaluations (0: never): finish cleanly.

Every decision is an Event, which the Trainer carries out, prints and records in
RUN/events.jsonl (the run report shows them). The counters live in the checkpoint, so a resumed
run goes on counting where it stopped.
"""
import dataclasses

import tensorflow as tf

# The counters a checkpoint holds, in the order of Guard.counters().
COUNTERS = ('nan_restores', 'fid_rollbacks', 'bad_evaluations', 'evaluations_since_best')


@tf.function
def _all_finite(values):
    """Whether every value of the list `values` is finite: one compiled reduction, one host
    read for a whole network (traced once per network's list of weights)."""
    return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(value)) for value in values]))


def non_finite_names(named_values):
    """Names in {name: tensor or variable} whose value holds a NaN or an infinity; non-float
    values (counters, seeds) are skipped. Finite, the usual case, costs one compiled reduction;
    only then is each value read on its own, to name the bad ones."""
    floats = {name: value for name, value in named_values.items()
              if tf.as_dtype(value.dtype).is_floating}
    if not floats or bool(_all_finite(list(floats.values()))):
        return []
    return [name for name, value in floats.items()
            if not bool(tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(value))))]


@dataclasses.dataclass
class Event:
    """What to do: 'continue', 'warn', 'restore' (checkpoint 'latest' or 'best', learning rates
    halved once more), 'stop' (exit code 1) or 'finish' (done, exit code 0)."""
    action: str
    message: str = ''
    checkpoint: str = ''


class Guard:
    """The decisions of one run, from its config and its counters."""

    def __init__(self, conf):
        self.conf = conf
        self.nan_restores = 0            # restores after a non-finite value
        self.fid_rollbacks = 0           # rollbacks after a diverging FID
        self.bad_evaluations = 0         # FIDs in a row worse than fid_guard_factor x best
        self.evaluations_since_best = 0  # FIDs since the last new best

    def counters(self):
        return [getattr(self, name) for name in COUNTERS]

    def set_counters(self, values):
        for name, value in zip(COUNTERS, values):
            setattr(self, name, int(value))

    @property
    def lr_halvings(self):
        """How many times both learning rates have been halved, by either kind of restore."""
        return self.nan_restores + self.fid_rollbacks

    def after_non_finite(self, what, last_good, may_restore=True):
        """Non-finite values after a step: restore `last_good` (the latest checkpoint), or stop."""
        if not may_restore or last_good is None or self.nan_restores >= self.conf.nan_retries:
            tried = (f' after {self.nan_restores} restore(s) at halved learning rates'
                     if self.nan_restores else '')
            where = (f'the last good checkpoint is {last_good}' if last_good
                     else 'no checkpoint was saved before it')
            return Event('stop', f'Training diverged: {what}{tried}; {where}; start a new '
                                 '--model_dir with lower g_lr and d_lr, or with --set '
                                 'nan_retries=N to restore and halve them automatically.')
        self.nan_restores += 1
        return Event('restore', f'{what}: restored {last_good} with the learning rates halved '
                                f'(restore {self.nan_restores} of at most '
                                f'{self.conf.nan_retries})', checkpoint='latest')

    def after_evaluation(self, fid, best_fid, where):
        """An FID at `where` ('step N (M images)') against the best before it."""
        conf = self.conf
        if fid < best_fid:
            self.bad_evaluations = self.evaluations_since_best = 0
            return Event('continue')
        self.evaluations_since_best += 1
        diverging = fid > conf.fid_guard_factor * best_fid
        self.bad_evaluations = self.bad_evaluations + 1 if diverging else 0
        finish = (Event('finish', f'Early stop: no better FID than {best_fid:.2f} in the '
                                  f'{self.evaluations_since_best} evaluations up to {where} '
                                  f'(early_stop_patience={conf.early_stop_patience})')
                  if conf.early_stop_patience
                  and self.evaluations_since_best >= conf.early_stop_patience else None)
        if conf.fid_guard == 'off' or self.bad_evaluations < conf.fid_guard_patience:
            return finish or Event('continue')
        what = (f'FID {fid:.2f} at {where} is worse than {conf.fid_guard_factor:g} x the best '
                f'FID {best_fid:.2f}, {self.bad_evaluations} evaluation(s) in a row')
        if conf.fid_guard == 'warn':  # only a warning: early stopping still ends the run
            warning = f'{what}: the run may be diverging (fid_guard=warn: training goes on)'
            return (Event('finish', f'{warning}. {finish.message}') if finish
                    else Event('warn', warning))
        if conf.fid_guard == 'rollback' and self.fid_rollbacks < conf.fid_guard_retries:
            self.fid_rollbacks += 1
            self.bad_evaluations = self.evaluations_since_best = 0  # back at the best
            return Event('restore', f'{what}: rolled back to the best checkpoint with the '
                                    f'learning rates halved (rollback {self.fid_rollbacks} of '
                                    f'at most {conf.fid_guard_retries})', checkpoint='best')
        tried = (f' after {self.fid_rollbacks} rollback(s)' if self.fid_rollbacks else '')
        return Event('stop', f'Training diverged: {what}{tried}; the best checkpoint is kept; '
                             'resume with lower g_lr and d_lr in a new --model_dir, or with '
                             '--set fid_guard=rollback.')
