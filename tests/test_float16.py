"""float16 training: the loss scale's rules, the demo model's run through its overflows, and
R1's gradient under float16 loss scaling against float32 (docs/precision.md). One float16 run
serves the last two."""
import glob
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import config  # noqa: E402
import diffaug  # noqa: E402
import gan  # noqa: E402
import model  # noqa: E402
from test_robustness import TRAIN, _latest, _metrics, _weights_finite  # noqa: E402


def test_the_loss_scale_skips_and_halves_on_an_overflow_and_doubles_after_its_interval():
    """gan.DynamicLossScale on one device: gradients come of loss x scale. A non-finite one skips
    the update (the variable untouched) and halves the scale, never below 1; finite ones are
    applied unscaled, and growth_interval of them in a row double the scale."""
    variable = tf.Variable([1.0, 2.0])
    optimizer = keras.optimizers.SGD(learning_rate=0.5)
    scaler = gan.DynamicLossScale(enabled=True, initial_scale=4.0, growth_interval=2)

    def update(grad):
        """Whether the update of the unscaled gradient `grad` was applied."""
        return bool(scaler.apply(optimizer, [tf.constant(grad) * scaler.scale], [variable]))
    assert not update([np.inf, 1.0])
    assert variable.numpy().tolist() == [1.0, 2.0] and float(scaler.scale_var) == 2.0
    assert update([1.0, -2.0])  # sent as [2, -4], applied as [1, -2]
    assert variable.numpy().tolist() == [0.5, 3.0] and float(scaler.scale_var) == 2.0
    assert update([0.0, 0.0])  # the second finite update in a row: the scale doubles
    assert float(scaler.scale_var) == 4.0 and int(scaler.finite_steps) == 0
    scaler.scale_var.assign(1.0)
    assert not update([np.nan, 0.0])
    assert float(scaler.scale_var) == 1.0 and variable.numpy().tolist() == [0.5, 3.0]
    # Disabled (float32, bfloat16), the scale is a constant 1 and every update is applied.
    unscaled = gan.DynamicLossScale(enabled=False)
    assert float(unscaled.scale) == 1.0
    assert bool(unscaled.apply(optimizer, [tf.constant([1.0, 1.0])], [variable]))
    assert variable.numpy().tolist() == [0.0, 2.5]


@pytest.fixture(scope='module')
def float16_demo_run(tmp_path_factory):
    """The demo model trained 200 steps in float16 through train.py (XLA, every step logged)
    on 96 rendered OpenMoji emoji; batch 4 instead of 32, for a CPU test's time (its first
    updates overflow; 500 steps, which it ran before, cost 2.5 times as long and showed nothing
    more). A process of its own, as a user runs train.py."""
    from conftest import render_emoji_images
    root = tmp_path_factory.mktemp('float16_demo')
    images = render_emoji_images(str(root / 'emoji'), 96, size=32)
    run = str(root / 'run')
    result = subprocess.run(
        [sys.executable, TRAIN, '--preset', 'demo', '--file_pattern', images, '--model_dir', run,
         '--total_iter', '200', '--metrics_inter', '1', '--fid_inter', '0', '--seed', '0',
         '--set', 'precision=mixed_float16', '--set', 'batch_size=4', '--set', 'jit=True'],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return run, images


@pytest.mark.slow
@pytest.mark.xdist_group('float16_demo')  # one run for both
def test_a_float16_demo_run_logs_every_step_and_its_overflows_through_200_steps(
        float16_demo_run):
    """float16 loss scaling starts at 2^15, where R1 overflows: the update is skipped and the
    scale halved until it fits. A skipped step's non-finite R1 is not divergence (before, the
    NaN check at the first logged step stopped the run): the run goes on, counts and logs the
    skipped steps and the loss scales, and writes only finite values."""
    run, _ = float16_demo_run
    records = _metrics(run)
    assert [record['n_images'] for record in records] == list(range(4, 804, 4))
    assert all(np.isfinite(value) for record in records for value in record.values())
    assert records[0]['step_skipped'] == 1 and records[0]['d_loss_scale'] == 2.0 ** 14
    assert 'gp' not in records[0]  # R1 overflowed: not finite, not logged, not a stop
    # Each record adds its own step to the count.
    assert [record['skipped_steps'] for record in records] == list(
        np.cumsum([record['step_skipped'] for record in records]))
    assert records[-1]['step_skipped'] == 0 and records[-1]['gp'] > 0  # fits now
    assert not os.path.exists(os.path.join(run, 'events.jsonl'))  # no restore, no stop
    assert _weights_finite(_latest(os.path.join(run, 'training-checkpoints'))[0])


def _r1_weight_gradient(conf, discriminator_weights, real_images, scale):
    """R1's gradient for D's weights as the step takes it: of the loss-scaled penalty, then
    unscaled in float32 (gan.DynamicLossScale.apply), under conf.precision."""
    generator = model.build_generator(conf, initialize=False)
    discriminator = model.build_discriminator(conf, initialize=False)
    for variable, value in zip(discriminator.weights, discriminator_weights):
        variable.assign(value)
    ladagan = gan.LadaGAN(generator, discriminator, conf)
    ladagan.d_loss_scale.scale_var.assign(scale)
    with tf.GradientTape() as tape:
        _, penalty = ladagan.r1_penalty(real_images)
        scaled_penalty = penalty * ladagan.d_loss_scale.scale
    grads = tape.gradient(scaled_penalty, ladagan.d_train_vars)
    return np.concatenate([(tf.cast(g, tf.float32) / ladagan.d_loss_scale.scale).numpy().ravel()
                           for g in grads])


@pytest.mark.slow
@pytest.mark.xdist_group('float16_demo')  # one run for both
def test_float16_r1_weight_gradient_matches_float32_at_init_and_after_200_steps(
        float16_demo_run):
    """The loss scale cancels in R1's double backward: the adjoint entering D's second backward
    is about 2 * gp_weight * grad / batch, unscaled, in float16. Checked against float32 on the
    same weights and augmented reals: the demo model at initialisation (at the largest scale
    from 2^15 down where the float16 gradient is finite, where loss scaling settles), and
    after the float16 run's 200 steps (at the run's own scale)."""
    run, images = float16_demo_run
    conf32 = config.make_config('demo', batch_size=4, jit=True)
    conf16 = conf32.replace(precision='mixed_float16')
    files = sorted(glob.glob(os.path.join(images, '*.png')))[:32]
    reals = np.stack([np.asarray(Image.open(f).convert('RGB'), np.float32) for f in files])
    reals = tf.constant(reals / 127.5 - 1.0)
    # The same augmented reals for both precisions, as the step's R1 takes them.
    reals = diffaug.DiffAugment(reals, conf32.policy, rng=tf.random.Generator.from_seed(1))

    tf.keras.utils.set_random_seed(0)
    initial = [w.numpy() for w in model.build_discriminator(conf32).weights]
    trained = model.build_discriminator(conf32, initialize=False)
    loss_scale = gan.DynamicLossScale(enabled=True)
    tf.train.Checkpoint(discriminator=trained, d_loss_scale=loss_scale).restore(
        _latest(os.path.join(run, 'training-checkpoints'))[0]).expect_partial()
    scale = 2.0 ** 15  # float16's R1 takes about 12 s on a CPU: the search's last one is kept
    while not np.all(np.isfinite(init_half := _r1_weight_gradient(conf16, initial, reals, scale))):
        scale /= 2
    trained_scale = float(loss_scale.scale_var.numpy())
    trained_weights = [w.numpy() for w in trained.weights]
    trained_half = _r1_weight_gradient(conf16, trained_weights, reals, trained_scale)
    cases = {'init': (initial, scale, init_half),
             'after 200 steps': (trained_weights, trained_scale, trained_half)}
    norms = []
    for name, (weights, scale, half) in cases.items():
        reference = _r1_weight_gradient(conf32, weights, reals, 1.0)
        norms.append(np.linalg.norm(reference))
        error = np.linalg.norm(half - reference) / norms[-1]
        print(f'{name}: loss scale {scale:g}, |R1 grad| {norms[-1]:.3g}, '
              f'float16 relative error {error:.4f}')
        assert error < 0.02, (name, scale, error)
    # R1's gradient grew with training (0.020 to 0.37 measured): it does not drift towards
    # float16's underflow.
    assert norms[1] > 2 * norms[0], norms
