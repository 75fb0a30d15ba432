"""gan.py: the training step reproduces the official one; losses, R1, bCR and the EMA."""
import gc
import os
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

import config
import gan
import model
import official

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'official')


# XLA (the GPU default) and not (the CPU default); the inner loop keeps tiny32 without XLA.
@pytest.mark.parametrize('name, jit', [
    pytest.param(name, jit, id=f'{name}-{"xla" if jit else "no_xla"}',
                 marks=[] if (name, jit) == ('tiny32', False) else [pytest.mark.slow])
    for name in ('tiny32', 'tiny64') for jit in (True, False)])
def test_one_step_matches_the_official_step(name, jit):
    loaded = official.load_official_checkpoint(os.path.join(FIXTURES, name))
    expected = np.load(os.path.join(FIXTURES, name, 'expected.npz'))
    no_xla = np.load(os.path.join(FIXTURES, '..', 'official_noxla', 'step_noxla.npz'))
    conf = loaded['config'].replace(policy='', bcr=False, batch_size=4, jit=jit)
    ladagan = gan.LadaGAN(loaded['generator'], loaded['discriminator'], conf,
                        ema_generator=loaded['ema_generator'])
    assert ladagan.xla is jit
    metrics = ladagan.train_step(expected['real'], expected['step_d_noise'],
                             expected['step_g_noise'])
    for key in ('d_loss', 'gp', 'g_loss'):
        np.testing.assert_allclose(metrics[key], expected[f'step_{key}'], rtol=1e-4)
    noise = expected['noise']
    after = {'ema_images': ladagan.ema_generator(noise)[0], 'g_images': ladagan.generator(noise)[0],
             'd_logits': ladagan.discriminator(expected['real']), 'g_loss': metrics['g_loss']}
    # The official step has two float32 outcomes on tiny64: the record was made under XLA, whose
    # rounding puts one D LeakyReLU pre-activation (float64 value -3.8e-6) on the positive side,
    # and the same official step without XLA moves G's images by 0.03 (see
    # tests/fixtures/official_noxla/README.md). Any reordering of float32 sums may land on either
    # side, so ours must equal one of the two official outcomes closely; on tiny32 they coincide.
    outcomes = {
        'XLA record': {key: expected[f'step_{key}' + ('' if key == 'g_loss' else '_after')]
                       for key in after},
        'no-XLA record': {key: no_xla[f'{name}_step_{key}' + ('' if key == 'g_loss' else '_after')]
                          for key in after}}
    errors = {label: {key: float(np.abs(np.asarray(value) - reference[key]).max())
                      for key, value in after.items()}
              for label, reference in outcomes.items()}
    # 1e-4 on images and logits; the generator loss to 1e-5 relative, as before the two outcomes.
    tolerances = {key: 1e-4 for key in after}
    tolerances['g_loss'] = 1e-5 * abs(float(expected['step_g_loss']))
    assert any(all(error[key] < tolerances[key] for key in after)
               for error in errors.values()), errors
    assert int(ladagan.n_images) == 4


def test_losses():
    real = tf.constant([[2.0, -1.0], [0.5, 0.0]])
    fake = tf.constant([[-1.0, 3.0], [0.0, -2.0]])
    g_loss, d_loss = gan.get_loss('nsl')
    softplus = lambda x: np.log1p(np.exp(x))
    np.testing.assert_allclose(d_loss(real, fake), softplus(-real.numpy()).mean()
                               + softplus(fake.numpy()).mean(), rtol=1e-6)
    np.testing.assert_allclose(g_loss(real, fake), softplus(-fake.numpy()).mean(), rtol=1e-6)
    g_loss, d_loss = gan.get_loss('hinge')
    np.testing.assert_allclose(d_loss(real, fake), np.mean([0, 2, 0.5, 1]) + np.mean([0, 4, 1, 0]))
    np.testing.assert_allclose(g_loss(real, fake), -0.0)
    g_loss, d_loss = gan.get_loss('rahinge')
    real_rel = real.numpy() - fake.numpy().mean(0)      # fake means per logit: -0.5, 0.5
    fake_rel = fake.numpy() - real.numpy().mean(0)      # real means per logit: 1.25, -0.5
    relu = lambda x: np.maximum(x, 0)
    np.testing.assert_allclose(d_loss(real, fake),
                               relu(1 - real_rel).mean() + relu(1 + fake_rel).mean(), rtol=1e-6)
    np.testing.assert_allclose(g_loss(real, fake),
                               relu(1 + real_rel).mean() + relu(1 - fake_rel).mean(), rtol=1e-6)


def _tiny_gan(**overrides):
    conf = config.make_config('tiny', batch_size=4, **overrides)
    return gan.LadaGAN(model.build_generator(conf), model.build_discriminator(conf), conf)


def test_jit_auto_skips_xla_on_a_cpu():
    # The test machines have no GPU or TPU: 'auto' must pick the oneDNN kernels there.
    assert not tf.config.list_logical_devices('GPU')
    assert _tiny_gan().xla is False
    assert _tiny_gan(jit=True).xla is True


@pytest.mark.slow
def test_ema_starts_as_an_exact_copy_and_tracks_all_weights():
    ladagan = _tiny_gan(jit=False, ema_decay=0.5)
    for ema_weight, weight in zip(ladagan.ema_generator.weights, ladagan.generator.weights):
        np.testing.assert_array_equal(ema_weight, weight)
    before = [w.numpy() for w in ladagan.ema_generator.weights]
    ladagan.train_step(tf.random.uniform([4, 32, 32, 3], -1, 1))
    for ema_weight, old, weight in zip(ladagan.ema_generator.weights, before, ladagan.generator.weights):
        np.testing.assert_allclose(ema_weight, 0.5 * old + 0.5 * weight.numpy(), atol=1e-6)


@pytest.mark.slow
def test_r1_is_taken_on_the_augmented_reals():
    # Official quirk: R1 penalises D's gradient at T(x), not at x. Swap DiffAugment for a
    # deterministic transform and compare the step's gp with both candidates.
    ladagan = _tiny_gan(jit=False, policy='color')
    ladagan.augment = lambda images: tf.reverse(images, axis=[1]) * 0.5
    real = tf.random.uniform([4, 32, 32, 3], -1, 1)
    on_augmented = float(ladagan.r1_penalty(ladagan.augment(real))[1])
    on_clean = float(ladagan.r1_penalty(real)[1])
    assert abs(on_augmented - on_clean) > 0.1 * on_clean
    metrics = ladagan.train_step(real)
    np.testing.assert_allclose(metrics['gp'], on_augmented, rtol=1e-5)


@pytest.mark.slow
def test_bcr_step_adds_a_consistency_loss():
    ladagan = _tiny_gan(bcr=True, policy='color,translation,cutout', loss='rahinge')
    metrics = ladagan.train_step(tf.random.uniform([4, 32, 32, 3], -1, 1))
    assert float(metrics['cr']) > 0
    np.testing.assert_allclose(metrics['d_total'],
                               metrics['d_loss'] + metrics['gp'] + metrics['cr'], rtol=1e-5)
    assert all(np.isfinite(float(v)) for v in metrics.values())


@pytest.mark.slow
def test_given_noise_makes_the_step_reproducible_and_uint8_batches_are_the_float_ones():
    """The input pipeline's uint8 batches, scaled inside the step (gan.as_float_images), train
    exactly as the float images x / 127.5 - 1 that the authors' pipeline feeds."""
    pixels = np.random.default_rng(1).integers(0, 256, [4, 32, 32, 3], np.uint8)
    real = pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    d_noise, g_noise = np.random.default_rng(0).standard_normal([2, 4, 128], np.float32)
    results = []
    for images in (real, pixels):
        tf.keras.utils.set_random_seed(3)
        ladagan = _tiny_gan(policy='')
        results.append({k: float(v) for k, v in ladagan.train_step(images, d_noise,
                                                                   g_noise).items()})
        results[-1]['weights'] = [w.numpy() for w in ladagan.generator.weights]
    weights = [result.pop('weights') for result in results]
    assert results[0] == results[1]
    for float_fed, uint8_fed in zip(*weights):
        np.testing.assert_array_equal(float_fed, uint8_fed)


@pytest.mark.slow
@pytest.mark.parametrize('overrides', [{}, {'bcr': True, 'r1_interval': 2}],
                         ids=['diffaugment_r1', 'bcr_lazy_r1'])
def test_a_conditional_step_trains_both_class_embeddings(overrides):
    """One conditional step (DiffAugment and R1 on the augmented reals; bCR with lazy R1):
    gradients reach G's class embeddings (the first tokens' and every self-modulation's) and
    D's projection; the labels G made come from the class frequencies (the run's RNG): a class
    the training set lacks is never drawn."""
    conf = config.make_config('tiny', batch_size=8, conditional=True, num_classes=3, **overrides)
    keras.utils.set_random_seed(0)
    ladagan = gan.LadaGAN(model.build_generator(conf), model.build_discriminator(conf), conf,
                          class_frequencies=[5, 0, 3])
    drawn = ladagan.draw_labels(400).numpy()
    assert set(drawn) == {0, 2} and 0.5 < (drawn == 0).mean() < 0.75  # 5/8 of them
    real = tf.random.uniform([8, 32, 32, 3], -1, 1, seed=1)
    with pytest.raises(ValueError, match='pass real_labels'):
        ladagan.train_step(real)
    for _ in range(2):  # with lazy R1 every 2nd update takes the penalty
        metrics = ladagan.train_step(real, real_labels=tf.constant([0, 2, 0, 2, 0, 2, 0, 0]))
    assert all(np.isfinite(float(value)) for value in metrics.values())
    class_weights = [w for net in (ladagan.generator, ladagan.discriminator)
                     for w in net.weights if '/class_' in w.path]
    assert len(class_weights) == 1 + 2 * 3 + 1  # first tokens, 2 norms x 3 blocks, projection
    with tf.GradientTape() as tape:  # the step's D loss, by hand: its projection's gradient
        fake = ladagan.generator(tf.random.normal([8, 128]), training=True,
                                 labels=tf.constant([0, 2] * 4))[0]
        mean_logit = tf.reduce_mean(ladagan.discriminator(fake, training=True,
                                                          labels=tf.constant([0, 2] * 4)))
    # A table's gradient comes as IndexedSlices (the rows gathered): made dense to compare.
    gradients = [tf.convert_to_tensor(grad) for grad in tape.gradient(mean_logit, class_weights)]
    assert all(np.abs(grad.numpy()).max() > 0 for grad in gradients)
    started = [w.numpy() for w in class_weights]
    ladagan.train_step(real, real_labels=tf.constant([0, 2, 0, 2, 0, 2, 0, 0]))
    moved = {w.path: np.abs(w.numpy() - before).max() for w, before in zip(class_weights,
                                                                          started)}
    assert all(value > 0 for value in moved.values()), moved


def _step_graphs():
    """Weak references to the traced single-device steps alive in this process."""
    gc.collect()
    return [weakref.ref(graph) for graph in gc.get_objects()
            if isinstance(graph, tf.Graph) and getattr(graph, 'name', None) == '_single_device_step']


@pytest.mark.slow
def test_a_traced_step_is_freed_with_its_ladagan():
    # Keras's all_reduce (optimizers, synchronized BatchNorm) registers custom gradients in
    # TensorFlow's process-wide registry, which held every traced step (190 MB for tiny's) for
    # good: a notebook, an experiment or this suite building LadaGANs one after another grew
    # without end. gan.forget_custom_gradients releases them after each trace.
    before = {id(ref()) for ref in _step_graphs()}
    conf = config.make_config('demo', batch_size=4, jit=False)  # the model users train first
    ladagan = gan.LadaGAN(model.build_generator(conf), model.build_discriminator(conf), conf)
    ladagan.train_step(tf.random.uniform([4, 32, 32, 3], -1, 1))
    ours = [ref for ref in _step_graphs() if id(ref()) not in before]
    assert len(ours) == 1 and len(ours[0]().get_operations()) > 1000
    del ladagan
    gc.collect()
    assert ours[0]() is None, 'the traced step outlived its LadaGAN'


def test_a_tensorflow_that_moved_its_gradient_registry_is_one_warning(monkeypatch):
    # TensorFlow's private registry, not this project's code, is what moves.
    from tensorflow.python.framework import ops as tf_ops
    monkeypatch.setattr(tf_ops, '_gradient_registry', object())
    monkeypatch.setattr(gan, '_registry_missing_warned', False)
    with pytest.warns(UserWarning, match='gradient registry elsewhere') as caught:
        gan.forget_custom_gradients(0)
        gan.forget_custom_gradients(0)
    assert len(caught) == 1




# ---------------------------------------------------------------- lazy R1 (r1_interval)

@pytest.mark.slow
@pytest.mark.parametrize('jit', [True, False], ids=['xla', 'no_xla'])
def test_lazy_r1_takes_the_penalty_on_one_update_in_k_weighted_by_k(jit):
    ladagan = _tiny_gan(jit=jit, policy='', r1_interval=4)
    real = tf.random.uniform([4, 32, 32, 3], -1, 1, seed=2)
    penalties = []
    for step in range(1, 9):
        # The penalty the update would add at weight gp_weight, from D as it is before it.
        expected = float(ladagan.r1_penalty(real)[1])
        metrics = ladagan.train_step(real)
        penalties.append((float(metrics['gp']), expected))
        np.testing.assert_allclose(metrics['d_total'], metrics['d_loss'] + metrics['gp'],
                                   rtol=1e-5)
    taken = [step for step, (gp, _) in enumerate(penalties, 1) if gp != 0]
    assert taken == [4, 8]  # the last update of each group of 4
    for step in taken:
        gp, expected = penalties[step - 1]
        np.testing.assert_allclose(gp, 4 * expected, rtol=1e-4)
    assert int(ladagan.d_updates) == 8


@pytest.mark.slow
def test_lazy_r1_phase_is_checkpointed(tmp_path):
    ladagan = _tiny_gan(jit=False, policy='', r1_interval=4)
    real = tf.random.uniform([4, 32, 32, 3], -1, 1, seed=3)
    for _ in range(3):
        ladagan.train_step(real)
    prefix = ladagan.checkpoint().write(str(tmp_path / 'ckpt'))
    resumed = _tiny_gan(jit=False, policy='', r1_interval=4)
    resumed.checkpoint().read(prefix).assert_existing_objects_matched()
    assert int(resumed.d_updates) == 3
    assert float(resumed.train_step(real)['gp']) > 0  # the 4th update takes R1, as it would have


@pytest.mark.slow
def test_r1_interval_one_is_the_every_step_penalty():
    # The default keeps the official step (test_one_step_matches_the_official_step): R1 at
    # gp_weight on every update, no conditional in the graph.
    ladagan = _tiny_gan(jit=False, policy='')
    real = tf.random.uniform([4, 32, 32, 3], -1, 1, seed=4)
    for _ in range(2):
        expected = float(ladagan.r1_penalty(real)[1])
        np.testing.assert_allclose(ladagan.train_step(real)['gp'], expected, rtol=1e-4)


# ---------------------------------------------------------------- FreezeD (freeze_d)

@pytest.mark.slow
def test_freeze_d_keeps_the_first_blocks_fixed_and_r1_flows_through_them():
    real = tf.random.uniform([4, 32, 32, 3], -1, 1, seed=5)
    d_noise, g_noise = np.random.default_rng(1).standard_normal([2, 4, 128], np.float32)
    gans, first_metrics = {}, {}
    for freeze_d in (0, 2):  # 2: the input conv and the down block, the tiny D's conv encoder
        tf.keras.utils.set_random_seed(4)  # the same initial weights in both
        gans[freeze_d] = _tiny_gan(jit=False, policy='', gp_weight=10.0, freeze_d=freeze_d)
    initial = {w.path: w.numpy() for w in gans[2].discriminator.trainable_weights}
    for freeze_d, ladagan in gans.items():
        first_metrics[freeze_d] = ladagan.train_step(real, d_noise, g_noise)
    frozen = model.frozen_weight_paths(gans[2].discriminator, 2)
    assert {path.split('/')[1] for path in frozen} == {'inp_conv', 'down_block_0'}
    assert len(gans[2].d_optimizer.variables) < len(gans[0].d_optimizer.variables)
    # R1 differentiates through the frozen blocks: the same penalty, and (from the same weights)
    # the same update of the blocks that train, as without freezing.
    assert float(first_metrics[2]['gp']) > 0
    np.testing.assert_allclose(first_metrics[2]['gp'], first_metrics[0]['gp'], rtol=1e-6)
    trained = {w.path: w for w in gans[0].discriminator.trainable_weights}
    for weight in gans[2].discriminator.trainable_weights:
        if weight.path not in frozen:
            np.testing.assert_allclose(weight, trained[weight.path], rtol=1e-5, atol=1e-7)
    for _ in range(2):
        gans[2].train_step(real)
    for weight in gans[2].discriminator.trainable_weights:
        if weight.path in frozen:
            np.testing.assert_array_equal(weight, initial[weight.path])
        else:
            assert not np.array_equal(weight, initial[weight.path]), weight.path


@pytest.mark.parametrize('mode', ['eager', 'traced', 'xla'])
def test_our_adam_is_keras_adam_bit_for_bit(mode):
    """gan.Adam shares one step size and its constants among all variables of an update; the
    values must be Keras's Adam's, bit for bit, over several updates: on the demo generator's
    weights (the conditional one, whose class embeddings take gathered, sparse gradients),
    with the project's betas and epsilon, eagerly, traced as the CPU step is (Grappler off)
    and compiled with XLA."""
    traced = mode != 'eager'
    conf = config.make_config('demo', num_classes=3, conditional=True)
    keras.utils.set_random_seed(0)
    generator = model.build_generator(conf)
    weights = [w.numpy() for w in generator.weights]
    sparse = next(index for index, w in enumerate(generator.weights) if 'class' in w.path)
    runs, operations = [], []
    for optimizer_class in (keras.optimizers.Adam, gan.Adam):
        variables = [tf.Variable(value) for value in weights]
        optimizer = optimizer_class(conf.g_lr, conf.g_beta1, conf.g_beta2, epsilon=1e-7)
        optimizer.build(variables)

        def update(grads, optimizer=optimizer, variables=variables):
            optimizer.apply_gradients(zip(grads, variables))
        if traced:
            update = tf.function(update, autograph=False, jit_compile=mode == 'xla')
        step_rng = np.random.default_rng(1)
        for _ in range(3):
            grads = [tf.constant(step_rng.standard_normal(w.shape).astype(np.float32) * 1e-3)
                     for w in weights]
            grads[sparse] = tf.IndexedSlices(grads[sparse][:2], tf.constant([2, 0]),
                                             tf.constant(weights[sparse].shape))
            with gan.graph_rewrites_off(mode == 'traced'):
                update(grads)
        runs.append([v.numpy() for v in variables + optimizer.variables])
        if traced:
            graph = update._list_all_concrete_functions()[0].graph
            operations.append(len(graph.get_operations()))
    assert len(runs[0]) == len(runs[1]) > 2 * len(weights)
    moved = sum(not np.array_equal(after, before) for after, before in zip(runs[1], weights))
    assert moved == len(weights)
    for ours, theirs in zip(runs[1], runs[0]):
        np.testing.assert_array_equal(ours, theirs)
    if traced:  # what it is for: the graph to trace and run is smaller
        assert operations[1] < 0.6 * operations[0], operations
