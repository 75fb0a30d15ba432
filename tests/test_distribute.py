"""tf.distribute and mixed precision: same step on two replicas, two workers, float16/bfloat16."""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, 'tests', 'scripts')
sys.path.insert(0, ROOT)

import config  # noqa: E402
import train  # noqa: E402
import trainer  # noqa: E402
from test_readme_commands import COMMANDS, MULTIWORKER, free_ports, run_command  # noqa: E402
from test_robustness import (_latest, _losses, _metrics, _read, _wait_for,  # noqa: E402
                             assert_same_final_checkpoint)
from conftest import render_shape_images  # noqa: E402


def _run_script(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                            timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


# Lazy R1 on two replicas rides with bfloat16 (the update that takes the penalty, weighted by 4):
# one case fewer to trace (each is about 45 s of the suite).
MIRRORED_CASES = ('float32:1', 'mixed_bfloat16:4', 'mixed_float16:1:256')


@pytest.fixture(scope='module')
def mirrored_reports():
    """{case: report} of tests/scripts/mirrored_step.py, one process for all cases: logical
    devices must be set before TensorFlow initialises, so not in this process."""
    return json.loads(_run_script(os.path.join(SCRIPTS, 'mirrored_step.py'),
                                  *MIRRORED_CASES).splitlines()[-1])


# The tests read one module fixture: one test process for all, or xdist runs it twice.
@pytest.mark.slow
@pytest.mark.xdist_group('mirrored_step')
def test_mirrored_step_equals_the_single_device_step(mirrored_reports):
    # Two logical CPU devices, global batch 8 (4 per replica), synchronised batch norm.
    report = mirrored_reports['float32:1']
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
@pytest.mark.xdist_group('mirrored_step')
@pytest.mark.parametrize('case', ['mixed_bfloat16:4', 'mixed_float16:1:256'])
def test_mixed_precision_mirrored_step_is_the_single_device_step(case, mirrored_reports):
    # The float32 islands and float16 loss scaling on two replicas: the same step as on one
    # device, to the reduced precision's rounding; in bfloat16 with lazy R1, the update that
    # takes the penalty (weighted by 4) on both. Adam's first update is about lr * sign(g),
    # so an element whose gradient is within rounding of zero may land up to 2 * lr apart.
    report = mirrored_reports[case]
    assert report['replicas'] == 2 and report['n_images'] == [8, 8]
    assert report['metrics']['gp'] > 0
    assert report['metric_diff'] < 2e-3, report
    assert report['fraction_within_1e-4'] > 0.98, report
    assert report['max_element_diff'] <= 2 * 2e-4 * 1.01, report
    if case.startswith('mixed_float16'):  # applied on both, at the scale set
        for metrics in (report['metrics'], report['mirrored_metrics']):
            assert metrics['step_skipped'] == 0 and metrics['d_loss_scale'] == 256
    # The bulk in the reduced precision, the weights and every output float32, the process's
    # Keras policy untouched; on one device and on two.
    for dtypes in (report['dtypes'], report['mirrored_dtypes']):
        assert dtypes == {'wq_compute': case.split(':')[0].split('_')[1],
                          'variables': ['float32'], 'outputs': ['float32'] * 3,
                          'global_policy': 'float32'}, dtypes


@pytest.mark.slow
def test_train_py_on_two_replicas_resumes_a_killed_run_exactly_and_starts_from_init_from(
        tmp_path):
    """train.py itself with --strategy mirrored on two logical CPU devices (two replicas: the
    per-replica batches, mirrored variables, the Trainer with them): a run SIGKILLed after a
    checkpoint and resumed by the same command has the uninterrupted run's losses at every step
    and its every final value; --init_from that run into a mirrored run starts from it."""
    images = render_shape_images(str(tmp_path / 'images'), 40, size=32)
    total = 12  # steps; a checkpoint every 4 (each save draws its pictures: about 2 s)
    args = ['--strategy', 'mirrored', '--preset', 'tiny', '--file_pattern', images,
            '--total_iter', str(total), '--ckpt_inter', '4', '--metrics_inter', '1',
            '--fid_inter', '0', '--set', 'batch_size=8', '--seed', '1']
    whole, killed, started = (str(tmp_path / name) for name in ('whole', 'killed', 'started'))
    two_devices = os.path.join(SCRIPTS, 'two_devices.py')
    # The uninterrupted run, then --init_from it, in one process.
    out = _run_script(two_devices, *args, '--model_dir', whole, '--then', '--init_from', whole,
                      '--strategy', 'mirrored', '--file_pattern', images, '--model_dir', started,
                      '--total_iter', '1', '--fid_inter', '0')
    assert out.count('; 2 replica(s)') == 2, out
    assert 'Train dataset: 40 images, 10 batches of 4 per epoch (one per replica, 2 a step)' in out
    assert f'G, its EMA and D start from {whole}' in out, out
    assert len(_metrics(started)) == 1
    ckpt_dir = os.path.join(killed, 'training-checkpoints')
    with open(tmp_path / 'killed.txt', 'w') as log:
        process = subprocess.Popen([sys.executable, two_devices] + args + ['--model_dir', killed],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
        try:
            _wait_for(lambda: _latest(ckpt_dir)[1] >= 4 * 8, process, 300,
                      'the checkpoint at step 4')
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    killed_at = _latest(ckpt_dir)[1]
    assert killed_at < total * 8, _read(tmp_path / 'killed.txt')
    out = _run_script(two_devices, *args, '--model_dir', killed)
    assert f'Resumed from {ckpt_dir}/ckpt-{killed_at}: {killed_at:,} images seen' in out, out
    assert len(_losses(killed)) == total and _losses(killed) == _losses(whole)
    assert_same_final_checkpoint(killed, whole)


@pytest.mark.slow
@pytest.mark.xdist_group('commands_multiworker')
def test_two_workers_train_together(workspaces):
    """Two worker processes on localhost, configured by TF_CONFIG, train 12 steps together into
    one run folder: docs/distributed.md's multi-worker command, run once and shared with
    tests/test_readme_commands.py, checked by check_two_workers (both workers finish with 192
    images seen, metrics every 16, the checkpoint state file, no scratch folder left)."""
    run_command(workspaces, MULTIWORKER)


def _run_workers(argv, cwd, name, model_dirs=None, sigterm_worker_1_when=None):
    """One train.py process per worker (two) on free local ports, each with its TF_CONFIG (and
    its --model_dir, where `model_dirs` gives one); with `sigterm_worker_1_when`, SIGTERM to
    worker 1 once that condition holds. Returns (exit codes, outputs)."""
    ports = free_ports(2)
    cluster = {'worker': [f'127.0.0.1:{port}' for port in ports]}
    logs = [os.path.join(cwd, f'{name}{index}.txt') for index in range(2)]
    workers = []
    try:
        for index, log in enumerate(logs):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', TF_CONFIG=json.dumps(
                {'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
            model_dir = (model_dirs or [None, None])[index]
            with open(log, 'w') as out:
                workers.append(subprocess.Popen(
                    argv + (['--model_dir', model_dir] if model_dir else []), cwd=cwd,
                    env=env, stdout=out, stderr=subprocess.STDOUT))
        if sigterm_worker_1_when:
            _wait_for(sigterm_worker_1_when, workers[0], 300, 'the moment to stop')
            workers[1].send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    return codes, [_read(log) for log in logs]


@pytest.mark.slow
@pytest.mark.xdist_group('commands_multiworker')
def test_sigterm_to_one_worker_stops_both_at_one_step_and_the_resume_is_the_uninterrupted_run(
        workspaces, tmp_path):
    """docs/distributed.md's multi-worker command, with its test's options, in a copy of its
    workspace: SIGTERM to worker 1 (not the chief) once two steps are logged. Both workers stop
    after the same step, save it together and exit 0; started again with worker 1 in a folder
    of its own, both refuse; started again as before, both resume and finish, and the losses
    of every step and every value of the final checkpoint are those of the command's
    uninterrupted run."""
    run_command(workspaces, MULTIWORKER)  # the uninterrupted run
    workspace = workspaces.folder('multiworker')
    reference = os.path.join(workspace, 'runs', 'cifar10')
    shutil.copytree(os.path.join(workspace, 'data'), tmp_path / 'data')
    words = shlex.split(f'{MULTIWORKER} {COMMANDS[MULTIWORKER].append}')
    assert words[0].startswith('TF_CONFIG=') and words[1:3] == ['python3', 'train.py']
    argv = [sys.executable, os.path.join(ROOT, 'train.py')] + words[3:]
    total_images = int(words[words.index('--total_iter') + 1]) * 16
    run = str(tmp_path / 'runs' / 'cifar10')
    codes, outputs = _run_workers(
        argv, str(tmp_path), 'worker', sigterm_worker_1_when=lambda: os.path.isfile(
            os.path.join(run, 'metrics.jsonl')) and len(_metrics(run)) >= 2)
    assert codes == [0, 0], outputs
    stops = [re.search(r'Stopped (.*); the checkpoint at ([\d,]+) images is saved', out)
             for out in outputs]
    assert stops[0].group(1) == 'with the other workers, one of which was signalled', outputs[0]
    assert stops[1].group(1) == 'on signal 15', outputs[1]
    stopped_at = int(stops[0].group(2).replace(',', ''))
    assert stops[1].group(2) == stops[0].group(2) and 32 <= stopped_at < total_images, outputs
    # Agreed at the first step and every trainer.STOP_CHECK_STEPS-th: signalled after step 2,
    # both stopped after step 10.
    assert stopped_at == trainer.STOP_CHECK_STEPS * 16, outputs
    assert _latest(os.path.join(run, 'training-checkpoints'))[1] == stopped_at
    assert not [name for name in os.listdir(run) if name.startswith('.worker')]

    # A worker whose --model_dir is not the chief's folder (as on a disk of its own) would
    # resume elsewhere: both workers refuse, exit 2, and the run folder keeps its checkpoint.
    codes, outputs = _run_workers(argv, str(tmp_path), 'apart',
                                  model_dirs=[None, str(tmp_path / 'own')])
    assert codes == [2, 2], outputs
    assert (f'this worker finds step 0 in {tmp_path / "own"}, the chief step '
            f'{stopped_at // 16}') in outputs[1]
    assert f"another worker does not find the chief's step {stopped_at // 16}" in outputs[0]
    for out in outputs:
        assert ('--model_dir must be one folder on storage that every worker reads' in
                out.splitlines()[-1]) and 'Traceback' not in out, out
    assert _latest(os.path.join(run, 'training-checkpoints'))[1] == stopped_at

    codes, outputs = _run_workers(argv, str(tmp_path), 'resumed')
    assert codes == [0, 0], outputs
    for out in outputs:
        assert f'{stopped_at:,} images seen' in out and f'Done: {total_images} images' in out
        assert 'Host reads of collectives in 2 steps: 1 to agree whether to stop' in out
    assert _losses(run) == _losses(reference)
    assert len(_losses(run)) == total_images // 16
    assert_same_final_checkpoint(run, reference)


@pytest.mark.slow
def test_float16_on_two_workers_skips_one_workers_overflow_on_both_and_a_stalled_worker_fails_both(
        tmp_path):
    """Two train.py workers under mixed_float16 (tests/scripts/overflow_on_one_worker.py, tiny
    preset, 12 steps, a checkpoint at step 9): worker 1's D gradients overflow on that worker
    alone after every two applied updates. Both workers skip every update that overflowed on
    either, with the same loss scales at every step, and their checkpoints at step 9 are equal,
    value for value. (Each worker deciding from its own gradients, as before #36, left them
    waiting for each other for good at the first such update: with that code both time out
    there, and this test fails.) Then the chief comes to the stop check before step 11 later
    than --collective_timeout: worker 1 waits there, a host agreement, untimed, and goes on.
    Then worker 1 stalls past the timeout before step 11: worker 0's step times out, and each
    ends with one sentence, exit 1, instead of waiting for ever."""
    images = render_shape_images(str(tmp_path / 'images'), 64, size=32)
    run = str(tmp_path / 'run')
    argv = [sys.executable, os.path.join(SCRIPTS, 'overflow_on_one_worker.py'), '--behind_at',
            '11', '--collective_timeout', '15', '--strategy', 'multiworker', '--preset', 'tiny',
            '--file_pattern', images, '--model_dir', run, '--total_iter', '12', '--fid_inter',
            '0', '--metrics_inter', '1', '--ckpt_inter', '9', '--set', 'batch_size=16', '--set',
            'precision=mixed_float16']
    codes, outputs = _run_workers(argv, str(tmp_path), 'worker')
    assert codes == [1, 1], outputs
    timed_out = 'error: a collective of the training step waited 15 s for the other workers'
    lost = 'error: this worker lost another worker of the run'
    # One error line each (stdout and stderr share a log: not necessarily the last line).
    errors = [[line for line in out.splitlines() if line.startswith('error: ')]
              for out in outputs]
    assert len(errors[0]) == 1 and errors[0][0].startswith(timed_out), outputs[0]
    # Worker 1 waited for the late chief at the stop check without a timeout, then stalled.
    assert 'late to the stop check before step 11' in outputs[0], outputs[0]
    assert 'behind before step 11' in outputs[1], outputs[1]
    # Back, worker 1 finds worker 0 gone, or (before the health check notices) times out too.
    assert len(errors[1]) == 1 and errors[1][0].startswith((lost, timed_out)), outputs[1]
    assert not [out for out in outputs if 'Traceback' in out], outputs

    # Whether each worker's own gradients overflowed, update by update (steps 1 to 10).
    overflowed = [{name: [int(flag) for flag in re.findall(rf'overflowed {name} (\d)', out)][:10]
                   for name in ('d_loss_scale', 'g_loss_scale')} for out in outputs]
    assert len(overflowed[1]['d_loss_scale']) == 10, outputs[1]
    worker_1_alone = [step for step, (own, other) in enumerate(zip(
        overflowed[1]['d_loss_scale'], overflowed[0]['d_loss_scale']), 1) if own and not other]
    assert len(worker_1_alone) >= 2, overflowed
    logs = [_metrics(folder)[:10] for folder in (run, os.path.join(run, '.worker-1'))]
    for name in ('d_loss_scale', 'g_loss_scale'):
        scales = [[record[name] for record in log] for log in logs]
        assert scales[0] == scales[1], (name, scales)
        either = [max(flags) for flags in zip(overflowed[0][name], overflowed[1][name])]
        # Halved after every update that overflowed on either worker, else kept (from 2^15).
        assert [after / before for before, after in zip([2.0 ** 15] + scales[0], scales[0])
                ] == [0.5 if flag else 1.0 for flag in either], (name, scales, overflowed)
    assert [record['skipped_steps'] for record in logs[0]] == [
        record['skipped_steps'] for record in logs[1]]
    assert _latest(os.path.join(run, 'training-checkpoints'))[1] == 9 * 16
    assert_same_final_checkpoint(run, os.path.join(run, '.worker-1'))


@pytest.mark.slow
def test_the_chiefs_step_reaches_every_replica_exactly_on_six_and_seven_devices():
    # One worker's replicas as logical devices. The old way (each replica sending step / devices
    # in float32) changes 349,515 of these steps on six devices and 549,246 on seven: a valid
    # resume refused on every worker (#36).
    report = json.loads(_run_script(os.path.join(SCRIPTS, 'exact_broadcast.py')).splitlines()[-1])
    for devices in ('6', '7'):
        assert report[devices]['divided'] > 100_000, report  # the check can see the old error
        assert report[devices]['exact'] == 0, report


def test_one_worker_means_every_replica_is_this_processs():
    """A strategy with a cluster resolver runs on several workers only when it has more
    replicas than this process has devices: a single-host TPU (8 cores, one process, always a
    resolver) agrees with no one, so it reads no collective before its steps; two workers of
    one device each do. No TPU here: the strategies are stand-ins with what TPUStrategy and
    MultiWorkerMirroredStrategy expose; the two-worker tests run the real one."""
    import types

    import distribute

    def strategy(replicas, local_devices):
        return types.SimpleNamespace(
            cluster_resolver=object(), num_replicas_in_sync=replicas,
            extended=types.SimpleNamespace(worker_devices=tuple(
                f'/job:worker/replica:0/task:0/device:TPU:{i}' for i in range(local_devices))))
    assert distribute.one_worker(strategy(8, 8))
    assert not distribute.one_worker(strategy(2, 1))
    assert distribute.one_worker(tf.distribute.get_strategy())


def test_auto_strategy_on_one_cpu_is_the_default_one_and_its_process_is_the_chief(monkeypatch):
    import distribute
    for variable in ('TF_CONFIG', 'TPU_NAME', 'COLAB_TPU_ADDR'):
        monkeypatch.delenv(variable, raising=False)
    strategy = distribute.make_strategy('auto')
    assert strategy is tf.distribute.get_strategy() and distribute.is_chief(strategy)
    assert distribute.broadcast_from_chief(strategy, 2.5, True) == 2.5
    with pytest.raises(config.UserError, match='needs TF_CONFIG'):
        distribute.make_strategy('multiworker')


def test_strategy_tpu_without_a_tpu_is_one_sentence(tmp_path, capsys, monkeypatch):
    """No TPU here: --strategy tpu ends with one sentence, exit 2, nothing written. On a TPU it
    would print distribute.TPU_UNTESTED, what no test here could run."""
    for variable in ('TPU_NAME', 'COLAB_TPU_ADDR', 'TPU_CONFIG', 'KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS'):
        monkeypatch.delenv(variable, raising=False)  # no cloud metadata server to ask
    images = render_shape_images(str(tmp_path / 'images'), 16, size=32)
    run = str(tmp_path / 'run')
    assert train.main(['--strategy', 'tpu', '--preset', 'tiny', '--file_pattern', images,
                       '--model_dir', run, '--total_iter', '1', '--fid_inter', '0']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: --strategy tpu found no TPU (') and '\n' not in err, err
    assert not os.path.exists(run)
