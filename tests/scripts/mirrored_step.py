"""Run one LadaGAN step on a global batch of 8 with one device and with MirroredStrategy over
two logical CPU devices, from the same weights, batch and noise; print the largest differences.
Run as its own process: logical devices must be set before TensorFlow initialises.

    python3 tests/scripts/mirrored_step.py CASE ...
    e.g. float32:1 mixed_bfloat16:4 mixed_float16:1:256

A case is PRECISION:R1_INTERVAL[:LOSS_SCALE]; LOSS_SCALE sets both float16 loss scales before
the step (the initial 2^15 may overflow R1). Prints one JSON line {case: report} after
everything else."""
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import config  # noqa: E402
import model  # noqa: E402
import gan  # noqa: E402


def one_step(strategy, conf, weights, real, d_noise, g_noise, d_updates=0, loss_scale=None):
    with strategy.scope():
        generator, discriminator = model.build_generator(conf), model.build_discriminator(conf)
    for variable, value in zip(generator.weights + discriminator.weights, weights):
        variable.assign(value)
    ladagan = gan.LadaGAN(generator, discriminator, conf, strategy=strategy)
    ladagan.d_updates.assign(d_updates)  # with lazy R1, the update that takes the penalty
    if loss_scale and ladagan.loss_scaling:
        ladagan.d_loss_scale.scale_var.assign(loss_scale)
        ladagan.g_loss_scale.scale_var.assign(loss_scale)
    metrics = {k: float(v) for k, v in ladagan.train_step(real, d_noise, g_noise).items()}
    variables = generator.weights + discriminator.weights + ladagan.ema_generator.weights
    after = {v.path: v.numpy() for v in variables}
    return metrics, after, int(ladagan.n_images.numpy()), dtypes(ladagan, d_noise)


def dtypes(ladagan, noise):
    """What the precision policy made of the networks: the compute dtype of an attention
    projection, the variables' dtype, the dtypes of the EMA generator's images and attention
    maps and of D's logits (float32 outputs in every policy), and Keras's global policy after
    the build (left float32: the policy is the networks', not the process's)."""
    import keras
    images, attn_maps = ladagan.ema_generator(noise[:2])
    return {'wq_compute': ladagan.generator.block_8.attn.wq.compute_dtype,
            'variables': sorted({tf.as_dtype(v.dtype).name
                                 for v in ladagan.generator.trainable_variables}),
            'outputs': [images.dtype.name, attn_maps[0].dtype.name,
                        ladagan.discriminator(images).dtype.name],
            'global_policy': keras.config.dtype_policy().name}


def before_batch_norm(path):
    return '/dec_conv_' in path and path.endswith('/bias')


def main():
    reports = {}
    for case in sys.argv[1:] or ['float32:1']:
        precision, r1_interval, *loss_scale = case.split(':')
        reports[case] = compare(precision, int(r1_interval),
                                float(loss_scale[0]) if loss_scale else None)
    print(json.dumps(reports))


def compare(precision, r1_interval, loss_scale=None):
    tf.keras.utils.set_random_seed(0)
    # Enough BN work to matter: the test preset has batch norm in D's encoder and G's decoder.
    conf = config.make_config('tiny', img_size=64, d_enc_dim=[8, 16, 32], dec_dim=[16],
                              batch_size=8, policy='', precision=precision,
                              r1_interval=r1_interval)
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, [8, 64, 64, 3]).astype(np.float32)
    d_noise, g_noise = rng.standard_normal([2, 8, conf.noise_dim]).astype(np.float32)
    reference = model.build_generator(conf), model.build_discriminator(conf)
    weights = [v.numpy() for v in reference[0].weights + reference[1].weights]
    single = one_step(tf.distribute.OneDeviceStrategy('/cpu:0'), conf, weights, real, d_noise,
                      g_noise, r1_interval - 1, loss_scale)
    mirrored_strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    mirrored = one_step(mirrored_strategy, conf, weights, real, d_noise, g_noise,
                        r1_interval - 1, loss_scale)
    diffs = {k: float(np.abs(single[1][k] - mirrored[1][k]).max()) for k in single[1]}
    elements = np.concatenate([np.abs(single[1][k] - mirrored[1][k]).ravel() for k in single[1]])
    return {
        'replicas': mirrored_strategy.num_replicas_in_sync,
        'metric_diff': max(abs(single[0][k] - mirrored[0][k]) for k in single[0]),
        'weight_diff': max(diffs[k] for k in diffs if not before_batch_norm(k)),
        'worst_weight': max((k for k in diffs if not before_batch_norm(k)), key=diffs.get),
        # A conv bias right before BatchNorm has an exactly-zero gradient in theory, so Adam's
        # first step (about lr * g / |g|) turns rounding noise into updates of up to lr.
        'zero_gradient_bias_diff': max(diffs[k] for k in diffs if before_batch_norm(k)),
        # Adam's first step is about lr * g / |g|: an element whose gradient is within rounding
        # of zero can move by up to lr either way, whichever the reduction order.
        'max_element_diff': float(elements.max()),
        'fraction_within_1e-4': float((elements <= 1e-4).mean()),
        'n_images': [single[2], mirrored[2]],
        # How far the step moved the weights, to read the differences against.
        'max_update': float(max(np.abs(single[1][path] - before).max() for path, before
                                in zip(list(single[1])[:len(weights)], weights))),
        'metrics': single[0], 'mirrored_metrics': mirrored[0],
        'dtypes': single[3], 'mirrored_dtypes': mirrored[3]}


if __name__ == '__main__':
    main()
