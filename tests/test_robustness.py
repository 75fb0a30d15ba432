"""Never lose a run: kills at any moment, bad input, failing side jobs, seeded repeats, untrusted
files (the NaN guard: test_guard.py; float16's overflows: test_float16.py).

The crash and determinism tests run `train.py` as a real process (SIGKILL cannot be faked in
process); the others call `train.main` in process. All use the tiny preset on ~50 small PNGs.
"""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import config  # noqa: E402
import data  # noqa: E402
import fid  # noqa: E402
import model  # noqa: E402
import train  # noqa: E402
from conftest import write_noise_images  # noqa: E402

TRAIN = os.path.join(ROOT, 'train.py')
TINY = ['--preset', 'tiny', '--set', 'jit=False', '--metrics_inter', '1']
BATCH = 16  # the tiny preset's batch size
LR_KEY = 'g_optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE'


# ---------------------------------------------------------------- data and helpers

@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, dataset):
    """A complete seeded 2-step run (in this process) with a checkpoint after each step:
    (folder, its command line)."""
    run = str(tmp_path_factory.mktemp('robust_runs') / 'run')
    args = TINY + ['--file_pattern', dataset, '--fid_inter', '0', '--ckpt_inter', '1',
                   '--total_iter', '2', '--seed', '3', '--model_dir', run]
    # The odd images train; the truncated one is skipped and counted.
    with pytest.warns(data.SkippedImagesWarning, match='Skipped 1 of 47 image files'):
        assert train.main(args) == 0
    return run, args


def _tree(path):
    """{relative path: (size, mtime)} of every file under `path`, or None when it is missing."""
    if not os.path.exists(path):
        return None
    files = {}
    for folder, _, names in os.walk(path):
        for name in names:
            full = os.path.join(folder, name)
            status = os.stat(full)
            files[os.path.relpath(full, path)] = (status.st_size, status.st_mtime_ns)
    return files


def _metrics(run):
    with open(os.path.join(run, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]  # every line must parse


def _latest(ckpt_dir):
    """(prefix, images seen) of the checkpoint the state file names, or (None, 0)."""
    prefix = tf.train.latest_checkpoint(ckpt_dir)
    return (prefix, int(prefix.rsplit('-', 1)[1])) if prefix else (None, 0)


def _weights_finite(prefix):
    """Whether every float variable of a checkpoint but the FIDs (NaN/inf when off) is finite."""
    reader = tf.train.load_checkpoint(prefix)
    return all(np.all(np.isfinite(reader.get_tensor(key)))
               for key, dtype in reader.get_variable_to_dtype_map().items()
               if dtype.is_floating and not key.startswith(('fid/', 'best_fid/')))


# ---------------------------------------------------------------- bad input

def _truncate(path):
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


def _write(path, text):
    with open(path, 'w') as f:
        f.write(text)


def _data_file(run):
    prefix, _ = _latest(os.path.join(run, 'training-checkpoints'))
    return prefix + '.data-00000-of-00001'


def _corrupt_images(tmp, count=40):
    folder = os.path.join(tmp, 'corrupt')
    os.makedirs(folder)
    for index in range(count):
        _write(os.path.join(folder, f'{index}.png'), 'not an image')
    return folder


def _few_images(tmp):
    return write_noise_images(os.path.join(tmp, 'few'), 5)


# (name, extra arguments given (tmp dir, dataset), mutation of the resumed run or None for a
# fresh --model_dir, words the one-line error must hold). A resumed case starts from the
# command that made `finished_run`, so only the named change differs.
BAD_INPUTS = [
    ('missing dataset', lambda tmp, data: ['--file_pattern', os.path.join(tmp, 'nope')], None,
     'does not exist'),
    ('empty dataset', lambda tmp, data: ['--file_pattern', tmp], None, 'No images found'),
    ('only corrupt files', lambda tmp, data: ['--file_pattern', _corrupt_images(tmp)], None,
     'None of the first 32 of 40 image files could be decoded'),
    # Fewer corrupt files than a batch: still "none decodes", not "too few usable images".
    ('few corrupt files', lambda tmp, data: ['--file_pattern', _corrupt_images(tmp, 9)], None,
     'None of the 9 image files could be decoded'),
    ('eval_dir too small', lambda tmp, data: ['--file_pattern', data, '--fid_inter', '10',
                                              '--eval_dir', _few_images(tmp)], None,
     'holds 5 images but the in-training FID needs n_fid_real=500'),
    ('unsupported img_size', lambda tmp, data: ['--file_pattern', data, '--set', 'img_size=48'],
     None, 'img_size=48 is not supported'),
    ('dims vs heads', lambda tmp, data: ['--file_pattern', data, '--set', 'g_heads=[3,2,2]'],
     None, 'g_dim[0]=64 is not divisible by g_heads[0]=3'),
    ('dims vs size', lambda tmp, data: ['--file_pattern', data, '--set', 'img_size=64'], None,
     'd_enc_dim=[16, 32] must have 3 entries for img_size 64'),
    ('unknown preset', lambda tmp, data: ['--file_pattern', data, '--preset', 'huge'], None,
     "unknown preset 'huge'"),
    ('unknown key', lambda tmp, data: ['--file_pattern', data, '--set', 'batchsize=8'], None,
     "unknown config key 'batchsize'"),
    ('wrong type', lambda tmp, data: ['--file_pattern', data, '--set', 'batch_size=1.5'], None,
     'batch_size=1.5 has the wrong type'),
    ('corrupt config.json', lambda tmp, data: [],
     lambda run: _write(os.path.join(run, 'config.json'), '{"img_size": 32,'),
     'is not a valid LadaGAN config'),
    ('config.json not an object', lambda tmp, data: [],
     lambda run: _write(os.path.join(run, 'config.json'), 'null'), 'not a JSON object'),
    ('truncated checkpoint', lambda tmp, data: [], lambda run: _truncate(_data_file(run)),
     "is corrupt (Read less bytes than requested); point"),
    ('corrupt checkpoint state', lambda tmp, data: [],
     lambda run: _write(os.path.join(run, 'training-checkpoints', 'checkpoint'), 'garbage{'),
     'checkpoint state file'),
    ('other architecture', lambda tmp, data: ['--preset', 'cifar10'], None,
     'holds a run with'),
]


def _is_resume(case):
    return case[2] is not None or case[0] == 'other architecture'


# A resumed case needs `finished_run`, a real (2-step) training: those are slow, and share one
# test process (xdist group) so that the run is trained once.
FINISHED_RUN_GROUP = pytest.mark.xdist_group('finished_run')


@pytest.mark.parametrize('name, extra_args, mutate, message', [
    pytest.param(*case, id=case[0],
                 marks=[pytest.mark.slow, FINISHED_RUN_GROUP] if _is_resume(case) else [])
    for case in BAD_INPUTS])
def test_bad_input_is_one_sentence_exit_2_and_changes_nothing(
        name, extra_args, mutate, message, tmp_path, dataset, capsys, request):
    if not _is_resume((name, extra_args, mutate, message)):
        run = str(tmp_path / 'fresh_run')
        args = TINY + ['--fid_inter', '0', '--model_dir', run]
    else:  # a resume of an existing run
        finished_run = request.getfixturevalue('finished_run')
        run = str(tmp_path / 'run')
        shutil.copytree(finished_run[0], run)
        if mutate is not None:
            mutate(run)
        args = [arg if arg != finished_run[0] else run for arg in finished_run[1]]
    args = args + extra_args(str(tmp_path), dataset)
    before = _tree(run)
    capsys.readouterr()
    assert train.main(args) == 2
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith('error: ')]
    assert len(error_lines) == 1 and message in error_lines[0], err
    assert 'Traceback' not in err
    assert _tree(run) == before


@pytest.mark.slow
def test_bad_input_from_the_real_command_line(tmp_path):
    """The same answer from a process: exit code 2, one `error:` line, no traceback."""
    run = str(tmp_path / 'run')
    result = subprocess.run([sys.executable, TRAIN, '--preset', 'tiny', '--set', 'jit=yes',
                             '--model_dir', run], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: jit='yes' is not allowed: use True, False or 'auto'")
    assert 'Traceback' not in result.stderr and not os.path.exists(run)


# ---------------------------------------------------------------- kills and signals

def _wait_for(condition, process, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            raise AssertionError(f'train.py exited ({process.returncode}) before {what}')
        time.sleep(0.002)
    raise AssertionError(f'timed out waiting for {what}')


def _start(command, log_path):
    log = open(log_path, 'w')
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log


def _read(path):
    with open(path, errors='replace') as f:
        return f.read()


@pytest.mark.slow
def test_sigkill_at_any_moment_then_the_same_command_resumes(tmp_path, dataset):
    run = str(tmp_path / 'run')
    ckpt_dir = os.path.join(run, 'training-checkpoints')
    command = [sys.executable, TRAIN] + TINY + [
        '--file_pattern', dataset, '--model_dir', run, '--fid_inter', '0', '--ckpt_inter', '1',
        '--total_iter', '1000']

    def saving():  # TF writes a checkpoint into <prefix>_temp/ before renaming it into place
        return os.path.isdir(ckpt_dir) and any(name.endswith('_temp')
                                               for name in os.listdir(ckpt_dir))

    # 1. SIGKILL while a checkpoint is being written (after a first complete one). It has
    # landed mid-write when the temporary folder outlives the process; else try again.
    landed_mid_write = False
    for attempt in range(3):
        process, log = _start(command, tmp_path / f'log1_{attempt}.txt')
        try:
            _wait_for(lambda: _latest(ckpt_dir)[0], process, 240, 'a first checkpoint')
            _wait_for(saving, process, 60, 'a checkpoint write')
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
            log.close()
        if saving():
            landed_mid_write = True
            break
    assert landed_mid_write
    seen_at_kill = _latest(ckpt_dir)[1]
    assert seen_at_kill >= BATCH

    # 2. The same command resumes from the last complete checkpoint; kill it again at another
    # moment, right after a newer checkpoint's state is written (samples, metrics, sweep).
    process, log = _start(command, tmp_path / 'log2.txt')
    try:
        _wait_for(lambda: _latest(ckpt_dir)[1] > seen_at_kill, process, 240,
                  'a checkpoint after the resume')
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        log.close()
    out = _read(tmp_path / 'log2.txt')
    assert f'Resumed from {ckpt_dir}/ckpt-{seen_at_kill}: {seen_at_kill:,} images seen' in out
    seen_at_kill_2 = _latest(ckpt_dir)[1]

    # 3. Again, and this time SIGTERM: a checkpoint is saved before the process exits.
    process, log = _start(command, tmp_path / 'log3.txt')
    try:
        _wait_for(lambda: _latest(ckpt_dir)[1] > seen_at_kill_2, process, 240,
                  'a checkpoint after the second resume')
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
    finally:
        log.close()
    out = _read(tmp_path / 'log3.txt')
    assert f'Resumed from {ckpt_dir}/ckpt-{seen_at_kill_2}: {seen_at_kill_2:,} images seen' in out
    stopped = re.search(r'Stopped on signal 15; the checkpoint at ([\d,]+) images is saved', out)
    assert stopped, out
    final_prefix, final_seen = _latest(ckpt_dir)
    assert final_seen == int(stopped.group(1).replace(',', '')) > seen_at_kill_2
    assert _weights_finite(final_prefix)

    # Images seen only ever continue: the records of steps a kill undid were dropped.
    seen = [record['n_images'] for record in _metrics(run)]
    assert seen == list(range(BATCH, final_seen + 1, BATCH))


def _losses(run):
    """metrics.jsonl without its clocks (images/s and training seconds differ between runs)."""
    return [{key: value for key, value in record.items()
             if key not in ('images_per_sec', 'train_seconds')} for record in _metrics(run)]


def _checkpoint_values(prefix):
    """{variable: value} of a checkpoint but its training clock and its count of the saves this
    process made (tf.train.Checkpoint's save_counter: 1 after a resume, 3 without)."""
    reader = tf.train.load_checkpoint(prefix)
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if not key.startswith(('train_seconds/', 'save_counter/',
                                   '_CHECKPOINTABLE_OBJECT_GRAPH'))}



def assert_same_final_checkpoint(run, reference):
    """The latest checkpoints of two run folders hold the same variables, value for value (but
    their clocks and save counters); returns the first's values."""
    final, expected = (_checkpoint_values(_latest(os.path.join(folder, 'training-checkpoints'))[0])
                       for folder in (run, reference))
    assert final.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(final[key], value, err_msg=key)
    return final

@pytest.mark.slow
def test_a_run_killed_twice_and_resumed_is_the_uninterrupted_run(tmp_path, monkeypatch, capsys,
                                                                  fid_weights):
    """SIGKILL after the checkpoint in the middle of the second epoch, and again after the one at
    the end of the third; the same command resumes each time (in other processes than the
    uninterrupted run's, which runs in this one). Losses, R1 and logit means of
    every step, the FID of every evaluation (two of them redone after a kill in the middle of
    them: the latest checkpoint, written before FID, loses no training) and every value of the
    final checkpoint are those of the run never interrupted.
    The interrupted run decodes its images into memory (--no_data_cache), then reads them
    from the image cache its second part writes, then from that cache again, on a set with an
    undecodable file: every way of reading draws the same order, from the step.
    On the demo model, the one users run first: its step, unlike the tiny preset's, differed
    between processes while Grappler rewrote it (docs/determinism.md); the tiny preset takes
    the same code path, so it is not run again here."""
    preset = 'demo'
    batch = config.make_config(preset).batch_size
    images = write_noise_images(str(tmp_path / 'images'), batch * 5 // 2)  # 2 batches an epoch
    with open(os.path.join(images, 'noise_040b.png'), 'w') as f:  # sorted among them
        f.write('not an image')
    # FID at every checkpoint: each kill comes during an evaluation, which the resume redoes.
    args = ['--preset', preset, '--file_pattern', images, '--fid_inter', '3', '--ckpt_inter', '3',
            '--metrics_inter', '1', '--total_iter', '9', '--seed', '3',
            '--set', f'n_fid_real={batch * 5 // 2}', '--set', 'n_fid_gen=50']
    uninterrupted, run = str(tmp_path / 'uninterrupted'), str(tmp_path / 'run')
    assert train.main(args + ['--model_dir', uninterrupted]) == 0
    ckpt_dir = os.path.join(run, 'training-checkpoints')
    command = [sys.executable, TRAIN] + args + ['--model_dir', run]
    env = dict(os.environ, LADAGAN_CACHE_DIR=str(tmp_path / 'cache'))  # no image cache yet
    for part, (kill_at, extra) in enumerate(((3, ['--no_data_cache']), (6, []))):
        with open(tmp_path / f'log{part}.txt', 'w') as log:
            process = subprocess.Popen(command + extra, stdout=log, stderr=subprocess.STDOUT,
                                       cwd=ROOT, env=env)
            try:
                _wait_for(lambda: _latest(ckpt_dir)[1] >= kill_at * batch, process, 300,
                          f'the checkpoint at step {kill_at}')
                # The latest checkpoint is written before FID is evaluated: kill inside the
                # evaluation (50 generated images take seconds through the FID network).
                written = len(_read(tmp_path / f'log{part}.txt'))
                _wait_for(lambda: 'FID generated features' in _read(
                    tmp_path / f'log{part}.txt')[written:], process, 120,
                    f'the evaluation at step {kill_at} to start')
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait()
        assert _latest(ckpt_dir)[1] == kill_at * batch  # killed before the next checkpoint
        assert kill_at * batch not in [record['n_images'] for record in _metrics(run)
                                       if 'fid' in record]  # killed mid-evaluation
    log = _read(tmp_path / 'log0.txt')
    assert 'decoded into memory (--no_data_cache)' in log and 'Resumed' not in log
    log = _read(tmp_path / 'log1.txt')
    assert 'read from the image cache' in log and '1 of 81 files did not decode' in log
    assert f'Resumed from {ckpt_dir}/ckpt-{3 * batch}: {3 * batch} images seen' in log
    redone = ('The evaluation at {:,} images did not finish before the run stopped: evaluating '
              'again')
    assert redone.format(3 * batch) in log
    monkeypatch.setenv('LADAGAN_CACHE_DIR', str(tmp_path / 'cache'))
    capsys.readouterr()
    assert train.main(args + ['--model_dir', run]) == 0
    out = capsys.readouterr().out
    assert redone.format(6 * batch) in out and 'read from the image cache' in out
    # The same seed, run in this process and in others: the same losses, bit for bit.
    for folder in (run, uninterrupted):
        with open(os.path.join(folder, 'config.json')) as f:
            assert json.load(f)['seed'] == 3
    assert len(_losses(run)) == 9 + 3 and _losses(run) == _losses(uninterrupted)
    assert [record['n_images'] for record in _losses(run) if 'fid' in record] == [
        3 * batch, 6 * batch, 9 * batch]
    assert_same_final_checkpoint(run, uninterrupted)


@pytest.mark.slow
@FINISHED_RUN_GROUP
def test_a_kill_between_the_best_and_the_latest_save_resumes_from_the_best(
        tmp_path, finished_run, capsys):
    """A best checkpoint newer than the latest one (older versions wrote the best first, so a
    kill in between left it so) is resumed from. Made by hand from `finished_run`: its ckpt-32
    becomes the best checkpoint and the latest folder goes back to ckpt-16."""
    run = str(tmp_path / 'run')
    shutil.copytree(finished_run[0], run)
    latest_dir = os.path.join(run, 'training-checkpoints')
    best_dir = os.path.join(run, 'best-training-checkpoints')
    os.makedirs(best_dir)
    for name in os.listdir(latest_dir):
        if name.startswith(f'ckpt-{2 * BATCH}.'):
            shutil.move(os.path.join(latest_dir, name), best_dir)
    _write(os.path.join(best_dir, 'checkpoint'), f'model_checkpoint_path: "ckpt-{2 * BATCH}"\n')
    _write(os.path.join(latest_dir, 'checkpoint'), f'model_checkpoint_path: "ckpt-{BATCH}"\n')
    args = [run if arg == finished_run[0] else arg for arg in finished_run[1]]
    args[args.index('--total_iter') + 1] = '3'
    capsys.readouterr()
    assert train.main(args) == 0
    out = capsys.readouterr().out
    assert f'Resumed from {best_dir}/ckpt-{2 * BATCH} instead, as new or newer: 32 images' in out
    assert _latest(latest_dir)[1] == 3 * BATCH
    records = _metrics(run)
    assert [record['n_images'] for record in records] == [16, 32, 48]
    assert records[:2] == _metrics(finished_run[0])  # step 2 was kept, not replayed


# ---------------------------------------------------------------- side jobs

@pytest.mark.slow
def test_a_failing_side_job_warns_and_the_run_trains_on(tmp_path, dataset, capsys):
    """Mid-run, once the first sample grid is written, a file takes the samples folder's place
    (as root, permission bits would not stop a write): every later grid and attention map
    fails. Each failure is one warning line; the run saves and logs every step to its end."""
    run = str(tmp_path / 'run')
    samples = os.path.join(run, 'samples')

    def break_the_samples_folder():
        deadline = time.time() + 300
        while time.time() < deadline and not glob.glob(os.path.join(samples, 'grid_*.png')):
            time.sleep(0.005)
        os.rename(samples, samples + '.before')
        with open(samples, 'w') as f:
            f.write('not a folder')

    breaker = threading.Thread(target=break_the_samples_folder, daemon=True)
    breaker.start()
    assert train.main(TINY + ['--file_pattern', dataset, '--model_dir', run, '--fid_inter', '0',
                              '--ckpt_inter', '1', '--total_iter', '4']) == 0
    breaker.join()
    out = capsys.readouterr().out
    # Saves 2 to 4 came after the swap (save 1's grid is what triggered it).
    assert out.count('warning: the sample grid failed, training goes on') == 3, out
    assert out.count('warning: the attention maps failed, training goes on') >= 3, out
    assert 'Traceback' not in out
    assert os.path.isfile(samples)  # nothing repaired or removed what the user's disk holds
    assert _latest(os.path.join(run, 'training-checkpoints'))[1] == 4 * BATCH
    assert [record['n_images'] for record in _metrics(run)] == [BATCH, 2 * BATCH, 3 * BATCH,
                                                                4 * BATCH]
    assert os.path.getsize(os.path.join(run, 'loss_curves.png')) > 1000


# ---------------------------------------------------------------- untrusted files

class _Payload:
    """Unpickling this would create a marker file: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_statistics_file_with_a_pickle_is_refused_without_running_it(tmp_path):
    marker = str(tmp_path / 'code_ran')
    path = str(tmp_path / 'stats.npz')
    payload = np.array([_Payload(marker)], dtype=object)
    np.savez(path, mu=payload, sigma=np.eye(2))
    with pytest.raises(config.UserError):
        fid.load_statistics(path)
    assert not os.path.exists(marker)
    with open(path, 'rb') as f:  # np.savez pickled the payload into the file
        assert b'code_ran' in f.read()


# ---------------------------------------------------------------- what a checkpoint holds

def test_checkpoint_holds_every_weight(tmp_path):
    conf = config.make_config('tiny', img_size=64, dec_dim=[16], d_enc_dim=[8, 16, 32])
    nets = dict(ema_generator=model.build_generator(conf, name='ema_generator'),
                discriminator=model.build_discriminator(conf))
    prefix = tf.train.Checkpoint(**nets).write(str(tmp_path / 'ckpt'))
    stored = [key for key in tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
              if key.endswith('/.ATTRIBUTES/VARIABLE_VALUE')]
    assert len(stored) == sum(len(net.weights) for net in nets.values())
