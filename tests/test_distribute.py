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
from test_readme_commands import MULTIWORKER, run_command  # noqa: E402


def _run_script(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                            timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope='module')
def mirrored_reports():
    """{r1_interval: report} of tests/scripts/mirrored_step.py, one process for both intervals:
    logical devices must be set before TensorFlow initialises, so not in this process."""
    return json.loads(_run_script(os.path.join(SCRIPTS, 'mirrored_step.py'), 'float32',
                                  '1,4').splitlines()[-1])


# Both intervals read one module fixture: one test process for both, or xdist runs it twice.
@pytest.mark.slow
@pytest.mark.xdist_group('mirrored_step')
@pytest.mark.parametrize('r1_interval', [1, 4])
def test_mirrored_step_equals_the_single_device_step(r1_interval, mirrored_reports):
    # Two logical CPU devices, global batch 8 (4 per replica), synchronised batch norm; with
    # lazy R1, the update that takes the penalty (weighted by 4) on both.
    report = mirrored_reports[str(r1_interval)]
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


@pytest.mark.slow
@pytest.mark.xdist_group('commands_multiworker')
def test_two_workers_train_together(workspaces):
    """Two worker processes on localhost, configured by TF_CONFIG, train 3 steps together into
    one run folder: docs/distributed.md's multi-worker command, run once and shared with
    tests/test_readme_commands.py, checked by check_two_workers (both workers finish with 48
    images seen, metrics at 16, 32, 48, the checkpoint state file, no scratch folder left)."""
    run_command(workspaces, MULTIWORKER)


def test_auto_strategy_on_one_cpu_is_the_default_one_and_its_process_is_the_chief(monkeypatch):
    import distribute
    for variable in ('TF_CONFIG', 'TPU_NAME', 'COLAB_TPU_ADDR'):
        monkeypatch.delenv(variable, raising=False)
    strategy = distribute.make_strategy('auto')
    assert strategy is tf.distribute.get_strategy() and distribute.is_chief(strategy)
    assert distribute.broadcast_from_chief(strategy, 2.5, True) == 2.5
    with pytest.raises(config.UserError, match='needs TF_CONFIG'):
        distribute.make_strategy('multiworker')


@pytest.mark.slow
@pytest.mark.parametrize('precision', ['mixed_float16', 'mixed_bfloat16'])
def test_mixed_precision_steps_train_with_float32_outputs(precision):
    # Seeded: the weights must not depend on which tests ran before in this process. Unseeded, a
    # run of the whole suite drew weights whose float16 R1 still overflowed at the 6th step (scale
    # 2^10), and a skipped step returns a non-finite d_total (issue #20).
    tf.keras.utils.set_random_seed(0)
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
