"""The GAN objective and its training step: LadaGAN.

One `train_step` is one discriminator update (adversarial loss, R1 on the DiffAugment-ed reals,
or bCR), then one generator update with fresh noise, then the EMA of the generator, as the
official trainer does. The losses, R1, bCR, the EMA and float16 loss scaling live here; the
augmentations are in diffaug.py, the networks in model.py.
"""

import contextlib
import types
import warnings

import keras
import numpy as np
import tensorflow as tf
# TensorFlow's gradient registry has no public API; see forget_custom_gradients.
from tensorflow.python.framework import ops as tf_ops

import diffaug
import model as model_lib


def as_float_images(images):
    """Real images as the step computes with them: float32 in [-1, 1]. The input pipeline's
    uint8 batches are scaled here, on the device, as the official code scales its inputs
    (x / 127.5 - 1); float images (the authors' fixtures, a user's own tensors) pass as given."""
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 127.5 - 1.0
    return tf.cast(images, tf.float32)


def mse(a, b):
    return tf.reduce_mean(tf.square(a - b))


def get_loss(name):
    """(generator_loss, discriminator_loss) for 'nsl', 'hinge' or 'rahinge'.

    Both take (real_logits, fake_logits), each (B, 25) float32, and return a scalar; the
    non-relativistic generator losses ignore real_logits. Means run over batch and logits.
    """
    mean = tf.reduce_mean
    if name == 'nsl':  # non-saturating logistic
        def d_loss(real_logits, fake_logits):
            return mean(tf.nn.softplus(-real_logits)) + mean(tf.nn.softplus(fake_logits))

        def g_loss(real_logits, fake_logits):
            return mean(tf.nn.softplus(-fake_logits))
    elif name == 'hinge':
        def d_loss(real_logits, fake_logits):
            return mean(tf.nn.relu(1.0 - real_logits)) + mean(tf.nn.relu(1.0 + fake_logits))

        def g_loss(real_logits, fake_logits):
            return -mean(fake_logits)
    elif name == 'rahinge':
        # Relativistic average hinge (as FAGAN): each logit against the other side's batch
        # mean, taken per logit position of the 5x5 map.
        def _relative(real_logits, fake_logits):
            return (real_logits - mean(fake_logits, axis=0, keepdims=True),
                    fake_logits - mean(real_logits, axis=0, keepdims=True))

        def d_loss(real_logits, fake_logits):
            real_rel, fake_rel = _relative(real_logits, fake_logits)
            return mean(tf.nn.relu(1.0 - real_rel)) + mean(tf.nn.relu(1.0 + fake_rel))

        def g_loss(real_logits, fake_logits):
            real_rel, fake_rel = _relative(real_logits, fake_logits)
            return mean(tf.nn.relu(1.0 + real_rel)) + mean(tf.nn.relu(1.0 - fake_rel))
    else:
        raise ValueError(f'loss={name!r} is not supported: use nsl, hinge or rahinge')
    return g_loss, d_loss


class Adam(keras.optimizers.Adam):
    """Keras's Adam, value for value, with the scalars every variable's update shares (the
    bias-corrected step size, from the learning rate and the step count, and the constants)
    made once per update instead of once per variable. Without Grappler (off on a CPU)
    nothing merges those copies: they were 2,380 of the tiny preset's 13,833 step operations,
    each traced and run; an update's graph is less than 0.6 times Keras's. The per-variable
    arithmetic is Keras's, in its order, so every bit is the same
    (tests/test_gan.py::test_our_adam_is_keras_adam_bit_for_bit)."""

    def apply(self, grads, trainable_variables=None):
        # One update: the shared scalars are made on its first variable of each device and
        # dtype (a mirrored variable updates once per device, in that device's scope), kept in
        # a plain holder that neither TensorFlow nor Keras tracks into checkpoints, and dropped
        # when the update is built: the next one (another graph, another step) makes its own.
        self._update_scalars = types.SimpleNamespace(by_key={})
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._update_scalars = None

    def _shared(self, learning_rate, dtype):
        """The update's scalars: alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) at
        t = iterations + 1, and the constants 1 - beta_1, 1 - beta_2 and epsilon."""
        lr = keras.ops.cast(learning_rate, dtype)
        local_step = keras.ops.cast(self.iterations + 1, dtype)
        beta_1_power = keras.ops.power(keras.ops.cast(self.beta_1, dtype), local_step)
        beta_2_power = keras.ops.power(keras.ops.cast(self.beta_2, dtype), local_step)
        alpha = lr * keras.ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        return alpha, *(keras.ops.convert_to_tensor(value, dtype)
                        for value in (1 - self.beta_1, 1 - self.beta_2, self.epsilon))

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            raise ValueError('amsgrad is not supported here')
        key = (variable.dtype, getattr(variable, 'device', None))
        holder = getattr(self, '_update_scalars', None)
        scalars = holder.by_key if holder is not None else {}  # outside apply: nothing shared
        if key not in scalars:
            scalars[key] = self._shared(learning_rate, variable.dtype)
        alpha, one_minus_beta_1, one_minus_beta_2, epsilon = scalars[key]
        gradient = keras.ops.cast(gradient, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, keras.ops.multiply(keras.ops.subtract(gradient, m), one_minus_beta_1))
        self.assign_add(v, keras.ops.multiply(
            keras.ops.subtract(keras.ops.square(gradient), v), one_minus_beta_2))
        self.assign_sub(variable, keras.ops.divide(
            keras.ops.multiply(m, alpha), keras.ops.add(keras.ops.sqrt(v), epsilon)))


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
        """Apply the unscaled gradients, or skip them; returns whether they were applied.

        With several replicas, on one worker or several, the decision is taken once, in
        cross-replica context, from whether any replica of any worker has a non-finite gradient
        (a count reduced over every replica of every worker), so one replica's overflow skips
        the update on all and every loss scale stays equal. Each worker deciding from its own
        replicas let one worker enter the optimizer's all-reduce while another skipped to the
        next collective: both waited for good (#36). (Cross-replica, as the branch that applies
        may call the optimizer's merge_call, which a conditional in replica context cannot.)"""
        if not self.enabled:
            optimizer.apply_gradients(zip(scaled_grads, variables))
            return tf.constant(True)
        grads = [tf.cast(g, tf.float32) / self.scale_var for g in scaled_grads]
        replica_context = tf.distribute.get_replica_context()
        if replica_context is None or replica_context.num_replicas_in_sync == 1:
            return self._apply_or_skip(_all_finite(grads),
                                       lambda: optimizer.apply_gradients(zip(grads, variables)))

        def cross_replica(strategy, grads):
            each_replica = strategy.extended.call_for_each_replica
            # () float32: how many replicas, of every worker, overflowed (an all-reduce that
            # crosses workers).
            overflowed = strategy.reduce(tf.distribute.ReduceOp.SUM,
                                         each_replica(_count_overflow, args=(grads,)), axis=None)

            def apply_gradients():
                return each_replica(lambda g: optimizer.apply_gradients(zip(g, variables)),
                                    args=(grads,))
            return self._apply_or_skip(overflowed == 0.0, apply_gradients)
        return replica_context.merge_call(cross_replica, args=(grads,))

    def _apply_or_skip(self, finite, apply_gradients):
        def apply_and_maybe_grow():
            apply_gradients()
            grow = self.finite_steps + 1 >= self.growth_interval
            self.scale_var.assign(tf.where(grow, self.scale_var * 2.0, self.scale_var))
            self.finite_steps.assign(tf.where(grow, tf.constant(0, tf.int64),
                                              self.finite_steps + 1))
            return tf.constant(True)

        def skip_and_shrink():
            self.scale_var.assign(tf.maximum(self.scale_var / 2.0, 1.0))
            self.finite_steps.assign(0)
            return tf.constant(False)

        return tf.cond(finite, apply_and_maybe_grow, skip_and_shrink)


def _all_finite(tensors):
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


def _count_overflow(tensors):
    """1.0 when any of `tensors` is not finite, else 0.0: summed over the replicas."""
    return tf.cast(tf.logical_not(_all_finite(tensors)), tf.float32)


def use_xla(jit):
    """The config's `jit` as a bool: 'auto' is XLA when a GPU or TPU is visible. On a CPU,
    TensorFlow's oneDNN kernels run the step 13 to 27% faster than XLA:CPU (README, Performance)."""
    if jit != 'auto':
        return jit
    return bool(tf.config.list_logical_devices('GPU') or tf.config.list_logical_devices('TPU'))


def repeatable_graph(xla):
    """Whether the step runs without Grappler's graph rewrites: on a CPU without XLA. With them,
    one step of the demo model in two processes ends with different weights (one rounding
    apart; eager forward and backward repeat, one thread each still differs, and no single
    one of 11 Grappler passes switched off makes it repeat); without them it repeats, at the
    same speed on a CPU (docs/determinism.md). GPUs keep them (layout and fusion rewrites)."""
    return not xla and not (tf.config.list_logical_devices('GPU')
                            or tf.config.list_logical_devices('TPU'))


@contextlib.contextmanager
def graph_rewrites_off(active=True):
    """Graph functions called inside run as optimised without Grappler's rewrites. The setting
    is the process's, so it is put back on leaving (as an explicit False where it was unset,
    which means the same): other graphs (the FID network, an export) are optimised as usual.
    TensorFlow keeps one optimised instance of a function per setting, so going in and out
    costs nothing after the first step."""
    if not active:
        yield
        return
    before = tf.config.optimizer.get_experimental_options().get('disable_meta_optimizer', False)
    tf.config.optimizer.set_experimental_options({'disable_meta_optimizer': True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({'disable_meta_optimizer': before})


def forget_custom_gradients(first_uid):
    """Drop the gradient functions that tf.custom_gradient registered after `first_uid` (an
    `ops.uid()` taken before a step was traced). Traced in graph mode, tf.custom_gradient
    registers each gradient function in TensorFlow's process-wide gradient registry for good,
    and that function holds tensors of the graph it was traced in (tensorflow/tensorflow#97697):
    every traced step stayed in memory after its LadaGAN was gone, 190 MB for the tiny
    preset's step. Ours come from Keras's all_reduce of the optimizers' gradients and of the
    synchronized BatchNorm's moments, one replica or several; the step's gradients are taken
    while it is traced, so they are never looked up after. (Another thread tracing a custom
    gradient at the same moment would lose its own; LadaGAN is not traced that way.)"""
    global _registry_missing_warned
    registry = getattr(getattr(tf_ops, '_gradient_registry', None), '_registry', None)
    if not isinstance(registry, dict):  # TensorFlow moved it: say so once, and train on
        if not _registry_missing_warned:
            _registry_missing_warned = True
            warnings.warn('this TensorFlow keeps its gradient registry elsewhere than '
                          'tensorflow.python.framework.ops._gradient_registry._registry: each '
                          'traced training step stays in memory until the process ends '
                          '(tensorflow/tensorflow#97697)')
        return
    prefix = 'CustomGradient-'
    for name in [name for name in registry if name.startswith(prefix)]:
        if name[len(prefix):].isdigit() and int(name[len(prefix):]) > first_uid:
            del registry[name]


_registry_missing_warned = False  # forget_custom_gradients' warning, once per process


# `train.py --fast`: what the time-to-FID experiment showed to reach the official recipe's FID
# sooner (docs/faster-training.md). Not the official recipe: the presets do not use it.
FAST_SETTINGS = {'r1_interval': 16}


class LadaGAN(tf.Module):
    """Generator, EMA generator, discriminator, their optimizers and one compiled train step.

    `train_step(real_images, d_noise=None, g_noise=None, real_labels=None)` runs one
    discriminator update, then one generator update with fresh noise, then the EMA update, as
    the official trainer does. Noise is drawn from `self.rng` (checkpointed) unless given. A
    class-conditional GAN (conf.num_classes) takes the real images' labels, and draws the classes
    G makes from the training set's `class_frequencies` with the same RNG.
    """

    def __init__(self, generator, discriminator, conf, ema_generator=None, strategy=None,
                 class_frequencies=None):
        super().__init__(name='ladagan')
        self.conf = conf
        # The classes G is trained on are drawn as often as the training set holds them.
        frequencies = np.ones(conf.num_classes) if class_frequencies is None else np.asarray(
            class_frequencies, np.float64)
        self.class_cdf = (tf.constant(np.cumsum(frequencies) / frequencies.sum(), tf.float32)
                          if conf.num_classes else None)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.num_replicas = self.strategy.num_replicas_in_sync
        self.generator = generator
        self.discriminator = discriminator
        with self.strategy.scope():
            self._init_state(ema_generator)
        # Several replicas: collectives inside the update keep XLA out of the replica function.
        self.xla = use_xla(conf.jit) and self.num_replicas == 1
        self.repeatable = repeatable_graph(self.xla)
        # No AutoGraph: the step's control flow is Python's (with_r1 and the config are Python
        # values), so converting its source, and every layer's it calls, is pure cost: about
        # 1 s of the 6-8 s each LadaGAN's first step takes to trace on a CPU (the tiny preset).
        if self.num_replicas == 1:
            self._compiled_step = tf.function(self._single_device_step, jit_compile=self.xla,
                                              autograph=False)
        else:
            self._compiled_step = tf.function(self._distributed_step, autograph=False)

    def _init_state(self, ema_generator):
        """EMA generator, optimizers, loss scales, RNG and counters: under the strategy scope."""
        conf, generator, discriminator = self.conf, self.generator, self.discriminator
        if ema_generator is None:
            # The official code's EMA starts from a fresh random init (a clone_model quirk);
            # ours starts as an exact copy of G.
            ema_generator = model_lib.build_generator(conf, name='ema_generator',
                                                      initialize=False)
            for ema_weight, weight in zip(ema_generator.weights, generator.weights):
                ema_weight.assign(weight)
        self.ema_generator = ema_generator
        self.g_optimizer = Adam(conf.g_lr, conf.g_beta1, conf.g_beta2, epsilon=1e-7)
        self.d_optimizer = Adam(conf.d_lr, conf.d_beta1, conf.d_beta2, epsilon=1e-7)
        # float16 gradients underflow without dynamic loss scaling (bfloat16 needs none).
        self.loss_scaling = conf.precision == 'mixed_float16'
        self.g_loss_scale = DynamicLossScale(enabled=self.loss_scaling, name='g_loss_scale')
        self.d_loss_scale = DynamicLossScale(enabled=self.loss_scaling, name='d_loss_scale')
        # FreezeD: D's first freeze_d blocks are not in its optimizer; R1 and the losses still
        # differentiate through them, to the blocks that train.
        frozen = model_lib.frozen_weight_paths(discriminator, conf.freeze_d)
        self.d_train_vars = [weight for weight in discriminator.trainable_variables
                             if weight.path not in frozen]
        self.g_optimizer.build(generator.trainable_variables)
        self.d_optimizer.build(self.d_train_vars)
        self.g_loss_fn, self.d_loss_fn = get_loss(conf.loss)
        self.policy = conf.policy
        diffaug.parse_policy(self.policy)  # fail now, not inside the trace
        self.rng = tf.random.Generator.from_seed(conf.seed)
        self.n_images = tf.Variable(0, dtype=tf.int64, trainable=False, name='n_images')
        # Steps with a float16 update skipped for overflowing gradients (loss scaling).
        self.skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                         name='skipped_steps')
        # D updates so far: lazy R1 (r1_interval) takes the penalty on every k-th one.
        self.d_updates = tf.Variable(0, dtype=tf.int64, trainable=False, name='d_updates')
        self.host_d_updates = None  # d_updates as the host knows it (r1_due); None: read it
        self.took_r1 = False  # whether the last train_step took R1

    # ------------------------------------------------------------------ pieces of the step
    def augment(self, images):
        return diffaug.DiffAugment(images, self.policy, rng=self.rng)

    def r1_penalty(self, real_images, weight=None, labels=None):
        """D(real) logits and weight * mean_b sum ||d sum(D(x_b)) / d x_b||^2 (no 1/2), with
        weight gp_weight by default (of the images' own classes when conditional).

        Under float16 the input gradient is taken of the loss-scaled logits and unscaled in
        float32: unscaled, the small per-pixel gradients underflow and R1 silently becomes 0."""
        scale = self.d_loss_scale.scale
        with tf.GradientTape() as r1_tape:
            r1_tape.watch(real_images)
            real_logits = self.discriminator(real_images, training=True, labels=labels)
            scaled_logits = real_logits * scale
        grads = tf.cast(r1_tape.gradient(scaled_logits, real_images), tf.float32) / scale
        penalty = tf.reduce_sum(tf.square(grads), axis=[1, 2, 3])  # (B,)
        weight = self.conf.gp_weight if weight is None else weight
        return real_logits, weight * tf.reduce_mean(penalty)

    def real_logits_and_r1(self, real_images, with_r1, labels=None):
        """D(real) logits and the step's R1 term: gp_weight * r1_interval times the penalty on
        the updates that take it (every one by default), else 0 and no double backward."""
        if not with_r1:
            return (self.discriminator(real_images, training=True, labels=labels),
                    tf.constant(0.0))
        return self.r1_penalty(real_images, self.conf.gp_weight * self.conf.r1_interval, labels)

    def r1_due(self):
        """Whether the next D update takes R1: with r1_interval k, the last of every k updates
        (StyleGAN2's lazy regularisation, weighted by k). Decided here, outside the compiled
        step, because XLA cannot differentiate through a conditional, from a host-side copy of
        the checkpointed counter d_updates (reading the variable every step would wait for the
        previous step on a GPU); restore_checkpoint() makes it read the counter again."""
        interval = self.conf.r1_interval
        if interval == 1:
            return True
        if self.host_d_updates is None:
            self.host_d_updates = int(self.d_updates.numpy())
        self.host_d_updates += 1
        return self.host_d_updates % interval == 0

    def _draw_noise(self, noise, batch_size):
        if noise is not None:
            return tf.convert_to_tensor(noise, tf.float32)
        return self.rng.normal([batch_size, self.conf.noise_dim])

    def draw_labels(self, batch_size):
        """int32 (B,): classes for G, drawn with the run's RNG in proportion to the training
        set's class frequencies; None for an unconditional GAN (which draws nothing, so that
        its random streams are those of before classes existed)."""
        if not self.conf.num_classes:
            return None
        uniform = self.rng.uniform([batch_size])
        labels = tf.searchsorted(self.class_cdf, uniform, side='right', out_type=tf.int32)
        return tf.minimum(labels, self.conf.num_classes - 1)

    def _d_logits_and_penalties(self, real_images, real_labels, d_noise, d_labels, with_r1):
        """D's logits on this replica's reals and on fakes from `d_noise`, R1 (gp) and bCR's
        consistency (cr), as the D step's tape records them."""
        conf = self.conf
        fake_images = self.generator(d_noise, training=True, labels=d_labels)[0]
        if conf.bcr:
            # bCR: adversarial loss and R1 on clean images; consistency between D(x) and
            # D(T(x)) with the augmented batch (real and fake together) stop-gradient.
            fake_logits = self.discriminator(fake_images, training=True, labels=d_labels)
            real_logits, gp = self.real_logits_and_r1(real_images, with_r1, real_labels)
            augmented = tf.stop_gradient(tf.concat(
                [self.augment(real_images), self.augment(fake_images)], axis=0))
            both_labels = None if real_labels is None else tf.concat(
                [real_labels, d_labels], axis=0)
            augmented_logits = self.discriminator(augmented, training=True,
                                                  labels=both_labels)
            real_aug_logits, fake_aug_logits = tf.split(augmented_logits, 2, axis=0)
            cr = conf.cr_weight * (mse(real_logits, real_aug_logits)
                                   + mse(fake_logits, fake_aug_logits))
        else:
            fake_augmented = self.augment(fake_images)
            real_augmented = self.augment(real_images)
            fake_logits = self.discriminator(fake_augmented, training=True, labels=d_labels)
            # R1 on the AUGMENTED reals, as the official code.
            real_logits, gp = self.real_logits_and_r1(real_augmented, with_r1, real_labels)
            cr = tf.constant(0.0)
        return real_logits, fake_logits, gp, cr

    def _update(self, real_images, d_noise=None, g_noise=None, with_r1=True, real_labels=None):
        """One D step (with R1 when `with_r1`) then one G step on this replica's share of the
        batch. Gradients are summed over replicas by the optimizer, so the losses are divided
        by the replica count: the update is that of the mean over the global batch."""
        conf = self.conf
        per_replica = 1.0 / self.num_replicas
        real_images = as_float_images(real_images)
        batch_size = tf.shape(real_images)[0]
        d_noise = self._draw_noise(d_noise, batch_size)
        d_labels = self.draw_labels(batch_size)
        d_vars = self.d_train_vars
        g_vars = self.generator.trainable_variables

        # --- discriminator step. Real and fake go through D as separate calls (as the official
        # code), so each gets its own batch-norm statistics.
        with tf.GradientTape() as d_tape:
            real_logits, fake_logits, gp, cr = self._d_logits_and_penalties(
                real_images, real_labels, d_noise, d_labels, with_r1)
            d_loss = self.d_loss_fn(real_logits, fake_logits)
            d_total = d_loss + gp + cr
            scaled_d_total = d_total * (self.d_loss_scale.scale * per_replica)
        d_grads = d_tape.gradient(scaled_d_total, d_vars)
        d_applied = self.d_loss_scale.apply(self.d_optimizer, d_grads, d_vars)

        # --- generator step with fresh noise.
        g_noise = self._draw_noise(g_noise, batch_size)
        g_labels = self.draw_labels(batch_size)
        with tf.GradientTape() as g_tape:
            fake_images = self.generator(g_noise, training=True, labels=g_labels)[0]
            if conf.bcr:
                g_fake_logits = self.discriminator(fake_images, training=True, labels=g_labels)
                g_real = real_images
            else:
                g_fake_logits = self.discriminator(self.augment(fake_images), training=True,
                                                   labels=g_labels)
                g_real = None if conf.loss != 'rahinge' else self.augment(real_images)
            # Only the relativistic loss needs D(real) in the generator step.
            g_real_logits = (self.discriminator(g_real, training=True, labels=real_labels)
                             if conf.loss == 'rahinge' else None)
            g_loss = self.g_loss_fn(g_real_logits, g_fake_logits)
            scaled_g_loss = g_loss * (self.g_loss_scale.scale * per_replica)
        g_grads = g_tape.gradient(scaled_g_loss, g_vars)
        g_applied = self.g_loss_scale.apply(self.g_optimizer, g_grads, g_vars)

        return {'d_loss': d_loss, 'gp': gp, 'g_loss': g_loss, 'd_total': d_total, 'cr': cr,
                'real_logits_mean': tf.reduce_mean(real_logits),
                'fake_logits_mean': tf.reduce_mean(fake_logits),
                **self._loss_scaling_metrics(d_applied, g_applied)}

    def _loss_scaling_metrics(self, d_applied, g_applied):
        """Under float16: whether this step skipped an update, the count so far, the scales
        after it. A skipped update (gradients overflowed) left its weights untouched and halved
        its scale: its losses may be non-finite without anything having gone wrong."""
        if not self.loss_scaling:
            return {}
        skipped = tf.logical_not(tf.logical_and(d_applied, g_applied))
        return dict(step_skipped=tf.cast(skipped, tf.float32),
                    d_loss_scale=tf.identity(self.d_loss_scale.scale_var),
                    g_loss_scale=tf.identity(self.g_loss_scale.scale_var))

    def _count_skipped(self, metrics):
        """Add a skipped step to skipped_steps (in cross-replica context: every replica took
        the same decision) and report the count."""
        if self.loss_scaling:
            self.skipped_steps.assign_add(tf.cast(metrics['step_skipped'] > 0, tf.int64))
            metrics['skipped_steps'] = tf.cast(self.skipped_steps, tf.float32)
        return metrics

    def _update_ema_and_count(self, global_batch_size):
        """EMA over all generator weights, batch-norm statistics included (cross-replica)."""
        decay = self.conf.ema_decay
        for ema_weight, weight in zip(self.ema_generator.weights, self.generator.weights):
            ema_weight.assign(decay * ema_weight + (1.0 - decay) * weight)
        self.n_images.assign_add(tf.cast(global_batch_size, tf.int64))
        self.d_updates.assign_add(1)

    def _single_device_step(self, real_images, d_noise=None, g_noise=None, with_r1=True,
                            real_labels=None):
        real_images = as_float_images(real_images)
        metrics = self._update(real_images, d_noise, g_noise, with_r1, real_labels)
        self._update_ema_and_count(tf.shape(real_images)[0])
        return self._count_skipped(metrics)

    def _distributed_step(self, real_images, d_noise=None, g_noise=None, with_r1=True,
                          real_labels=None):
        per_replica = self.strategy.run(self._update,
                                        args=(real_images, d_noise, g_noise, with_r1, real_labels))
        metrics = {key: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                   for key, value in per_replica.items()}
        local_batch = self.strategy.run(lambda images: tf.shape(images)[0], (real_images,))
        self._update_ema_and_count(
            self.strategy.reduce(tf.distribute.ReduceOp.SUM, local_batch, axis=None))
        return self._count_skipped(metrics)

    def distribute(self, global_tensor):
        """Split a global batch (or noise) into per-replica shards along axis 0."""
        if global_tensor is None or self.num_replicas == 1:
            return global_tensor
        global_tensor = tf.convert_to_tensor(global_tensor)
        if global_tensor.dtype.is_floating:  # float images and noise in float32; uint8
            global_tensor = tf.cast(global_tensor, tf.float32)  # images, integer labels kept
        per_replica = global_tensor.shape[0] // self.num_replicas

        def shard(context):
            start = context.replica_id_in_sync_group * per_replica
            return global_tensor[start:start + per_replica]
        return self.strategy.experimental_distribute_values_from_function(shard)

    def train_step(self, real_images, d_noise=None, g_noise=None, real_labels=None):
        """One D step, one G step, one EMA update; returns the step's metrics (tensors).

        `real_images`: uint8 batches (the input pipeline's) or float images in [-1, 1];
        `real_labels` (int32, a conditional GAN's): their classes. With several replicas, they
        may be per-replica values from a distributed dataset or global batches, which are split
        evenly (as are given noises)."""
        if self.conf.num_classes and real_labels is None:
            raise ValueError('a class-conditional LadaGAN trains on labelled images: pass '
                             'real_labels')
        if self.num_replicas > 1 and not isinstance(real_images, tf.distribute.DistributedValues):
            real_images = self.distribute(real_images)
            real_labels = self.distribute(real_labels)
        # with_r1 is a Python bool: one compiled step with R1 and, with lazy R1, one without.
        self.took_r1 = self.r1_due()
        traces, first_uid = self._compiled_step.experimental_get_tracing_count(), tf_ops.uid()
        finished = False
        try:
            with graph_rewrites_off(self.repeatable):
                metrics = self._compiled_step(real_images, self.distribute(d_noise),
                                              self.distribute(g_noise), self.took_r1,
                                              real_labels)
            finished = True
        finally:  # a new trace, or a call that failed (out of memory at too large a batch,
            # retried in a notebook): release its graph with the GAN
            if not finished or self._compiled_step.experimental_get_tracing_count() != traces:
                forget_custom_gradients(first_uid)
        return metrics

    def checkpoint_objects(self, **extra):
        """{name: object} of a checkpoint: the official layout, plus our optimizer, RNG and
        counter state (and `extra`)."""
        return dict(generator=self.generator, ema_generator=self.ema_generator,
                    discriminator=self.discriminator, g_optimizer=self.g_optimizer,
                    d_optimizer=self.d_optimizer, n_images=self.n_images, rng=self.rng,
                    d_updates=self.d_updates, g_loss_scale=self.g_loss_scale,
                    d_loss_scale=self.d_loss_scale, skipped_steps=self.skipped_steps, **extra)

    def checkpoint(self, **extra):
        """A tf.train.Checkpoint of checkpoint_objects()."""
        return tf.train.Checkpoint(**self.checkpoint_objects(**extra))


def restore_checkpoint(ladagan, objects, prefix):
    """Restore {name: object} (ladagan.checkpoint_objects(...)) from the checkpoint `prefix`.
    Every value in the checkpoint must find its object; an object the checkpoint lacks (state
    added to the code after an older run wrote it, e.g. d_updates) keeps its initial value."""
    stored = {name.split('/')[0] for name, _ in tf.train.list_variables(prefix)}
    present = {name: obj for name, obj in objects.items() if name in stored}
    tf.train.Checkpoint(**present).restore(prefix).assert_existing_objects_matched()
    ladagan.host_d_updates = None  # counters changed under the host's copy
