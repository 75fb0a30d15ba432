"""Train LadaGAN.

    python train.py                                   # demo: OpenMoji emoji, 32 px, CPU minutes
    python train.py --preset cifar10 --file_pattern 'data/cifar10/*.png' --model_dir runs/cifar10
    python train.py --preset ffhq_128 --file_pattern data/ffhq --set batch_size=32 --model_dir runs/ffhq
    python train.py --model_dir runs/cifar10          # resume: config, counters, RNG and best FID
    python train.py --preset tiny --dry_run           # print the resolved config and exit

A run folder holds config.json, training-checkpoints/ (latest), best-training-checkpoints/ (best
FID; the official layout, loadable by the authors' code and by generate.py), log-dir/ (TensorBoard),
samples/ (fixed-seed grids and attention maps) and loss_curves.png.
"""
import argparse
import json
import os
import shutil
import signal
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

import config as config_lib  # noqa: E402
import diffaug  # noqa: E402
import model as model_lib  # noqa: E402
import utils  # noqa: E402

# `python train.py` with no dataset trains the demo preset for this many iterations
# (48,000 images: about 11 minutes on an idle 2-core CPU, FID included).
DEMO_TOTAL_ITER = 1500
DEMO_FID_INTER = 1500
DEMO_CKPT_INTER = 500


def mse(a, b):
    return tf.reduce_mean(tf.square(a - b))


class DynamicLossScale(tf.Module):
    """Dynamic loss scaling for float16: gradients are computed of loss * scale; a step whose
    unscaled gradients are not all finite is skipped and halves the scale, and every
    `growth_interval` finite steps double it. Disabled, the scale is a constant 1."""

    def __init__(self, enabled, initial_scale=2.0 ** 15, growth_interval=2000, name=None):
        super().__init__(name=name)
        self.enabled = enabled
        self.growth_interval = growth_interval
        self.scale_var = tf.Variable(initial_scale if enabled else 1.0, trainable=False,
                                     name='scale')
        self.finite_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name='finite_steps')

    @property
    def scale(self):
        return self.scale_var if self.enabled else tf.constant(1.0)

    def apply(self, optimizer, scaled_grads, variables):
        if not self.enabled:
            optimizer.apply_gradients(zip(scaled_grads, variables))
            return
        grads = [tf.cast(g, tf.float32) / self.scale_var for g in scaled_grads]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])

        def apply_and_maybe_grow():
            optimizer.apply_gradients(zip(grads, variables))
            grow = self.finite_steps + 1 >= self.growth_interval
            self.scale_var.assign(tf.where(grow, self.scale_var * 2.0, self.scale_var))
            self.finite_steps.assign(tf.where(grow, tf.constant(0, tf.int64),
                                              self.finite_steps + 1))
            return tf.constant(True)

        def skip_and_shrink():
            self.scale_var.assign(tf.maximum(self.scale_var / 2.0, 1.0))
            self.finite_steps.assign(0)
            return tf.constant(False)

        tf.cond(finite, apply_and_maybe_grow, skip_and_shrink)


def use_xla(jit):
    """The config's `jit` as a bool: 'auto' is XLA when a GPU or TPU is visible. On a CPU,
    TensorFlow's oneDNN kernels run the step 13 to 27% faster than XLA:CPU (README, Performance)."""
    if jit != 'auto':
        return jit
    return bool(tf.config.list_logical_devices('GPU') or tf.config.list_logical_devices('TPU'))


class LadaGAN(tf.Module):
    """Generator, EMA generator, discriminator, their optimizers and one compiled train step.

    `train_step(real_images, d_noise=None, g_noise=None)` runs one discriminator update, then
    one generator update with fresh noise, then the EMA update, as the official trainer does.
    Noise is drawn from `self.rng` (checkpointed) unless given.
    """

    def __init__(self, generator, discriminator, conf, ema_generator=None, strategy=None):
        super().__init__(name='ladagan')
        self.conf = conf
        self.strategy = strategy or tf.distribute.get_strategy()
        self.num_replicas = self.strategy.num_replicas_in_sync
        if self.num_replicas > 1 and conf.precision == 'mixed_float16':
            raise utils.UserError('precision=mixed_float16 is supported on one device only; '
                                  'use mixed_bfloat16 (no loss scaling needed) with several')
        self.generator = generator
        self.discriminator = discriminator
        with self.strategy.scope():
            self._init_state(ema_generator)
        # Several replicas: collectives inside the update keep XLA out of the replica function.
        self.xla = use_xla(conf.jit) and self.num_replicas == 1
        if self.num_replicas == 1:
            self._compiled_step = tf.function(self._single_device_step, jit_compile=self.xla)
        else:
            self._compiled_step = tf.function(self._distributed_step)

    def _init_state(self, ema_generator):
        """EMA generator, optimizers, loss scales, RNG and counters: under the strategy scope."""
        conf, generator, discriminator = self.conf, self.generator, self.discriminator
        if ema_generator is None:
            # The official code's EMA starts from a fresh random init (a clone_model quirk);
            # ours starts as an exact copy of G.
            ema_generator = model_lib.build_generator(conf, name='ema_generator')
            for ema_weight, weight in zip(ema_generator.weights, generator.weights):
                ema_weight.assign(weight)
        self.ema_generator = ema_generator
        self.g_optimizer = keras.optimizers.Adam(conf.g_lr, conf.g_beta1, conf.g_beta2,
                                                 epsilon=1e-7)
        self.d_optimizer = keras.optimizers.Adam(conf.d_lr, conf.d_beta1, conf.d_beta2,
                                                 epsilon=1e-7)
        # float16 gradients underflow without dynamic loss scaling (bfloat16 needs none).
        self.loss_scaling = conf.precision == 'mixed_float16'
        self.g_loss_scale = DynamicLossScale(enabled=self.loss_scaling, name='g_loss_scale')
        self.d_loss_scale = DynamicLossScale(enabled=self.loss_scaling, name='d_loss_scale')
        self.g_optimizer.build(generator.trainable_variables)
        self.d_optimizer.build(discriminator.trainable_variables)
        self.g_loss_fn, self.d_loss_fn = utils.get_loss(conf.loss)
        self.policy = conf.policy
        diffaug.parse_policy(self.policy)  # fail now, not inside the trace
        self.rng = tf.random.Generator.from_seed(conf.seed)
        self.n_images = tf.Variable(0, dtype=tf.int64, trainable=False, name='n_images')

    # ------------------------------------------------------------------ pieces of the step
    def augment(self, images):
        return diffaug.DiffAugment(images, self.policy, rng=self.rng)

    def r1_penalty(self, real_images):
        """D(real) logits and gp_weight * mean_b sum ||d sum(D(x_b)) / d x_b||^2 (no 1/2).

        Under float16 the input gradient is taken of the loss-scaled logits and unscaled in
        float32: unscaled, the small per-pixel gradients underflow and R1 silently becomes 0."""
        scale = self.d_loss_scale.scale
        with tf.GradientTape() as r1_tape:
            r1_tape.watch(real_images)
            real_logits = self.discriminator(real_images, training=True)
            scaled_logits = real_logits * scale
        grads = tf.cast(r1_tape.gradient(scaled_logits, real_images), tf.float32) / scale
        penalty = tf.reduce_sum(tf.square(grads), axis=[1, 2, 3])  # (B,)
        return real_logits, self.conf.gp_weight * tf.reduce_mean(penalty)

    def _draw_noise(self, noise, batch_size):
        if noise is not None:
            return tf.convert_to_tensor(noise, tf.float32)
        return self.rng.normal([batch_size, self.conf.noise_dim])

    def _update(self, real_images, d_noise=None, g_noise=None):
        """One D step then one G step on this replica's share of the batch. Gradients are
        summed over replicas by the optimizer, so the losses are divided by the replica count:
        the update is that of the mean over the global batch."""
        conf = self.conf
        per_replica = 1.0 / self.num_replicas
        real_images = tf.convert_to_tensor(real_images, tf.float32)
        batch_size = tf.shape(real_images)[0]
        d_noise = self._draw_noise(d_noise, batch_size)
        d_vars = self.discriminator.trainable_variables
        g_vars = self.generator.trainable_variables

        # --- discriminator step. Real and fake go through D as separate calls (as the official
        # code), so each gets its own batch-norm statistics.
        with tf.GradientTape() as d_tape:
            fake_images = self.generator(d_noise, training=True)[0]
            if conf.bcr:
                # bCR: adversarial loss and R1 on clean images; consistency between D(x) and
                # D(T(x)) with the augmented batch (real and fake together) stop-gradient.
                fake_logits = self.discriminator(fake_images, training=True)
                real_logits, gp = self.r1_penalty(real_images)
                augmented = tf.stop_gradient(tf.concat(
                    [self.augment(real_images), self.augment(fake_images)], axis=0))
                augmented_logits = self.discriminator(augmented, training=True)
                real_aug_logits, fake_aug_logits = tf.split(augmented_logits, 2, axis=0)
                cr = conf.cr_weight * (mse(real_logits, real_aug_logits)
                                       + mse(fake_logits, fake_aug_logits))
            else:
                fake_augmented = self.augment(fake_images)
                real_augmented = self.augment(real_images)
                fake_logits = self.discriminator(fake_augmented, training=True)
                # R1 on the AUGMENTED reals, as the official code.
                real_logits, gp = self.r1_penalty(real_augmented)
                cr = tf.constant(0.0)
            d_loss = self.d_loss_fn(real_logits, fake_logits)
            d_total = d_loss + gp + cr
            scaled_d_total = d_total * (self.d_loss_scale.scale * per_replica)
        d_grads = d_tape.gradient(scaled_d_total, d_vars)
        self.d_loss_scale.apply(self.d_optimizer, d_grads, d_vars)

        # --- generator step with fresh noise.
        g_noise = self._draw_noise(g_noise, batch_size)
        with tf.GradientTape() as g_tape:
            fake_images = self.generator(g_noise, training=True)[0]
            if conf.bcr:
                g_fake_logits = self.discriminator(fake_images, training=True)
                g_real = real_images
            else:
                g_fake_logits = self.discriminator(self.augment(fake_images), training=True)
                g_real = None if conf.loss != 'rahinge' else self.augment(real_images)
            # Only the relativistic loss needs D(real) in the generator step.
            g_real_logits = (self.discriminator(g_real, training=True)
                             if conf.loss == 'rahinge' else None)
            g_loss = self.g_loss_fn(g_real_logits, g_fake_logits)
            scaled_g_loss = g_loss * (self.g_loss_scale.scale * per_replica)
        g_grads = g_tape.gradient(scaled_g_loss, g_vars)
        self.g_loss_scale.apply(self.g_optimizer, g_grads, g_vars)

        return {'d_loss': d_loss, 'gp': gp, 'g_loss': g_loss, 'd_total': d_total, 'cr': cr,
                'real_logits_mean': tf.reduce_mean(real_logits),
                'fake_logits_mean': tf.reduce_mean(fake_logits)}

    def _update_ema_and_count(self, global_batch_size):
        """EMA over all generator weights, batch-norm statistics included (cross-replica)."""
        decay = self.conf.ema_decay
        for ema_weight, weight in zip(self.ema_generator.weights, self.generator.weights):
            ema_weight.assign(decay * ema_weight + (1.0 - decay) * weight)
        self.n_images.assign_add(tf.cast(global_batch_size, tf.int64))

    def _single_device_step(self, real_images, d_noise=None, g_noise=None):
        real_images = tf.convert_to_tensor(real_images, tf.float32)
        metrics = self._update(real_images, d_noise, g_noise)
        self._update_ema_and_count(tf.shape(real_images)[0])
        return metrics

    def _distributed_step(self, real_images, d_noise=None, g_noise=None):
        per_replica = self.strategy.run(self._update, args=(real_images, d_noise, g_noise))
        metrics = {key: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                   for key, value in per_replica.items()}
        local_batch = self.strategy.run(lambda images: tf.shape(images)[0], (real_images,))
        self._update_ema_and_count(
            self.strategy.reduce(tf.distribute.ReduceOp.SUM, local_batch, axis=None))
        return metrics

    def distribute(self, global_tensor):
        """Split a global batch (or noise) into per-replica shards along axis 0."""
        if global_tensor is None or self.num_replicas == 1:
            return global_tensor
        global_tensor = tf.convert_to_tensor(global_tensor, tf.float32)
        per_replica = global_tensor.shape[0] // self.num_replicas

        def shard(context):
            start = context.replica_id_in_sync_group * per_replica
            return global_tensor[start:start + per_replica]
        return self.strategy.experimental_distribute_values_from_function(shard)

    def train_step(self, real_images, d_noise=None, g_noise=None):
        """One D step, one G step, one EMA update; returns the step's metrics (tensors).

        With several replicas, `real_images` may be a per-replica value from a distributed
        dataset or a global batch, which is split evenly (as are given noises)."""
        if self.num_replicas > 1 and not isinstance(real_images, tf.distribute.DistributedValues):
            real_images = self.distribute(real_images)
        return self._compiled_step(real_images, self.distribute(d_noise),
                                   self.distribute(g_noise))

    def checkpoint(self, **extra):
        """A tf.train.Checkpoint in the official layout, plus our optimizer and RNG state."""
        return tf.train.Checkpoint(
            generator=self.generator, ema_generator=self.ema_generator,
            discriminator=self.discriminator, g_optimizer=self.g_optimizer,
            d_optimizer=self.d_optimizer, n_images=self.n_images, rng=self.rng,
            g_loss_scale=self.g_loss_scale, d_loss_scale=self.d_loss_scale, **extra)


# ---------------------------------------------------------------------- run folder handling

def resolve_config(args):
    """(config, resumed): the config stored in --model_dir when resuming, else preset + --set +
    --seed. On resume, a command-line value that differs from the stored one is an error."""
    overrides = dict(config_lib.parse_override(item) for item in args.set)
    if args.seed is not None:
        overrides['seed'] = args.seed
    preset = args.preset
    if preset is None and args.file_pattern is None and not args.set:
        preset = 'demo'
    if os.path.exists(args.model_dir) and not os.path.isdir(args.model_dir):
        raise utils.UserError(f'--model_dir {args.model_dir} is a file, not a folder: give a new '
                              'folder for a new run or an existing run folder to resume')
    stored_path = os.path.join(args.model_dir, 'config.json')
    if not os.path.exists(stored_path):
        return config_lib.make_config(preset, **overrides), False
    try:
        with open(stored_path) as f:
            stored_values = json.load(f)
        if not isinstance(stored_values, dict):
            raise ValueError('not a JSON object')
        stored, notices = config_lib.config_from_dict(stored_values, stored_path)
    except (OSError, ValueError) as err:
        raise utils.UserError(f'{stored_path} is not a valid LadaGAN config ({err}); '
                              'use a new --model_dir or repair the file') from None
    asked = config_lib.make_config(args.preset, **overrides).to_dict() if args.preset else {}
    asked.update(overrides)
    for key, value in asked.items():
        if stored[key] != value:
            raise utils.UserError(
                f'{args.model_dir} holds a run with {key}={stored[key]!r} but the command line '
                f'asks for {value!r}: resume without --preset/--set, or use a new --model_dir')
    for notice in notices:
        print(f'notice: {notice}')
    return stored, True


def option_defaults(file_pattern):
    """Defaults of the recorded options; `python train.py` with no data trains the short demo."""
    demo = file_pattern is None
    fid_inter = DEMO_FID_INTER if demo else 5000
    return {'file_pattern': None, 'eval_dir': None,
            'total_iter': DEMO_TOTAL_ITER if demo else None,  # None: until stopped
            'fid_inter': fid_inter, 'ckpt_inter': DEMO_CKPT_INTER if demo else fid_inter or 5000,
            'metrics_inter': 100, 'max_ckpt_to_keep': 2}


def _as_recorded(name, value):
    """Paths are recorded absolute, so that the run resumes from any working directory."""
    if name in utils.RECORDED_PATHS and value is not None:
        return os.path.abspath(os.path.expanduser(value))
    return value


def resolve_run_options(args, resumed):
    """(options, record) for this run: each of utils.RECORDED_OPTIONS from the command line, else
    from the run's run.json, else its default; `record` is the run.json to write.

    A value given on resume that differs from the recorded one is taken (datasets move between
    machines) with one notice line, and the change is kept in the record's "changes". A run
    folder without run.json (written before runs recorded them) or a record without some option
    takes the defaults, with one notice line."""
    record = utils.read_run_record(args.model_dir) if resumed else None
    given = {name: _as_recorded(name, getattr(args, name)) for name in utils.RECORDED_OPTIONS}
    recorded = (record or {}).get('options', {})
    file_pattern = given['file_pattern'] if given['file_pattern'] is not None else recorded.get(
        'file_pattern')
    defaults = option_defaults(file_pattern)
    options, changes = {}, []
    for name in utils.RECORDED_OPTIONS:
        if given[name] is not None:
            options[name] = given[name]
            if name in recorded and recorded[name] != given[name]:
                print(f'notice: --{name} {given[name]} replaces the recorded '
                      f'{"none" if recorded[name] is None else recorded[name]} of '
                      f'{args.model_dir} (kept in run.json)')
                changes.append({'option': name, 'from': recorded[name], 'to': given[name]})
        else:
            options[name] = recorded.get(name, defaults[name])
    if resumed and record is None:
        print(f'notice: {args.model_dir} has no run.json (it predates recorded data and options): '
              'training on ' + (f'--file_pattern {options["file_pattern"]}'
                                if options['file_pattern'] else 'the built-in demo set')
              + ' with the options given or their defaults; they are recorded from now on')
    elif resumed:
        absent = [name for name in utils.RECORDED_OPTIONS if name not in recorded]
        if absent:
            print(f'notice: {args.model_dir}/run.json predates the options {", ".join(absent)}: '
                  'using ' + ', '.join(f'{name}={options[name]!r}' for name in absent))
    history = list((record or {}).get('changes', []))
    if changes:
        stamp = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
        history += [dict(change, time=stamp) for change in changes]
    return options, {'options': options, 'changes': history}


class RunLog:
    """Metric history (metrics.jsonl, kept across resumes), TensorBoard and loss curves."""

    def __init__(self, model_dir):
        self.path = os.path.join(model_dir, 'metrics.jsonl')
        self.records = []
        self.unreadable_lines = 0  # e.g. a line cut short by a kill
        if os.path.exists(self.path):
            with open(self.path) as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        record = None
                    if isinstance(record, dict) and 'n_images' in record:
                        self.records.append(record)
                    else:
                        self.unreadable_lines += 1
        self.history = {}
        for record in self.records:
            self._add(record)
        self.writer = tf.summary.create_file_writer(os.path.join(model_dir, 'log-dir'))

    def _add(self, record):
        n_images = record['n_images']
        for key, value in record.items():
            if key != 'n_images':
                self.history.setdefault(key, []).append((n_images, value))

    def rewind(self, n_images):
        """Forget the records after `n_images` (steps undone by a kill or a NaN restore) and
        unreadable lines; rewrites metrics.jsonl atomically, and only when something goes."""
        kept = [record for record in self.records if record['n_images'] <= n_images]
        if len(kept) == len(self.records) and not self.unreadable_lines:
            return
        temp_path = self.path + '.tmp'
        with open(temp_path, 'w') as f:
            f.writelines(json.dumps(record) + '\n' for record in kept)
        os.replace(temp_path, self.path)
        self.records, self.unreadable_lines, self.history = kept, 0, {}
        for record in kept:
            self._add(record)

    def log(self, n_images, **values):
        record = {'n_images': int(n_images), **{k: float(v) for k, v in values.items()}}
        self.records.append(record)
        self._add(record)
        with open(self.path, 'a') as f:
            f.write(json.dumps(record) + '\n')
        with self.writer.as_default():
            for key, value in values.items():
                tf.summary.scalar(key, float(value), step=int(n_images))

    def image(self, name, image_uint8, n_images):
        with self.writer.as_default():
            tf.summary.image(name, image_uint8[None], step=int(n_images))


STRATEGIES = ('auto', 'default', 'mirrored', 'multiworker', 'tpu')


def make_strategy(name):
    """A tf.distribute strategy. 'auto': multi-worker when TF_CONFIG is set, a TPU when
    TPU_NAME or COLAB_TPU_ADDR is, all GPUs when there are several, else the default one."""
    if name == 'auto':
        if os.environ.get('TF_CONFIG'):
            name = 'multiworker'
        elif os.environ.get('TPU_NAME') or os.environ.get('COLAB_TPU_ADDR'):
            name = 'tpu'
        elif len(tf.config.list_logical_devices('GPU')) > 1:
            name = 'mirrored'
        else:
            name = 'default'
    if name == 'default':
        return tf.distribute.get_strategy()
    if name == 'mirrored':
        return tf.distribute.MirroredStrategy()
    if name == 'multiworker':
        if not os.environ.get('TF_CONFIG'):
            raise utils.UserError('--strategy multiworker needs TF_CONFIG describing the '
                                  'cluster and this worker (see the README)')
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == 'tpu':
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu=os.environ.get('TPU_NAME', ''))
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as err:
            raise utils.UserError(f'--strategy tpu found no TPU ({err})') from None
        return tf.distribute.TPUStrategy(resolver)
    raise utils.UserError(f'--strategy {name!r} is not allowed: use one of '
                          + ', '.join(STRATEGIES))


def is_chief(strategy):
    """Whether this process writes the run folder (the chief, or worker 0 without one)."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = 'chief' in resolver.cluster_spec().as_dict()
    return resolver.task_type == 'chief' or (not has_chief and resolver.task_type == 'worker'
                                             and resolver.task_id == 0)


def make_distributed_dataset(strategy, file_pattern, conf):
    """The global batch split over replicas; with several workers each reads its own shard."""
    if strategy.num_replicas_in_sync == 1:
        return utils.make_train_dataset(file_pattern, conf.img_size, conf.batch_size,
                                        center_crop=conf.center_crop, seed=conf.seed)
    if conf.batch_size % strategy.num_replicas_in_sync:
        raise utils.UserError(f'batch_size={conf.batch_size} must be divisible by the '
                              f'{strategy.num_replicas_in_sync} replicas')

    def dataset_fn(context):
        return utils.make_train_dataset(
            file_pattern, conf.img_size, context.get_per_replica_batch_size(conf.batch_size),
            center_crop=conf.center_crop, seed=conf.seed,
            num_shards=context.num_input_pipelines, shard_index=context.input_pipeline_id)
    return strategy.distribute_datasets_from_function(dataset_fn)


def train(conf, model_dir, options, record, strategy=None):
    """Train (or resume) the run in `model_dir` with the resolved `options` (see
    resolve_run_options); `record` is the run.json the chief writes before the first step."""
    strategy = strategy or tf.distribute.get_strategy()
    chief = is_chief(strategy)
    # Non-chief workers take part in every (collective) checkpoint save but write to a
    # scratch folder of their own, removed at the end.
    write_dir = model_dir if chief else os.path.join(
        model_dir, f'.worker-{strategy.cluster_resolver.task_id}')
    os.makedirs(write_dir, exist_ok=True)
    file_pattern = options['file_pattern'] or utils.openmoji_dataset(conf.img_size)
    dataset = make_distributed_dataset(strategy, file_pattern, conf)
    if chief:
        # Written whole or not at all; an older config.json gains the keys added since.
        utils.write_json_atomic(os.path.join(model_dir, 'config.json'), conf.to_dict())
        utils.write_json_atomic(os.path.join(model_dir, utils.RUN_RECORD), record)
    print(conf.to_json())

    with strategy.scope():
        generator = model_lib.build_generator(conf)
        discriminator = model_lib.build_discriminator(conf)
        fid_var = tf.Variable(float('nan'), name='fid')
        best_fid_var = tf.Variable(float('inf'), name='best_fid')
    print(f'G: {model_lib.count_params(generator):,} parameters, '
          f'D: {model_lib.count_params(discriminator):,}; '
          f'{strategy.num_replicas_in_sync} replica(s)')
    gan = LadaGAN(generator, discriminator, conf, strategy=strategy)
    step_mode = ('XLA (TPU)' if isinstance(strategy, tf.distribute.TPUStrategy) else
                 'XLA' if gan.xla else 'TensorFlow kernels, no XLA')
    print(f'train step: {step_mode} (jit={conf.jit})')
    ckpt = gan.checkpoint(fid=fid_var, best_fid=best_fid_var)
    latest_manager = tf.train.CheckpointManager(
        ckpt, os.path.join(write_dir, 'training-checkpoints'), options['max_ckpt_to_keep'])
    best_manager = tf.train.CheckpointManager(
        ckpt, os.path.join(write_dir, 'best-training-checkpoints'), 1)
    # Every worker resumes from the chief's checkpoints.
    resume_from = tf.train.latest_checkpoint(os.path.join(model_dir, 'training-checkpoints'))
    if resume_from:
        ckpt.restore(resume_from).assert_existing_objects_matched()
        print(f'Resumed from {resume_from}: {int(gan.n_images.numpy()):,} images seen, '
              f'last FID {float(fid_var):.3f}, best FID {float(best_fid_var):.3f}')

    total_iter = options['total_iter'] or float('inf')  # None: until stopped
    fid_inter, ckpt_inter = options['fid_inter'], options['ckpt_inter']
    eval_source = options['eval_dir'] or file_pattern
    fid_evaluator = None

    log = RunLog(write_dir)
    sample_noise = np.random.default_rng(conf.test_seed).standard_normal(
        [64, conf.noise_dim]).astype(np.float32)
    samples_dir = os.path.join(model_dir, 'samples')
    os.makedirs(samples_dir, exist_ok=True)

    stop = {'signal': None}

    def request_stop(signum, frame):
        stop['signal'] = signum

    previous_handlers = {sig: signal.signal(sig, request_stop)
                         for sig in (signal.SIGINT, signal.SIGTERM)}

    def save_samples(n_images):
        images, attn_maps = gan.ema_generator(sample_noise, training=False)
        grid_path = os.path.join(samples_dir, f'grid_{n_images:010d}.png')
        grid = utils.save_image_grid(images.numpy(), grid_path)
        log.image('samples', grid, n_images)
        utils.save_attention_maps(images.numpy()[:8], [a.numpy()[:8] for a in attn_maps],
                                  os.path.join(samples_dir, f'attention_{n_images:010d}'),
                                  plot_size=conf.plot_size)
        utils.save_loss_curves(log.history, os.path.join(model_dir, 'loss_curves.png'))

    def evaluate_and_save(n_images, with_fid):
        nonlocal fid_evaluator
        fid = float('nan')
        if with_fid and chief:
            if fid_evaluator is None:
                fid_evaluator = make_fid_evaluator(conf, eval_source, model_dir)
            if fid_evaluator is not None:
                fid = fid_evaluator(gan.ema_generator)
                log.log(n_images, fid=fid)
        if with_fid:  # a checkpoint-only save keeps the last FID
            # Saves are collective across workers: all must take the chief's decision.
            fid = broadcast_from_chief(strategy, fid, chief)
            fid_var.assign(fid)
        improved = np.isfinite(fid) and fid < float(best_fid_var)
        if improved:
            best_fid_var.assign(fid)
            best_manager.save(n_images)
        latest_manager.save(n_images)
        if chief:
            save_samples(n_images)
        note = f'FID {fid:.3f}' + (' (best)' if improved else '') if np.isfinite(fid) else ''
        tqdm.write(f'{n_images:,} images: checkpoint saved {note}')

    # A kill between the best and the latest save leaves the best checkpoint the newer one:
    # resume from it, so that its FID stays the one to beat and its number is not saved over.
    newest_best = tf.train.latest_checkpoint(os.path.join(model_dir, 'best-training-checkpoints'))
    if newest_best and (utils.checkpoint_scalar(newest_best, 'n_images')
                        > int(gan.n_images.numpy())):
        ckpt.restore(newest_best).assert_existing_objects_matched()
        print(f'Resumed from {newest_best} instead, the newer checkpoint: '
              f'{int(gan.n_images.numpy()):,} images seen, best FID {float(best_fid_var):.3f}')
    step = int(gan.n_images.numpy()) // conf.batch_size
    saved_step = step
    batch = conf.batch_size
    log.rewind(step * batch)  # records after the checkpoint are of steps a kill undid
    # Learning-rate halvings by NaN restores so far: checkpoints hold the halved rates.
    nan_restores = int(round(np.log2(conf.g_lr / float(np.asarray(
        gan.g_optimizer.learning_rate)))))

    def non_finite_names(metrics):
        """Non-finite losses and weights; weights too, as a step's losses are computed before
        its update, which may already have made them NaN."""
        named = dict(metrics)
        for net in (gan.generator, gan.ema_generator, gan.discriminator):
            named.update((weight.path, weight) for weight in net.weights)
        return utils.non_finite_names(named)

    def divergence_report(bad_names):
        shown = ', '.join(bad_names[:3]) + (f' and {len(bad_names) - 3} more'
                                            if len(bad_names) > 3 else '')
        return f'non-finite {shown} at step {step} ({step * batch:,} images)'

    def restore_or_stop(bad_names, may_restore=True):
        """Restore the last checkpoint at halved learning rates (at most nan_retries times in
        all), or raise TrainingDivergedError naming the step and the last good checkpoint."""
        nonlocal step, saved_step, nan_restores, interval_start, interval_images
        what = divergence_report(bad_names)
        last_good = latest_manager.latest_checkpoint
        if not may_restore or last_good is None or nan_restores >= conf.nan_retries:
            tried = (f' after {nan_restores} restore(s) at halved learning rates'
                     if nan_restores else '')
            where = (f'the last good checkpoint is {last_good}' if last_good
                     else 'no checkpoint was saved before it')
            raise utils.TrainingDivergedError(
                f'Training diverged: {what}{tried}; {where}; start a new --model_dir with '
                'lower g_lr and d_lr, or with --set nan_retries=N to restore and halve them '
                'automatically.')
        ckpt.restore(last_good).assert_existing_objects_matched()
        nan_restores += 1
        for optimizer, base_lr in ((gan.g_optimizer, conf.g_lr), (gan.d_optimizer, conf.d_lr)):
            optimizer.learning_rate = base_lr / 2 ** nan_restores
        step = saved_step = int(gan.n_images.numpy()) // batch
        log.rewind(step * batch)
        bar.n = step * batch
        bar.refresh()
        interval_start, interval_images = time.perf_counter(), 0
        tqdm.write(f'{what}: restored {last_good} with the learning rates halved to '
                   f'g_lr={conf.g_lr / 2 ** nan_restores:.3g}, '
                   f'd_lr={conf.d_lr / 2 ** nan_restores:.3g} '
                   f'(restore {nan_restores} of at most {conf.nan_retries})')

    data_iter = iter(dataset)
    bar = tqdm(total=options['total_iter'] and options['total_iter'] * batch, initial=step * batch, unit='img', unit_scale=True,
               dynamic_ncols=True, desc='train')
    interval_start, interval_images = time.perf_counter(), 0
    try:
        while step < total_iter and stop['signal'] is None:
            metrics = gan.train_step(next(data_iter))
            step += 1
            bar.update(batch)
            interval_images += batch
            n_images = step * batch
            log_now = step % options['metrics_inter'] == 0 or step == total_iter
            save_now = (fid_inter and step % fid_inter == 0) or step % ckpt_inter == 0
            # Checked before every log and save, so no NaN model is saved, as best or at all.
            if log_now or save_now:
                bad_names = non_finite_names(metrics)
                if bad_names:
                    restore_or_stop(bad_names)
                    continue
            if log_now:
                values = {k: float(v) for k, v in metrics.items()}
                images_per_sec = interval_images / (time.perf_counter() - interval_start)
                log.log(n_images, images_per_sec=images_per_sec, **values)
                bar.set_postfix(d=f'{values["d_loss"]:.3f}', g=f'{values["g_loss"]:.3f}',
                                gp=f'{values["gp"]:.4f}')
                interval_start, interval_images = time.perf_counter(), 0
            if save_now:
                evaluate_and_save(n_images, with_fid=bool(fid_inter) and step % fid_inter == 0)
                saved_step = step
                interval_start, interval_images = time.perf_counter(), 0
        if stop['signal'] is not None:
            # Nothing to save when no step ran since the last save (and saving the same
            # number again would rewrite that complete checkpoint in place).
            if step != saved_step:
                bad_names = non_finite_names(metrics)
                if bad_names:
                    restore_or_stop(bad_names, may_restore=False)
                latest_manager.save(step * batch)
            tqdm.write(f'Stopped on signal {stop["signal"]}; the checkpoint at '
                       f'{step * batch:,} images is saved')
        elif step != saved_step:
            evaluate_and_save(step * batch, with_fid=bool(fid_inter))
    finally:
        bar.close()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    print(f'Done: {step * batch:,} images seen; run folder {model_dir}')
    return gan


def broadcast_from_chief(strategy, value, chief):
    """The chief's float `value`, on every worker of a multi-worker run (else unchanged)."""
    if getattr(strategy, 'cluster_resolver', None) is None:
        return value
    local_replicas = len(strategy.extended.worker_devices)
    share = tf.constant((value if chief else 0.0) / local_replicas, tf.float32)

    @tf.function
    def all_sum(x):
        per_replica = strategy.run(lambda: tf.identity(x))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    return float(all_sum(share))


def make_fid_evaluator(conf, eval_source, model_dir):
    """A callable generator -> FID, or None (with one printed line) when FID cannot run."""
    import fid as fid_lib
    try:
        evaluator = fid_lib.FIDEvaluator(
            backbone=conf.fid_backbone, real_source=eval_source, img_size=conf.img_size,
            n_real=conf.n_fid_real, n_gen=conf.n_fid_gen, batch_size=conf.fid_batch_size,
            cache_dir=os.path.join(model_dir, 'fid-stats'), center_crop=conf.center_crop)
    except (utils.UserError, fid_lib.FIDError, OSError, RuntimeError) as err:
        tqdm.write(f'FID disabled: {err}')
        return None

    def evaluate(generator):
        # The same seeded noise at every evaluation: FID moves only because the generator does.
        sample = fid_lib.make_sample_fn(generator, conf.noise_dim, seed=conf.seed)
        return evaluator.evaluate(sample, gen_batch_size=conf.gen_batch_size)
    return evaluate


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
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='override a config key (repeatable), e.g. --set batch_size=64')
    parser.add_argument('--seed', type=int, default=None, help='shortcut for --set seed=N')
    parser.add_argument('--dry_run', action='store_true',
                        help='print the resolved config and exit')
    parser.add_argument('--strategy', default='auto', choices=STRATEGIES,
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


def main(argv=None):
    args = parse_args(argv)
    try:
        conf, resumed = resolve_config(args)
        if args.dry_run:
            print(conf.to_json())
            return 0
        options, record = resolve_run_options(args, resumed)
        # Bad input is refused here, before anything in --model_dir is created or changed.
        try:
            check_data(options, conf)
        except utils.UserError as err:
            recorded = [f'--{name}' for name in utils.RECORDED_PATHS
                        if options[name] is not None and getattr(args, name) is None]
            if not recorded:
                raise
            raise utils.UserError(f'{err} ({" and ".join(recorded)} as recorded in '
                                  f'{os.path.join(args.model_dir, utils.RUN_RECORD)}: give '
                                  'the data\'s new place on the command line)') from None
        # Multi-worker strategies must exist before any other TensorFlow op runs.
        strategy = make_strategy(args.strategy)
        if resumed:
            utils.check_run_checkpoints(args.model_dir, conf)
        # Weights are drawn from Keras' global seed, so --seed must set it for runs to repeat.
        keras.utils.set_random_seed(conf.seed)
        train(conf, args.model_dir, options, record, strategy)
    except (utils.UserError, config_lib.ConfigError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except utils.TrainingDivergedError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


def check_data(options, conf):
    """Refuse missing, empty or too small training and FID image sets (UserError); the built-in
    demo set (file_pattern None) is large enough."""
    file_pattern, eval_dir = options['file_pattern'], options['eval_dir']
    if file_pattern is not None:
        utils.check_train_images(file_pattern, conf.img_size, conf.batch_size, conf.center_crop)
    fid_source = eval_dir or file_pattern
    if options['fid_inter'] and fid_source is not None:
        utils.check_fid_images(fid_source, conf.n_fid_real,
                               '--eval_dir' if eval_dir else '--file_pattern')


if __name__ == '__main__':
    sys.exit(main())
