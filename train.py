"""Train LadaGAN.

    python train.py                                   # demo: OpenMoji emoji, 32 px, CPU minutes
    python train.py --preset cifar10 --file_pattern 'data/cifar10/*.png' --model_dir runs/cifar10
    python train.py --preset ffhq_128 --file_pattern data/ffhq --set batch_size=32 --model_dir runs/ffhq
    python train.py --model_dir runs/cifar10          # resume: config, data, counters, RNG, best FID
    python train.py --preset tiny --dry_run           # print the resolved config and exit
    python train.py --preset cifar10 --file_pattern data/cifar10 --fast   # lazy R1
    python train.py --model_dir runs/demo --report    # write runs/demo/report.html

A run folder holds config.json, run.json (its data and schedule), training-checkpoints/ (latest),
best-training-checkpoints/ (best FID; the official layout, loadable by the authors' code and by
generate.py), log-dir/ (TensorBoard), samples/ (fixed-seed grids and attention maps),
metrics.jsonl, events.jsonl (the guard's decisions), loss_curves.png and report.html.
"""
import argparse
import os
import shutil
import signal
import sys
import time

import cli  # noqa: E402  (first: see cli.py)

if __name__ == '__main__':
    cli.import_tensorflow_quietly()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # imported, e.g. in a notebook

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

import checkpoints  # noqa: E402
import config as config_lib  # noqa: E402
import data  # noqa: E402
import distribute  # noqa: E402
import fid as fid_lib  # noqa: E402
import gan  # noqa: E402
import guard as guard_lib  # noqa: E402
import model as model_lib  # noqa: E402
import outputs  # noqa: E402
import report  # noqa: E402
from config import UserError  # noqa: E402

# `python train.py` with no dataset trains the demo preset for this many iterations
# (48,000 images: about 10 minutes on an idle 2-core CPU, FID included).
DEMO_TOTAL_ITER = 1500
DEMO_FID_INTER = 1500
DEMO_CKPT_INTER = 500
# The version of the data order kept in checkpoints (data.EpochOrder).
DATA_ORDER = 1


class TrainingDivergedError(RuntimeError):
    """A non-finite loss or weight during training; the CLI reports it and exits with code 1."""


def option_defaults(known):
    """Defaults of the options a run records, from those given or recorded (`known`, None where
    neither): `python train.py` with no data trains the short demo schedule, and checkpoints
    follow the FID interval unless the demo's own schedule applies."""
    demo = known['file_pattern'] is None
    fid_inter = DEMO_FID_INTER if demo else 5000
    if known['fid_inter'] is None:
        ckpt_inter = DEMO_CKPT_INTER if demo else fid_inter
    else:
        ckpt_inter = known['fid_inter'] or 5000  # 0: FID off
    return {'file_pattern': None, 'eval_dir': None,
            'total_iter': DEMO_TOTAL_ITER if demo else None,  # None: until stopped
            'fid_inter': fid_inter, 'ckpt_inter': ckpt_inter,
            'metrics_inter': 100, 'max_ckpt_to_keep': 2}


def make_fid_evaluator(conf, eval_source):
    """A callable generator -> FID, or None (with one printed line) when FID cannot run."""
    try:
        return fid_lib.training_evaluator(conf, eval_source)
    except (UserError, OSError, RuntimeError) as err:
        tqdm.write(f'FID disabled: {err}')
        return None


class Trainer:
    """One run's training loop and what it keeps between steps: the GAN, the metric log, the
    schedule and the training clock. Three pieces it drives live elsewhere, by name: the
    checkpoints and which one to resume or restore (checkpoints.RunCheckpoints), the decisions
    on NaNs and FID (guard.Guard, carried out here), and what an evaluation produces (the FID
    of fid.training_evaluator; the pictures and the report of outputs.write_pictures)."""

    def __init__(self, conf, model_dir, options, strategy, init=None):
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
        with strategy.scope():
            generator = model_lib.build_generator(conf, initialize='generator' not in stored)
            discriminator = model_lib.build_discriminator(
                conf, initialize='discriminator' not in stored)
            state = dict(
                fid=tf.Variable(float('nan'), name='fid'),
                best_fid=tf.Variable(float('inf'), name='best_fid'),
                # Wall-clock seconds spent in training steps (not in FID, saves or plots),
                # across resumes: what time-to-FID is measured in.
                train_seconds=tf.Variable(0.0, dtype=tf.float64, name='train_seconds'),
                # Images seen at the save made for an evaluation (written before it), and at
                # the last evaluation whose outcome is counted: unequal, it did not finish.
                evaluating=tf.Variable(0, dtype=tf.int64, name='evaluating'),
                evaluated=tf.Variable(0, dtype=tf.int64, name='evaluated'),
                # The data order the run draws its images in (data.EpochOrder: version 1, a
                # function of the step); 0 in a checkpoint written before it existed.
                data_order=tf.Variable(0, dtype=tf.int64, name='data_order'),
                **{f'guard_{name}': tf.Variable(0, dtype=tf.int64, name=f'guard_{name}')
                   for name in guard_lib.COUNTERS})
        self.state = state
        print(f'G: {model_lib.count_params(generator):,} parameters, '
              f'D: {model_lib.count_params(discriminator):,}; '
              f'{strategy.num_replicas_in_sync} replica(s)')
        self.gan = gan.LadaGAN(generator, discriminator, conf, strategy=strategy)
        for name, values in (init or {}).items():  # optimizers, counters, RNG start fresh
            for weight, value in zip(getattr(self.gan, name).weights, values):
                weight.assign(value)
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
        self.fid_evaluator = None
        self.step = self.saved_step = 0
        self.stop_signal, self.stop_agreed = None, False  # this process's; any worker's
        self.finished = False  # early stop
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
        if prefix and 'data_order' not in self.stored_names:
            print(f'notice: {prefix} was written before runs kept their data order: the run '
                  f'goes on from image {self.n_images:,} of the exact order, but its images '
                  'before it were drawn in another order')
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
        try:
            while self.step < total_iter and not self._stop_agreed() and not self.finished:
                if self.data_iter is None:  # a new run, a resume, or a restore that rewound it
                    self.data_iter = iter(make_dataset(self.step))
                metrics = self.gan.train_step(next(self.data_iter))
                if self.gan.took_r1:
                    self.latest_r1 = metrics['gp']  # a reference: read only when logged
                self.step += 1
                self.bar.update(self.batch)
                self.interval_images += self.batch
                log_now = self.step % options['metrics_inter'] == 0 or self.step == total_iter
                fid_now = bool(fid_inter) and self.step % fid_inter == 0
                save_now = fid_now or self.step % ckpt_inter == 0
                # Checked before every log and save, so no NaN model is saved, as best or at all.
                if (log_now or save_now) and self._restored_after_nan(metrics):
                    continue
                if log_now or save_now:  # the NaN check read the step's values: it is done
                    self._tick()
                if log_now:
                    self._log_metrics(metrics)
                if save_now:
                    self.save(with_fid=fid_now)
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
        before every step, so all stop after the same one and save together (collectively)."""
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
                                   self.sample_noise, n_images, self.conf.plot_size)
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
        for net in (self.gan.generator, self.gan.ema_generator, self.gan.discriminator):
            named.update((weight.path, weight) for weight in net.weights)
        return guard_lib.non_finite_names(named)

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

def train(conf, model_dir, options, record, strategy=None, init=None):
    """Train (or resume) the run in `model_dir` with the resolved `options` (see
    checkpoints.resolve_options); `record` is the run.json the chief writes before the first
    step; `init`: the weights a run with no checkpoint starts from (checkpoints.init_weights).
    Returns the Trainer."""
    strategy = strategy or tf.distribute.get_strategy()
    trainer = Trainer(conf, model_dir, options, strategy, init)
    if init and not trainer.ckpts.resume_from:
        print(f'G, its EMA and D start from {record["init_from"]["checkpoint"]}; the optimizers, '
              'counters, RNG and FID history start fresh')
    os.makedirs(trainer.write_dir, exist_ok=True)
    make_dataset = distribute.make_distributed_dataset(
        strategy, checkpoints.training_images_of(options, conf.img_size), conf)
    if trainer.chief:
        # Written whole or not at all; an older config.json gains the keys added since.
        checkpoints.write_json_atomic(os.path.join(model_dir, 'config.json'), conf.to_dict())
        checkpoints.write_json_atomic(os.path.join(model_dir, checkpoints.RUN_RECORD), record)
    print(conf.to_json())
    trainer.restore()
    if options['fid_inter'] and trainer.chief:
        # The real statistics are computed (or loaded) now, not in the middle of the run.
        trainer.fid_evaluator = make_fid_evaluator(
            conf, checkpoints.fid_reference_of(options, conf.img_size))
    trainer.finish_pending_evaluation()
    trainer.run(make_dataset)
    if not trainer.chief:
        shutil.rmtree(trainer.write_dir, ignore_errors=True)
    print(f'Done: {trainer.step * trainer.batch:,} images seen; run folder {model_dir}')
    return trainer


# ---------------------------------------------------------------------- command line

def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train LadaGAN.', formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('--file_pattern', help='training images: a folder or a glob '
                        '(default: the built-in OpenMoji demo set)')
    parser.add_argument('--eval_dir', help='FID reference images (default: the training set)')
    parser.add_argument('--model_dir', default=None,
                        help='run folder; an existing run is resumed (default: runs/demo or '
                             'runs/<preset>)')
    parser.add_argument('--metrics_inter', type=int, default=None,
                        help='log losses every this many iterations (default 100)')
    parser.add_argument('--fid_inter', type=int, default=None,
                        help='evaluate FID and save checkpoints every this many iterations; '
                             f'0 turns FID off (default 5000, demo {DEMO_FID_INTER})')
    parser.add_argument('--ckpt_inter', type=int, default=None,
                        help='save the latest checkpoint every this many iterations '
                             f'(default: fid_inter, or 5000 with FID off; demo {DEMO_CKPT_INTER})')
    parser.add_argument('--total_iter', type=int, default=None,
                        help='stop after this many iterations in all (default: until stopped; '
                             f'demo {DEMO_TOTAL_ITER})')
    parser.add_argument('--max_ckpt_to_keep', type=int, default=None,
                        help='latest checkpoints to keep (default 2)')
    parser.add_argument('--preset', help='config preset: ' + ', '.join(config_lib.presets))
    parser.add_argument('--init_from', metavar='SOURCE',
                        help='start a new run from pretrained weights (G, its EMA, D): a run '
                             "folder, a folder in the authors' layout or official:NAME; without "
                             "--preset the source's config, with --set changes")
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='override a config key (repeatable), e.g. --set batch_size=64')
    parser.add_argument('--seed', type=int, default=None, help='shortcut for --set seed=N')
    parser.add_argument('--fast', action='store_true',
                        help='train faster than the official recipe: '
                             + ', '.join(f'{key}={value}' for key, value in gan.FAST_SETTINGS.items())
                             + ' (lazy R1; docs/faster-training.md)')
    parser.add_argument('--report', action='store_true',
                        help='write RUN/report.html (config, FID and loss curves, samples, '
                             'attention maps, the guard\'s events) for --model_dir and exit')
    parser.add_argument('--dry_run', action='store_true',
                        help='print the resolved config and exit')
    parser.add_argument('--strategy', default='auto', choices=distribute.STRATEGIES,
                        help='tf.distribute strategy (default auto: TF_CONFIG -> multiworker, '
                             'TPU -> tpu, several GPUs -> mirrored, else one device)')
    args = parser.parse_args(argv)
    for name in ('metrics_inter', 'total_iter', 'max_ckpt_to_keep', 'ckpt_inter'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name}={value} must be a positive integer')
    if args.fid_inter is not None and args.fid_inter < 0:
        parser.error(f'--fid_inter={args.fid_inter} must be 0 (off) or a positive integer')
    if args.model_dir is None:
        args.model_dir = os.path.join('runs', args.preset or ('demo' if args.file_pattern is None
                                                              else 'default'))
    return args


def check_data(options, conf, args):
    """Refuse missing, empty or too small training and FID image sets (UserError), saying when
    a path came from the run's record; the built-in demo set (file_pattern None) is enough."""
    file_pattern, eval_dir = options['file_pattern'], options['eval_dir']
    data.image_memory_limit_bytes()  # a bad $LADAGAN_IMAGE_MEMORY_MB is refused here, too
    try:
        if file_pattern is not None:
            data.check_train_images(file_pattern, conf.img_size, conf.batch_size, conf.center_crop)
        fid_source = eval_dir or file_pattern
        if options['fid_inter'] and fid_source is not None:
            data.check_fid_images(fid_source, conf.n_fid_real,
                                  '--eval_dir' if eval_dir else '--file_pattern')
    except UserError as err:
        recorded = [f'--{name}' for name in checkpoints.RECORDED_PATHS
                    if options[name] is not None and getattr(args, name) is None]
        if not recorded:
            raise
        raise UserError(f'{err} ({" and ".join(recorded)} as recorded in '
                        f'{os.path.join(args.model_dir, checkpoints.RUN_RECORD)}: give the '
                        "data's new place on the command line)") from None


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.report:
            if not os.path.isfile(os.path.join(args.model_dir, 'config.json')):
                raise UserError(f'--model_dir {args.model_dir} holds no run (no config.json) to '
                                'report on')
            print(f'Wrote {report.write_report(args.model_dir)}')
            return 0
        overrides = dict(config_lib.parse_override(item) for item in args.set)
        if args.seed is not None:
            overrides['seed'] = args.seed
        if args.fast:  # --set still overrides it
            overrides = {**gan.FAST_SETTINGS, **overrides}
        # `python train.py` with no data and no config changes starts the demo.
        demo = args.file_pattern is None and not args.set
        conf, resumed, notices = checkpoints.resolve_config(
            args.model_dir, args.preset, overrides, new_run_preset='demo' if demo else None)
        source, conf, started_from = checkpoints.starting_point(
            args.model_dir, args.init_from, args.preset, conf, overrides, resumed)
        if args.dry_run:
            print(conf.to_json())
            return 0
        given = {name: getattr(args, name) for name in checkpoints.RECORDED_OPTIONS}
        options, record, option_notices = checkpoints.resolve_options(
            args.model_dir, given, option_defaults, resumed)
        if started_from:
            record['init_from'] = started_from
        for notice in notices + option_notices:
            print(f'notice: {notice}')
        # Bad input is refused here, before anything in --model_dir is created or changed.
        check_data(options, conf, args)
        # Multi-worker strategies must exist before any other TensorFlow op runs.
        strategy = distribute.make_strategy(args.strategy)
        if resumed:
            checkpoints.check_run_checkpoints(args.model_dir, conf)
        init = source and checkpoints.init_weights(source, conf, f'--preset {args.preset}' if
                                                   args.preset else "the source's config")
        # Weights are drawn from Keras' global seed, so --seed must set it for runs to repeat.
        keras.utils.set_random_seed(conf.seed)
        train(conf, args.model_dir, options, record, strategy, init)
    except UserError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except TrainingDivergedError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
