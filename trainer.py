"""The training loop: `Trainer` runs one run's steps and what it does between them.

train.py builds a Trainer from the command line; this file is the loop itself: steps, logging,
when to save and evaluate, the guard's decisions carried out (guard.py decides), resuming from
the run's checkpoints (checkpoints.RunCheckpoints) and stopping on a signal, together with the
other workers of a multi-worker run.
"""
import os
import signal
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import checkpoints
import distribute
import gan
import guard as guard_lib
import model as model_lib
import outputs

# The version of the data order kept in checkpoints (batches.DataOrder); version 1 drew one
# permutation of the whole set per epoch, version 0 an order that was not a function of the step.
DATA_ORDER = 2
# On several workers, whether any of them was signalled to stop is agreed at the first step of
# a command and then every STOP_CHECK_STEPS steps, the same steps on every worker: a signal
# stops all of them at most this many steps later, after the same step. Agreeing is a
# collective whose result the host reads, so it waits for every step queued before it
# (docs/distributed.md).
STOP_CHECK_STEPS = 10


class TrainingDivergedError(RuntimeError):
    """A non-finite loss or weight during training; the CLI reports it and exits with code 1."""


def run_state():
    """The run's own counters, checkpointed beside the networks and optimizers."""
    return dict(
        fid=tf.Variable(float('nan'), name='fid'),
        best_fid=tf.Variable(float('inf'), name='best_fid'),
        # Wall-clock seconds spent in training steps (not in FID, saves or plots), across
        # resumes: what time-to-FID is measured in.
        train_seconds=tf.Variable(0.0, dtype=tf.float64, name='train_seconds'),
        # Images seen at the save made for an evaluation (written before it), and at the last
        # evaluation whose outcome is counted: unequal, it did not finish.
        evaluating=tf.Variable(0, dtype=tf.int64, name='evaluating'),
        evaluated=tf.Variable(0, dtype=tf.int64, name='evaluated'),
        # The data order the run draws its images in (batches.DataOrder: version 2, a function
        # of the step); 0 in a checkpoint written before it existed.
        data_order=tf.Variable(0, dtype=tf.int64, name='data_order'),
        **{f'guard_{name}': tf.Variable(0, dtype=tf.int64, name=f'guard_{name}')
           for name in guard_lib.COUNTERS})


class Trainer:
    """One run's training loop and what it keeps between steps: the GAN, the metric log, the
    schedule and the training clock. Three pieces it drives live elsewhere, by name: the
    checkpoints and which one to resume or restore (checkpoints.RunCheckpoints), the decisions
    on NaNs and FID (guard.Guard, carried out here), and what an evaluation produces (the FID
    of fid.training_evaluator; the pictures and the report of outputs.write_pictures)."""

    def __init__(self, conf, model_dir, options, strategy, init=None, class_counts=None):
        self.conf, self.model_dir, self.options, self.strategy = conf, model_dir, options, strategy
        self.chief = distribute.is_chief(strategy)
        self.write_dir = model_dir if self.chief else os.path.join(
            model_dir, f'.worker-{strategy.cluster_resolver.task_id}')
        self.batch = conf.batch_size
        self.ckpts = checkpoints.RunCheckpoints(model_dir, self.write_dir)
        # A network the checkpoint to resume (or --init_from) holds starts from it: no initial
        # values to draw. (Old runs' checkpoints hold G only through G's optimizer.)
        self.stored_names = stored = self.ckpts.stored_names()
        init = None if self.ckpts.resume_from else init
        if init:
            stored = checkpoints.NETWORKS
            if conf.num_classes and not any(map(checkpoints.is_class_weight, init['generator'])):
                stored = ()  # from a run without classes: its class embeddings start random
        with strategy.scope():
            generator = model_lib.build_generator(conf, initialize='generator' not in stored)
            discriminator = model_lib.build_discriminator(
                conf, initialize='discriminator' not in stored)
            state = run_state()
        self.state = state
        print(f'G: {model_lib.count_params(generator):,} parameters, '
              f'D: {model_lib.count_params(discriminator):,}; '
              f'{strategy.num_replicas_in_sync} replica(s)')
        # A conditional run draws the classes G makes as often as its training set holds them.
        self.gan = gan.LadaGAN(generator, discriminator, conf, strategy=strategy,
                               class_frequencies=class_counts)
        for name, values in (init or {}).items():  # optimizers, counters, RNG start fresh
            checkpoints.assign_weights(getattr(self.gan, name), values)
        step_mode = ('XLA (TPU)' if isinstance(strategy, tf.distribute.TPUStrategy) else
                     'XLA' if self.gan.xla else 'TensorFlow kernels, no XLA')
        print(f'train step: {step_mode} (jit={conf.jit})')
        self.checkpoint_objects = self.gan.checkpoint_objects(**state)
        self.ckpts.track(tf.train.Checkpoint(**self.checkpoint_objects),
                         options['max_ckpt_to_keep'])
        self.log = checkpoints.RunLog(self.write_dir)
        self.guard = guard_lib.Guard(conf)
        self.sample_noise = np.random.default_rng(conf.test_seed).standard_normal(
            [64, conf.noise_dim]).astype(np.float32)
        # A conditional run's grid: a row of 8 images per class (the first 8 classes).
        self.sample_labels = (np.arange(64) // 8 % conf.num_classes).astype(np.int32) if (
            conf.num_classes) else None
        self.fid_evaluator = None
        self.step = self.saved_step = 0
        self.stop_signal, self.stop_agreed = None, False  # this process's; any worker's
        self.finished = False  # early stop
        self.started = None  # when the command started (time.perf_counter), until its first batch
        self.bar = None
        self.data_iter = None  # the batches from self.step on (made in run)
        self.train_seconds = 0.0
        self.latest_r1 = None  # the R1 term of the last step that took it (lazy R1)
        self.clock = time.perf_counter()  # start of the training time not yet counted
        self.interval_images, self.interval_seconds = 0, 0.0  # since the last metrics log

    @property
    def n_images(self):
        return int(self.gan.n_images.numpy())

    def scalar(self, name):
        """A state variable's value (read through .numpy(): a MirroredVariable has no __float__)."""
        return float(self.state[name].numpy())

    # ------------------------------------------------------------------ resume
    def restore(self):
        """Continue from the newest complete checkpoint of the run folder, if any."""
        prefix = self.ckpts.resume_from
        if prefix:
            gan.restore_checkpoint(self.gan, self.checkpoint_objects, prefix)
            self.ckpts.last_good = prefix
        if prefix and self.ckpts.resume_is_best:
            newer = ' instead, as new or newer' if tf.train.latest_checkpoint(
                os.path.join(self.model_dir, checkpoints.LATEST_DIR)) else ''
            print(f'Resumed from {prefix}{newer}: {self.n_images:,} images seen, best FID '
                  f'{self.scalar("best_fid"):.3f}')
        elif prefix:
            print(f'Resumed from {prefix}: {self.n_images:,} images seen, last FID '
                  f'{self.scalar("fid"):.3f}, best FID {self.scalar("best_fid"):.3f}')
        self.step = self.saved_step = self.n_images // self.batch
        distribute.check_workers_resume_together(self.strategy, self.chief, self.step,
                                                 self.model_dir)
        stored_order = int(self.scalar('data_order')) if prefix else DATA_ORDER
        if stored_order == 0:
            print(f'notice: {prefix} was written before runs kept their data order: the run '
                  f'goes on from image {self.n_images:,} of the exact order, but its images '
                  'before it were drawn in another order')
        elif stored_order != DATA_ORDER:
            print(f'notice: {prefix} drew its images in data order version {stored_order} (one '
                  'permutation of the whole set per epoch): from image '
                  f'{self.n_images:,} on it draws them in version {DATA_ORDER}\'s (shuffled in '
                  'windows of chunks, docs/determinism.md), not as the uninterrupted run would '
                  'have')
        self.state['data_order'].assign(DATA_ORDER)
        self.train_seconds = self.scalar('train_seconds')
        self.guard.set_counters(self.state[f'guard_{name}'].numpy() for name in guard_lib.COUNTERS)
        # Checkpoints from before the guard hold only the halved learning rates of NaN restores.
        halvings = int(round(np.log2(self.conf.g_lr / float(np.asarray(
            self.gan.g_optimizer.learning_rate)))))
        self.guard.nan_restores += max(0, halvings - self.guard.lr_halvings)
        self.log.rewind(self.n_images)  # records after the checkpoint are of steps a kill undid

    def finish_pending_evaluation(self):
        """A kill during (or right after) an evaluation leaves the latest checkpoint, written
        before it, without its outcome: take the FID it logged, or evaluate again."""
        n_images = self.n_images
        if not (int(self.scalar('evaluating')) == n_images > int(self.scalar('evaluated'))):
            return
        logged = [record['fid'] for record in self.log.records
                  if record['n_images'] == n_images and 'fid' in record]
        # Every worker takes the chief's choice: an evaluation is collective.
        logged_fid = distribute.broadcast_from_chief(
            self.strategy, logged[-1] if logged else float('nan'), self.chief)
        if np.isfinite(logged_fid):  # the run went on after it: count its outcome again
            self.evaluate(n_images, logged_fid)
        else:
            print(f'The evaluation at {n_images:,} images did not finish before the run '
                  'stopped: evaluating again')
            self.evaluate(n_images)

    # ------------------------------------------------------------------ the loop
    def run(self, make_dataset):
        """Train until total_iter (None: until stopped), an early stop, or SIGINT/SIGTERM,
        which save first. make_dataset(step): the run's batches from its step `step` on."""
        options = self.options
        total_iter = options['total_iter'] or float('inf')
        fid_inter, ckpt_inter = options['fid_inter'], options['ckpt_inter']
        self.bar = tqdm(total=options['total_iter'] and options['total_iter'] * self.batch,
                        initial=self.step * self.batch, unit='img', unit_scale=True,
                        dynamic_ncols=True, desc='train')
        handlers = {sig: signal.signal(sig, self._request_stop)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        self._restart_clock()
        one_worker = distribute.one_worker(self.strategy)
        first_step, steps_run, value_reads = self.step, 0, 0
        reads_before = distribute.host_reads
        try:
            while self.step < total_iter and not self.finished:
                if (one_worker or self.step == first_step or self.step % STOP_CHECK_STEPS == 0
                        ) and self._stop_agreed():
                    break
                if self.data_iter is None:  # a new run, a resume, or a restore that rewound it
                    self.data_iter = iter(make_dataset(self.step))
                batch = next(self.data_iter)  # images, or (images, labels) when conditional
                if self.started is not None:  # the first batch of this command
                    tqdm.write(f'First batch ready {time.perf_counter() - self.started:.1f} s '
                               'after the command started')
                    self.started = None
                images, labels = batch if self.conf.num_classes else (batch, None)
                metrics = self.gan.train_step(images, real_labels=labels)
                steps_run += 1
                if self.gan.took_r1:
                    self.latest_r1 = metrics['gp']  # a reference: read only when logged
                self.step += 1
                self.bar.update(self.batch)
                self.interval_images += self.batch
                log_now = self.step % options['metrics_inter'] == 0 or self.step == total_iter
                fid_now = bool(fid_inter) and self.step % fid_inter == 0
                save_now = fid_now or self.step % ckpt_inter == 0
                # Reading the step's values (all-reduced over the workers) waits for the step.
                value_reads += bool(log_now or save_now)
                # Checked before every log and save, so no NaN model is saved, as best or at all.
                if (log_now or save_now) and self._restored_after_nan(metrics):
                    continue
                if log_now or save_now:  # the NaN check read the step's values: it is done
                    self._tick()
                if log_now:
                    self._log_metrics(metrics)
                if save_now:
                    self.save(with_fid=fid_now)
            if not one_worker:  # what made the host wait for a collective while training
                tqdm.write(f'Host reads of collectives in {steps_run} steps: '
                           f'{distribute.host_reads - reads_before} to agree whether to stop '
                           f'(at the first step, then every {STOP_CHECK_STEPS}) or on an FID, '
                           f'{value_reads} of logged or saved steps\' values')
            if self.stop_agreed:
                self._save_on_signal(metrics if self.step != self.saved_step else None)
            elif self.step != self.saved_step:
                self.save(with_fid=bool(fid_inter))
        finally:
            self.bar.close()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _request_stop(self, signum, frame):
        self.stop_signal = signum

    def _stop_agreed(self):
        """Whether this process or any other worker was signalled to stop. Every worker asks
        before the same steps, so all stop after the same one and save together
        (collectively)."""
        self.stop_agreed = distribute.any_worker(self.strategy, self.stop_signal is not None)
        return self.stop_agreed

    def _tick(self):
        """Count the time since the last tick as training time. Call it only once the last
        step is done (reading its values waits for it; a GPU runs steps asynchronously)."""
        now = time.perf_counter()
        self.train_seconds += now - self.clock
        self.interval_seconds += now - self.clock
        self.clock = now

    def _restart_clock(self):
        """After work that is not training (evaluation, saving, a restore): not counted."""
        self.clock = time.perf_counter()

    def _log_metrics(self, metrics):
        values = {key: float(value) for key, value in metrics.items()}
        # With lazy R1 most steps take none: log the latest penalty taken, at the every-update
        # weight gp_weight, so R1 curves compare across r1_interval. d_total is the step's own.
        if self.latest_r1 is not None:
            values['gp'] = float(self.latest_r1) / self.conf.r1_interval
        # What passed the NaN check but is not finite: a skipped float16 update's overflow.
        values = {key: value for key, value in values.items() if np.isfinite(value)}
        images_per_sec = self.interval_images / max(self.interval_seconds, 1e-9)
        self.log.log(self.step * self.batch, images_per_sec=images_per_sec,
                     train_seconds=self.train_seconds, **values)
        self.bar.set_postfix(d=f'{values.get("d_loss", np.nan):.3f}',
                             g=f'{values.get("g_loss", np.nan):.3f}',
                             gp=f'{values.get("gp", np.nan):.4f}')
        self.interval_images, self.interval_seconds = 0, 0.0
        self._restart_clock()

    # ------------------------------------------------------------------ saving, evaluating
    def _store_state(self):
        """Python-side state into the checkpoint's variables (a restore overwrites these)."""
        self.state['train_seconds'].assign(self.train_seconds)
        for name, value in zip(guard_lib.COUNTERS, self.guard.counters()):
            self.state[f'guard_{name}'].assign(value)

    def save(self, with_fid):
        """The latest checkpoint first, so that a kill during the evaluation loses no
        training; then FID and what follows from it (evaluate)."""
        n_images = self.step * self.batch
        if with_fid:
            self.state['evaluating'].assign(n_images)
        self._store_state()
        self.ckpts.save_latest(n_images)
        self.saved_step = self.step
        if with_fid:
            self.evaluate(n_images)
        else:
            self._after_save(n_images, '')
        self._restart_clock()

    def evaluate(self, n_images, logged_fid=None):
        """FID of the EMA generator, the best checkpoint when it improved, and the guard's
        decision on it. With `logged_fid`, the evaluation a stopped run logged after its latest
        checkpoint: only its outcome (best checkpoint, guard) is taken again."""
        fid = logged_fid
        if fid is None:
            fid = float('nan')
            if self.chief and self.fid_evaluator is not None:
                scores = self.fid_evaluator(self.gan.ema_generator)  # FID; PRDC with conf.prdc
                fid = scores['fid']
                self.log.log(n_images, **scores, train_seconds=self.train_seconds)
            # Saves are collective across workers: all must take the chief's decision.
            fid = distribute.broadcast_from_chief(self.strategy, fid, self.chief)
        self.state['fid'].assign(fid)
        best_before = self.scalar('best_fid')
        event = (self.guard.after_evaluation(fid, best_before, self._where())
                 if np.isfinite(fid) else guard_lib.Event('continue'))
        self.state['evaluated'].assign(n_images)
        improved = np.isfinite(fid) and fid < best_before
        if improved:
            self.state['best_fid'].assign(fid)
            self._store_state()
            self.ckpts.save_best(n_images)
        if logged_fid is None:
            note = f'FID {fid:.3f}' + (' (best)' if improved else '') if np.isfinite(fid) else ''
            self._after_save(n_images, note)
        self._carry_out(event)

    def _after_save(self, n_images, note):
        if self.chief:  # the pictures and the report (outputs.py: side jobs, never fatal)
            outputs.write_pictures(self.model_dir, self.log, self.gan.ema_generator,
                                   self.sample_noise, n_images, self.conf.plot_size,
                                   self.sample_labels)
        tqdm.write(f'{n_images:,} images: checkpoint saved {note}')

    def _save_on_signal(self, metrics):
        """On SIGINT/SIGTERM: save the steps since the last save (`metrics`: the last step's,
        None when there are none; saving the same number again would rewrite that checkpoint)."""
        if metrics is not None:
            bad_names = self._non_finite(metrics)
            if bad_names:  # no restore here: the run was asked to stop
                self._carry_out(self.guard.after_non_finite(
                    self._what(bad_names), self.ckpts.last_good, may_restore=False))
            self._tick()
            self._store_state()
            self.ckpts.save_latest(self.step * self.batch)
        why = (f'on signal {self.stop_signal}' if self.stop_signal is not None else
               'with the other workers, one of which was signalled')
        tqdm.write(f'Stopped {why}; the checkpoint at '
                   f'{self.step * self.batch:,} images is saved')

    # ------------------------------------------------------------------ the guard's decisions
    def _where(self):
        return f'step {self.step} ({self.step * self.batch:,} images)'

    def _non_finite(self, metrics):
        """Non-finite losses and weights; weights too, as a step's losses are computed before
        its update, which may already have made them NaN. A float16 update skipped for
        overflowing gradients left its weights as they were: only those are checked, unless
        a loss scale is down to 1 (scaling can no longer help: the model itself overflows)."""
        named = dict(metrics)
        if 'step_skipped' in metrics and float(metrics['step_skipped']) and min(
                float(metrics['d_loss_scale']), float(metrics['g_loss_scale'])) > 1:
            named = {}
        bad = guard_lib.non_finite_names(named)
        for net in (self.gan.generator, self.gan.ema_generator, self.gan.discriminator):
            bad += guard_lib.non_finite_names({weight.path: weight for weight in net.weights})
        return bad

    def _what(self, bad_names):
        shown = ', '.join(bad_names[:3]) + (f' and {len(bad_names) - 3} more'
                                            if len(bad_names) > 3 else '')
        return f'non-finite {shown} at {self._where()}'

    def _restored_after_nan(self, metrics):
        """False when the step's losses and weights are finite; else the guard's decision,
        carried out: a restore (True) or a stop."""
        bad_names = self._non_finite(metrics)
        if not bad_names:
            return False
        self._tick()  # the undone steps' time was spent all the same: train_seconds keeps it
        self._carry_out(self.guard.after_non_finite(self._what(bad_names),
                                                    self.ckpts.last_good))
        return True

    def _carry_out(self, event):
        """Do what the guard decided, and record it in events.jsonl."""
        if event.action == 'continue':
            return
        self.log.event(self.step * self.batch, event.action, event.message)
        if event.action == 'stop':
            raise TrainingDivergedError(event.message)
        if event.action == 'warn':
            tqdm.write(f'warning: {event.message}')
        elif event.action == 'finish':
            tqdm.write(event.message)
            self.finished = True
        elif event.action == 'restore':
            self._restore(event.checkpoint)
            conf, halvings = self.conf, self.guard.lr_halvings
            tqdm.write(f'{event.message}: g_lr={conf.g_lr / 2 ** halvings:.3g}, '
                       f'd_lr={conf.d_lr / 2 ** halvings:.3g}')

    def _restore(self, which):
        """Go back to the last good checkpoint ('latest', after a NaN) or to the best one (a
        rollback), with both learning rates halved once more than before."""
        prefix = self.ckpts.restore_target(which)
        # The latest checkpoint is written before its evaluation: it must not bring back an
        # older best FID (the next evaluation would then replace the true best).
        best_fid, evaluated = self.scalar('best_fid'), int(self.scalar('evaluated'))
        gan.restore_checkpoint(self.gan, self.checkpoint_objects, prefix)
        self.state['best_fid'].assign(min(best_fid, self.scalar('best_fid')))
        self.state['evaluated'].assign(max(evaluated, int(self.scalar('evaluated'))))
        self.ckpts.last_good = prefix
        conf, halvings = self.conf, self.guard.lr_halvings
        for optimizer, base_lr in ((self.gan.g_optimizer, conf.g_lr),
                                   (self.gan.d_optimizer, conf.d_lr)):
            optimizer.learning_rate = base_lr / 2 ** halvings
        self.step = self.saved_step = self.n_images // self.batch
        self.data_iter = None  # the data order goes back to the restored step too
        self.log.rewind(self.n_images)
        if self.bar is not None:
            self.bar.n = self.n_images
            self.bar.refresh()
        self.interval_images, self.interval_seconds = 0, 0.0
        self._restart_clock()
