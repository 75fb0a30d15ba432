"""tf.distribute and mixed precision: same step on two replicas, two workers, float16/bfloat16."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, 'tests', 'scripts')
sys.path.insert(0, ROOT)

import config  # noqa: E402
import model  # noqa: E402
import gan  # noqa: E402


def _run_script(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                            timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize('r1_interval', [1, 4])
def test_mirrored_step_equals_the_single_device_step(r1_interval):
    # Two logical CPU devices, global batch 8 (4 per replica), synchronised batch norm; with
    # lazy R1, the update that takes the penalty (weighted by 4) on both.
    report = json.loads(_run_script(os.path.join(SCRIPTS, 'mirrored_step.py'), 'float32',
                                    str(r1_interval)).splitlines()[-1])
    assert report['metrics']['gp'] > 0
    assert report['replicas'] == 2
    assert report['n_images'] == [8, 8]
    assert report['metric_diff'] < 1e-4, report
    # Adam's first update is about lr * sign(g): elements whose gradient is within rounding of
    # zero (e.g. conv biases right before batch norm, zero in theory) may land up to 2 * lr
    # apart; all others must agree to 1e-4.
    assert report['fraction_within_1e-4'] > 0.999, report
    assert report['max_element_diff'] <= 2 * 2e-4 * 1.01, report
    assert report['zero_gradient_bias_diff'] <= 2 * 2e-4 * 1.01, report


def test_two_workers_train_together(tmp_path):
    from PIL import Image
    images = tmp_path / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(64):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            images / f'{index}.png')
    run = tmp_path / 'run'
    output = _run_script(os.path.join(SCRIPTS, 'two_workers.py'), str(images), str(run), '3')
    assert output.count('Done: 48 images seen') == 2, output
    with open(run / 'metrics.jsonl') as f:
        assert [json.loads(line)['n_images'] for line in f] == [16, 32, 48]
    assert sorted(os.listdir(run / 'training-checkpoints'))[0] == 'checkpoint'
    assert not [name for name in os.listdir(run) if name.startswith('.worker')]


@pytest.mark.parametrize('precision', ['mixed_float16', 'mixed_bfloat16'])
def test_mixed_precision_steps_train_with_float32_outputs(precision):
    conf = config.make_config('tiny', batch_size=4, precision=precision,
                              policy='color,translation,cutout')
    ladagan = gan.LadaGAN(model.build_generator(conf), model.build_discriminator(conf), conf)
    assert ladagan.generator.block_8.attn.wq.compute_dtype == precision.split('_')[1]
    assert ladagan.generator.trainable_variables[0].dtype == tf.float32
    real = tf.random.uniform([4, 32, 32, 3], -1, 1, seed=0)
    for _ in range(6):  # float16 starts at loss scale 2^15 and halves until R1 is finite
        metrics = ladagan.train_step(real)
    assert all(np.isfinite(float(value)) for value in metrics.values()), metrics
    assert float(metrics['gp']) > 0  # R1 must not underflow to zero
    images, attn_maps = ladagan.ema_generator(tf.random.normal([2, 128]))
    logits = ladagan.discriminator(images)
    assert images.dtype == logits.dtype == attn_maps[0].dtype == tf.float32
    assert keras_policy_is_float32()


def keras_policy_is_float32():
    import keras
    return keras.config.dtype_policy().name == 'float32'
