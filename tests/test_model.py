"""The networks compute exactly what the official LadaGAN code computes."""
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import config  # noqa: E402
import data  # noqa: E402
import gan  # noqa: E402
import model  # noqa: E402
import official as official_lib  # noqa: E402
from conftest import assert_same_8bit_images  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'official')

# Trainable parameter counts of the official code (SPEC table); every preset needs an entry.
PARAM_COUNTS = {
    'cifar10': (19_901_647, 6_775_940),
    'celeba_64': (19_900_351, 7_004_356),
    'ffhq_128': (24_025_871, 7_061_220),
    'bedroom_128': (24_025_871, 7_061_220),
    'tiny': (646_873, 71_730),
    'demo': (1_419_945, 266_338),
}


@pytest.fixture(scope='module', params=['tiny32', 'tiny64'])
def official(request):
    loaded = official_lib.load_official_checkpoint(os.path.join(FIXTURES, request.param))
    expected = dict(np.load(os.path.join(FIXTURES, request.param, 'expected.npz')))
    return loaded, expected


def test_official_forward_outputs_match(official):
    loaded, expected = official
    noise, real = expected['noise'], expected['real']
    ema_images, ema_attn = loaded['ema_generator'](noise, training=False)
    np.testing.assert_allclose(ema_images, expected['ema_images'], atol=1e-5)
    # Saved as 8-bit images (the official truncating quantisation), the EMA generator's images,
    # which the paper evaluates, are the authors' exactly (README, first paragraph).
    assert_same_8bit_images(data.to_uint8(ema_images), expected['ema_images'])
    for attn, side in zip(ema_attn, (8, 16, 32)):
        np.testing.assert_allclose(attn, expected[f'ema_attn_{side}'], atol=1e-5)
    g_images, _ = loaded['generator'](noise, training=False)
    np.testing.assert_allclose(g_images, expected['g_images'], atol=1e-5)
    d_logits = loaded['discriminator'](real, training=False)
    assert d_logits.dtype == tf.float32 and d_logits.shape == (4, 25)
    np.testing.assert_allclose(d_logits, expected['d_logits_eval'], atol=1e-5)
    assert model.count_params(loaded['generator']) == expected['g_params']
    assert model.count_params(loaded['discriminator']) == expected['d_params']


def test_official_training_mode_outputs_and_losses_match(official):
    loaded, expected = official
    conf = loaded['config']
    generator, discriminator = loaded['generator'], loaded['discriminator']
    # Training mode updates batch-norm statistics: work on copies of the weights.
    saved = [w.numpy() for w in generator.weights + discriminator.weights]
    try:
        fake = generator(expected['noise'], training=True)[0]
        fake_logits = discriminator(fake, training=True)
        real = tf.constant(expected['real'])
        with tf.GradientTape() as tape:
            tape.watch(real)
            real_logits = discriminator(real, training=True)
        r1 = tf.reduce_sum(tf.square(tape.gradient(real_logits, real)), axis=[1, 2, 3])
    finally:
        for w, value in zip(generator.weights + discriminator.weights, saved):
            w.assign(value)
    np.testing.assert_allclose(fake, expected['g_images_train'], atol=1e-5)
    np.testing.assert_allclose(fake_logits, expected['fake_logits_train'], atol=1e-5)
    np.testing.assert_allclose(real_logits, expected['real_logits_train'], atol=1e-5)
    g_loss_fn, d_loss_fn = gan.get_loss(conf.loss)
    np.testing.assert_allclose(d_loss_fn(real_logits, fake_logits), expected['d_loss'], rtol=1e-4)
    np.testing.assert_allclose(g_loss_fn(real_logits, fake_logits), expected['g_loss'], rtol=1e-4)
    np.testing.assert_allclose(conf.gp_weight * tf.reduce_mean(r1), expected['gp'], rtol=1e-4)


@pytest.mark.parametrize('preset', sorted(config.presets))
def test_parameter_counts_equal_the_official_models(preset):
    assert preset in PARAM_COUNTS, f'add the parameter counts of new preset {preset!r}'
    conf = config.make_config(preset)
    g_params, d_params = PARAM_COUNTS[preset]
    assert model.count_params(model.build_generator(conf)) == g_params
    assert model.count_params(model.build_discriminator(conf)) == d_params


@pytest.mark.slow
def test_256px_patch_model_parameter_counts():
    conf = config.make_config('celeba_64', img_size=256, d_enc_dim=[16, 32, 64, 128, 256])
    assert model.count_params(model.build_generator(conf)) == 19_899_946
    assert model.count_params(model.build_discriminator(conf)) == 7_075_316


def test_generator_block_has_no_mlp_residual():
    # Official quirk: out = MLP(SMLN2(h)), no "+ h". Zeroing the MLP's output layer must give 0.
    from ladaformer import GeneratorBlock
    block = GeneratorBlock(16, 2, 32)
    x, z = tf.random.normal([2, 64, 16]), tf.random.normal([2, 128])
    block([x, z])
    block.mlp.fc2.kernel.assign(tf.zeros_like(block.mlp.fc2.kernel))
    block.mlp.fc2.bias.assign(tf.zeros_like(block.mlp.fc2.bias))
    out, attn = block([x, z])
    np.testing.assert_array_equal(out, 0.0)
    assert attn.shape == (2, 2, 64)
    np.testing.assert_allclose(tf.reduce_sum(attn, -1), 1.0, rtol=1e-5)


def _official_lada(attn, x):
    """The official order of operations: Q for every token, then q_attn(Q), then the pooled Q."""
    q, k, v = attn.wq(x), attn.wk(x), attn.wv(x)                         # (B, N, D)
    alpha = tf.nn.softmax(attn.q_attn(q) / np.sqrt(attn.head_dim), axis=1)  # (B, N, H)
    heads = lambda t: tf.reshape(t, [x.shape[0], x.shape[1], attn.n_heads, attn.head_dim])
    global_q = tf.einsum('bnh,bnhd->bhd', alpha, heads(q))
    mixed = tf.reshape(global_q[:, None] * heads(k) * heads(v), x.shape)
    return attn.to_out(mixed), tf.transpose(alpha, [0, 2, 1])


def test_lada_attention_equals_the_official_formula_with_gradients():
    # Ours never forms the per-token query (see LadaAttention.call); values and gradients with
    # respect to every weight and the input must still be those of the official formula.
    from ladaformer import LadaAttention
    attn = LadaAttention(8, 2)
    x = tf.random.normal([3, 5, 8], seed=1)
    attn(x)
    for variable in attn.trainable_variables:  # non-zero biases, so bias terms are checked too
        variable.assign(tf.random.normal(variable.shape, seed=2))
    weights = tf.random.normal([3, 5, 8], seed=3)
    results = []
    for forward in (attn, lambda inputs: _official_lada(attn, inputs)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out, alpha = forward(x)
            loss = tf.reduce_sum(out * weights) + tf.reduce_sum(alpha[:, :, :2])
        results.append((out, alpha, tape.gradient(loss, [x] + attn.trainable_variables)))
    (out, alpha, grads), (ref_out, ref_alpha, ref_grads) = results
    np.testing.assert_allclose(alpha, ref_alpha, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-4)
    assert len(grads) == 11  # x + kernels and biases of wq, wk, wv, to_out, q_attn
    # One absolute scale for all: q_attn's bias gradient is 0 in exact arithmetic (a softmax
    # ignores a shift), so both sides hold only rounding noise there.
    scale = max(float(tf.reduce_max(tf.abs(ref_grad))) for ref_grad in ref_grads)
    for grad, ref_grad in zip(grads, ref_grads):
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5 * scale)


def _small_conf(img_size, dec_dim, attention):
    enc = {32: [8, 16], 64: [8, 8, 16], 128: [8, 8, 8, 16], 256: [8, 8, 8, 8, 16]}[img_size]
    return config.make_config('tiny', img_size=img_size, dec_dim=dec_dim, attention=attention,
                              g_dim=[32, 16, 64], g_mlp=[32, 32, 32], d_enc_dim=enc,
                              d_out_dim=[16, 16], d_mlp=16)


# Every resolution, with and without the decoder, Lada and dot-product attention.
XLA_CONFIGS = [(32, False, 'lada'), (64, False, 'lada'), (64, [16], 'lada'), (128, False, 'lada'),
               (128, [16, 8], 'lada'), (256, False, 'lada'), (256, [16, 8, 8], 'lada'),
               (32, False, 'dot'), (128, [16, 8], 'dot')]


@pytest.mark.slow
@pytest.mark.parametrize('img_size', sorted({size for size, _, _ in XLA_CONFIGS}))
def test_gradient_step_compiles_with_xla(img_size):
    # One XLA compilation per resolution, of every model of that size side by side: part of
    # each compilation's cost is fixed, so fewer of them take less time.
    cases = [case for case in XLA_CONFIGS if case[0] == img_size]
    parts = []
    for case in cases:
        conf = _small_conf(*case)
        generator, discriminator = model.build_generator(conf), model.build_discriminator(conf)
        parts.append((generator, discriminator,
                      generator.trainable_variables + discriminator.trainable_variables))

    @tf.function(jit_compile=True)
    def step(z):
        outputs = []
        for generator, discriminator, variables in parts:
            with tf.GradientTape() as tape:
                images, attn_maps = generator(z, training=True)
                loss = tf.reduce_mean(discriminator(images, training=True))
            outputs.append((images, attn_maps, tape.gradient(loss, variables)))
        return outputs

    noise = tf.random.normal([2, conf.noise_dim])  # the tiny preset's, as every case here
    for case, (images, attn_maps, grads) in zip(cases, step(noise)):
        assert images.shape == (2, img_size, img_size, 3), case
        assert [a.shape for a in attn_maps] == [(2, 2, 64), (2, 2, 256), (2, 2, 1024)], case
        assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads), case


def test_upsample_conv_equals_official_upsampling_then_conv_with_gradients():
    # The decoder's x2 nearest upsampling + 3x3 conv, computed per output phase on the small grid:
    # values and the gradients for x, kernel and bias must be those of UpSampling2D + Conv2D,
    # eagerly, in a graph and under XLA (where the official resize gradient cannot compile).
    x = tf.random.normal([2, 5, 6, 7])
    kernel = tf.random.normal([3, 3, 7, 4])
    bias = tf.random.normal([4])
    weights = tf.random.normal([2, 10, 12, 4])  # a loss that weighs every output differently

    def forward_backward(upsample_conv, x, kernel, bias):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel, bias])
            y = upsample_conv(x, kernel, bias)
            loss = tf.reduce_sum(y * weights)
        return [y] + tape.gradient(loss, [x, kernel, bias])

    def official(x, kernel, bias):
        upsampled = tf.keras.layers.UpSampling2D(2, interpolation='nearest')(x)
        return tf.nn.conv2d(upsampled, kernel, 1, 'SAME') + bias

    expected = forward_backward(official, x, kernel, bias)
    for jit in (None, False, True):
        function = (forward_backward if jit is None
                    else tf.function(forward_backward, jit_compile=jit))
        for got, want in zip(function(model.upsample_conv3x3, x, kernel, bias), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_models_save_and_reload(tmp_path):
    import keras
    conf = _small_conf(64, [16], 'lada')
    generator = model.build_generator(conf)
    z = tf.random.normal([2, conf.noise_dim])
    generator.save(tmp_path / 'g.keras')
    reloaded = keras.models.load_model(tmp_path / 'g.keras')
    np.testing.assert_allclose(reloaded(z)[0], generator(z)[0], atol=1e-6)


@pytest.mark.parametrize('class_input', ['projections', 'noise'])
def test_a_conditional_model_keeps_every_unconditional_weight_and_adds_class_embeddings(
        class_input):
    """The class enters through added weights only (so --init_from an unconditional run loads
    all of them): the class changes the image and the logits, and the same class and input
    repeat them."""
    conf = config.make_config('tiny', conditional=True, num_classes=3, class_input=class_input)
    plain = config.make_config('tiny')
    z = tf.random.normal([3, conf.noise_dim], seed=1)
    labels = tf.constant([0, 1, 2])
    for build in (model.build_generator, model.build_discriminator):
        conditional, twin = build(conf), build(plain, initialize=False)
        own = {w.path: tuple(w.shape) for w in conditional.weights}
        shared = {w.path: tuple(w.shape) for w in twin.weights}
        assert {path: own[path] for path in shared} == shared
        added = set(own) - set(shared)
        assert added and all('/class_' in path for path in added), added
        inputs = z if build is model.build_generator else tf.random.uniform([3, 32, 32, 3], -1, 1,
                                                                            seed=2)
        first = lambda out: out[0] if isinstance(out, (list, tuple)) else out  # noqa: E731
        out = first(conditional(inputs, labels=labels)).numpy()
        again = first(conditional(inputs, labels=labels)).numpy()
        other = first(conditional(inputs, labels=tf.constant([1, 2, 0]))).numpy()
        np.testing.assert_array_equal(out, again)
        assert all(np.abs(out[row] - other[row]).max() > 1e-4 for row in range(3))
        with pytest.raises(ValueError, match='class-conditional: call it with labels'):
            conditional(inputs)


# A network built without a config is checked by the config's own checks, with its messages.
@pytest.mark.parametrize('kwargs,message', [
    (dict(img_size=48), 'img_size=48 is not supported'),
    (dict(model_dim=[1024, 256, 60], heads=[4, 4, 8]), r'g_dim\[2\]=60 is not divisible by g_heads'),
    (dict(img_size=128, dec_dim=[64]), 'must have 2 entries'),
    (dict(img_size=64, model_dim=[64, 32, 18], heads=[2, 2, 2]), 'divisible by 4 for patch'),
])
def test_generator_rejects_bad_arguments(kwargs, message):
    with pytest.raises(config.UserError, match=message):
        model.Generator(**kwargs)


def test_discriminator_rejects_bad_arguments():
    with pytest.raises(config.UserError, match='must have 3 entries for img_size 64'):
        model.Discriminator(img_size=64, enc_dim=[64, 128])


def test_summary_reports_the_papers_macs():
    macs = lambda stages: sum(m for _, m in stages)
    cifar = macs(model.generator_stage_macs(config.make_config('cifar10')))
    ffhq = macs(model.generator_stage_macs(config.make_config('ffhq_128')))
    assert 0.74e9 < cifar < 0.78e9      # README: "0.7B FLOPs"
    assert 4.2e9 < ffhq < 4.4e9         # README: "4.3B FLOPs"
    # Executed MACs (for MFU): the decoder's 2x2 four-phase convs on the padded small grid.
    ffhq_conf = config.make_config('ffhq_128')
    paper_out, executed_out = (model.generator_stage_macs(ffhq_conf, executed)[-1][1]
                               for executed in (False, True))
    rgb = 128 * 128 * 9 * 64 * 3
    assert paper_out == 64 * 64 * 9 * 256 * 128 + 128 * 128 * 9 * 128 * 64 + rgb
    assert executed_out == 33 * 33 * 16 * 256 * 128 + 65 * 65 * 16 * 128 * 64 + rgb
    table = model.summary_table(config.make_config('tiny'))
    assert 'generator' in table and 'discriminator' in table and '646,873' in table


# ---------------------------------------------------------------- float32 islands
class _IslandProbe(keras.layers.Layer):
    """Runs each island's layer of G and D as their models do: called inside a layer of the
    mixed policy, which sets Keras's autocast scope the way Generator and Discriminator do."""

    def __init__(self, generator, discriminator):
        # autocast=False: the inputs keep their dtypes (smln is float32), as in the model.
        super().__init__(dtype=generator.dtype_policy, autocast=False, name="island_probe")
        self.generator, self.discriminator = generator, discriminator

    def call(self, z, tokens, maps, head, d_tokens, smln):
        g, d, block = self.generator, self.discriminator, self.generator.block_8
        stream = g.pos_emb_8(tokens)
        return {'residual': stream, 'norms': block.norm1([stream, z]),
                'norms (D)': d.block_8.norm1(tf.cast(d_tokens, tf.float32)),  # as the block
                'attention': block.attn(smln)[1],  # the map from float32 tokens
                'residual (D)': d.block_8(d_tokens)[0], 'rgb': g.ch_conv(maps),
                'logits': d.out_conv2(head)}


def _island_outputs(generator, discriminator, xla):
    """{island: (output, float32 reference or None)} on fixed inputs in the compute dtype:
    each island's layer as the model runs it, and the same maths in float32."""
    block, d_norm = generator.block_8, discriminator.block_8.norm1
    compute = generator.compute_dtype
    normal = lambda shape, seed: tf.cast(tf.random.stateless_normal(shape, [0, seed]), compute)
    z = normal([2, generator.noise_dim], 1)
    tokens = normal([2, 64, generator.model_dim[0]], 2)
    maps = normal([2, 32, 32, generator.model_dim[2]], 3)
    head = normal([2, 8, 8, discriminator.out_dim[1]], 4)
    d_tokens = normal([2, 256, discriminator.enc_dim[-1]], 5)
    f32 = lambda x: tf.cast(x, tf.float32)  # read here, outside any autocast scope
    dense = lambda layer, x: tf.matmul(f32(x), f32(layer.kernel)) + f32(layer.bias)
    conv = lambda layer, x, padding: tf.nn.conv2d(f32(x), f32(layer.kernel), 1, padding)

    def ln(x, epsilon):
        mean, var = tf.nn.moments(f32(x), axes=[-1], keepdims=True)
        return (f32(x) - mean) * tf.math.rsqrt(var + epsilon)

    stream = f32(tokens) + f32(generator.pos_emb_8.embeddings)
    h = tf.nn.relu(dense(block.norm1.h, z))
    smln = (ln(stream, 1e-6) * dense(block.norm1.gamma, h)[:, None]
            + dense(block.norm1.beta, h)[:, None])
    logits = dense(block.attn.q_attn, dense(block.attn.wq, smln)) / np.sqrt(block.attn.head_dim)
    references = {
        'residual': stream, 'norms': smln,
        'norms (D)': ln(d_tokens, d_norm.epsilon) * f32(d_norm.gamma) + f32(d_norm.beta),
        'attention': tf.transpose(tf.nn.softmax(logits, axis=1), [0, 2, 1]),
        'residual (D)': None,
        'rgb': conv(generator.ch_conv, maps, 'SAME') + f32(generator.ch_conv.bias),
        'logits': conv(discriminator.out_conv2, head, 'VALID')}
    probe = _IslandProbe(generator, discriminator)
    outputs = tf.function(probe, jit_compile=xla, autograph=False)(z, tokens, maps, head,
                                                                    d_tokens, smln)
    return {island: (outputs[island], references[island]) for island in references}


@pytest.fixture(scope='module', params=['mixed_bfloat16', 'mixed_float16'])
def mixed_models(request):
    """{islands: (generator, discriminator)} of the tiny preset under a mixed policy, with the
    default float32 islands and with none."""
    models = {}
    for name, islands in (('default', config.config['float32_islands']), ('none', [])):
        conf = config.make_config('tiny', precision=request.param, float32_islands=islands)
        models[name] = model.build_generator(conf), model.build_discriminator(conf)
    return request.param.split('_')[1], models


@pytest.mark.parametrize('xla', [False, True])
def test_float32_islands_compute_in_float32_under_mixed_precision(mixed_models, xla):
    compute, models = mixed_models
    kept = _island_outputs(*models['default'], xla)
    dropped = _island_outputs(*models['none'], xla)
    for island, (output, reference) in kept.items():
        assert output.dtype == tf.float32, (island, output.dtype)
        if reference is not None:  # the float32 maths on the same input, to float32 rounding
            np.testing.assert_allclose(output.numpy(), reference.numpy(), rtol=2e-4, atol=2e-5,
                                       err_msg=island)
    for island, (output, reference) in dropped.items():
        if island == 'attention':  # the softmax is float32 in every policy; its scores are not
            kept_error = np.abs(kept[island][0].numpy() - kept[island][1].numpy()).max()
            error = np.abs(output.numpy() - reference.numpy()).max()
            assert error > 10 * kept_error, (error, kept_error)
        else:
            assert output.dtype == compute, (island, output.dtype)
