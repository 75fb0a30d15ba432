"""guard.py decides; train.py carries it out. The decisions on sequences of FIDs and NaNs here;
real runs whose FID worsens (a diverging learning rate, real FID) below; then runs whose weights
or losses turn non-finite (the NaN guard)."""
import glob
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

import config
import gan
import guard
import plots
import train
from conftest import render_shape_images
from test_robustness import BATCH, LR_KEY, TINY, _latest, _metrics, _weights_finite


def _decisions(fids, **overrides):
    """The guard's actions, one per FID, for a run that evaluates `fids` in turn."""
    checker = guard.Guard(config.make_config('tiny', **overrides))
    best, actions = float('inf'), []
    for step, fid in enumerate(fids, 1):
        event = checker.after_evaluation(fid, best, f'step {step}')
        actions.append(event.action if event.action != 'restore' else 'restore ' + event.checkpoint)
        if event.action == 'restore':
            continue  # a rollback returns to the best: its FID stays the one to beat
        best = min(best, fid)
    return actions


def test_a_diverging_fid_only_warns_by_default():
    # Best 100; 160 and 170 are worse than 1.5 x 100 twice in a row: the default only warns.
    assert _decisions([100, 160, 170, 180, 90]) == [
        'continue', 'continue', 'warn', 'warn', 'continue']


def test_early_stopping_still_ends_a_run_that_the_guard_only_warns_about():
    assert _decisions([100, 160, 170, 180], early_stop_patience=3) == [
        'continue', 'continue', 'warn', 'finish']


def test_noise_below_the_factor_or_once_only_does_not_count():
    assert _decisions([100, 140, 149, 160, 120, 155], fid_guard='stop') == ['continue'] * 6


@pytest.mark.parametrize('mode, expected', [
    ('stop', ['continue', 'continue', 'stop']),
    ('rollback', ['continue', 'continue', 'restore best', 'continue', 'restore best',
                  'continue', 'stop']),
    ('off', ['continue'] * 7),
])
def test_stop_or_roll_back_at_most_n_times(mode, expected):
    assert _decisions([100, 200, 210, 220, 230, 240, 250][:len(expected)], fid_guard=mode,
                      fid_guard_retries=2) == expected


def test_early_stopping_finishes_after_patience_evaluations_without_a_new_best():
    assert _decisions([100, 90, 95, 91, 92], early_stop_patience=3) == [
        'continue', 'continue', 'continue', 'continue', 'finish']
    assert _decisions([100, 90, 95, 89, 92], early_stop_patience=3) == ['continue'] * 5


def test_nan_restores_share_the_learning_rate_halvings_with_rollbacks():
    checker = guard.Guard(config.make_config('tiny', nan_retries=1, fid_guard='rollback'))
    assert checker.after_non_finite('non-finite x', 'ckpt-16').action == 'restore'
    assert checker.after_evaluation(100, float('inf'), 'step 2').action == 'continue'
    for _ in range(2):
        event = checker.after_evaluation(200, 100, 'step 3')
    assert (event.action, event.checkpoint) == ('restore', 'best')
    assert checker.lr_halvings == 2
    stop = checker.after_non_finite('non-finite x', 'ckpt-32')
    assert stop.action == 'stop' and 'after 1 restore(s)' in stop.message


def test_the_weights_check_is_one_compiled_reduction_and_names_what_is_not_finite():
    import numpy as np
    import tensorflow as tf
    weights = {f'w{i}': tf.Variable(np.ones((3, 4), np.float32)) for i in range(50)}
    weights['n_images'] = tf.Variable(7, dtype=tf.int64)  # a counter: not checked
    traces = guard._all_finite.experimental_get_tracing_count()
    for _ in range(3):  # one trace for the network's list of weights, then none
        assert guard.non_finite_names(weights) == []
    assert guard._all_finite.experimental_get_tracing_count() == traces + 1
    weights['w7'].assign(np.full((3, 4), np.nan, np.float32))
    weights['w30'][1, 2].assign(np.inf)
    assert guard.non_finite_names(weights) == ['w7', 'w30']
    assert guard.non_finite_names({'loss': tf.constant(1.0)}) == []


# ---------------------------------------------------------------- real runs

def _events(run):
    path = os.path.join(run, 'events.jsonl')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def _fids(run):
    with open(os.path.join(run, 'metrics.jsonl')) as f:
        return [(r['n_images'], r['fid']) for r in map(json.loads, f) if 'fid' in r]


# A learning rate 250 times the official one makes the tiny GAN diverge on these images: its
# FID rises by half or more within 16 steps (seed 7, every 2 steps; on an AMD EPYC 349, 354, 531,
# 652; on an Intel Xeon, under an earlier data order, 332, 428, 623). Where it rises differs
# between CPUs, so the tests below check the guard's rule on the FIDs the run logged.
FACTOR = 1.15
DIVERGING = ['--preset', 'tiny', '--set', 'g_lr=0.05', '--set', 'd_lr=0.05',
             '--set', 'ema_decay=0.0', '--set', 'n_fid_real=24', '--set', 'n_fid_gen=24',
             '--set', 'fid_batch_size=24', '--set', 'jit=False', '--metrics_inter', '1',
             '--fid_inter', '2', '--seed', '7', '--set', f'fid_guard_factor={FACTOR}']


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    return render_shape_images(str(tmp_path_factory.mktemp('guard_data')), 24, size=32)


def _run(tmp_path, images, *extra):
    run = str(tmp_path / 'run')
    return run, DIVERGING + ['--file_pattern', images, '--model_dir', run] + list(extra)


@pytest.fixture(scope='module')
def stopped_run(tmp_path_factory, images):
    """The diverging run with fid_guard=stop (patience 2), in this process: (run folder, exit
    code, its error lines, its FIDs)."""
    import contextlib
    import io
    run, args = _run(tmp_path_factory.mktemp('stopped'), images, '--total_iter', '16', '--set',
                     'fid_guard=stop')
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = train.main(args)
    return run, code, err.getvalue().strip().splitlines(), _fids(run)


@pytest.mark.slow
@pytest.mark.xdist_group('guard_stopped_run')
def test_a_diverging_run_is_stopped_and_its_best_checkpoint_kept(stopped_run, fid_weights):
    run, code, err, fids = stopped_run
    assert code == 1
    assert err[-1].startswith('error: Training diverged: FID ') and err[-1].endswith(
        'the best checkpoint is kept; resume with lower g_lr and d_lr in a new --model_dir, or '
        'with --set fid_guard=rollback.'), err
    # Stopped at the first evaluation that made two in a row above FACTOR times the best.
    values = [fid for _, fid in fids]
    assert _decisions(values, fid_guard='stop', fid_guard_factor=FACTOR)[-1] == 'stop'
    assert _decisions(values[:-1], fid_guard='stop', fid_guard_factor=FACTOR).count('stop') == 0
    best_images = min(fids, key=lambda item: item[1])[0]
    assert values[-1] > FACTOR * min(values) and values[-2] > FACTOR * min(values)  # diverged
    assert sorted(os.listdir(os.path.join(run, 'best-training-checkpoints'))) == [
        'checkpoint', f'ckpt-{best_images}.data-00000-of-00001', f'ckpt-{best_images}.index']
    assert [event['action'] for event in _events(run)] == ['stop']


@pytest.mark.slow
@pytest.mark.xdist_group('guard_stopped_run')
def test_a_resumed_run_keeps_the_guards_counters(tmp_path, images, stopped_run, capsys,
                                                 fid_weights):
    """The same run stopped one evaluation before the guard's stop, with one diverging FID
    counted, then resumed: the resumed run stops at the same evaluation, which only the counter
    restored from the checkpoint makes the second in a row."""
    _, _, _, fids = stopped_run
    run, args = _run(tmp_path, images, '--set', 'fid_guard=stop')
    before_stop = fids[-2][0] // config.make_config('tiny').batch_size
    assert train.main(args + ['--total_iter', str(before_stop)]) == 0
    assert _fids(run) == fids[:-1]
    capsys.readouterr()
    assert train.main(args + ['--total_iter', '16']) == 1
    assert _fids(run) == fids  # without the counters from the checkpoint it would go on
    assert ', 2 evaluation(s) in a row' in capsys.readouterr().err


@pytest.mark.slow
def test_rollback_restores_the_best_weights_and_optimizer_state(tmp_path, images, monkeypatch, fid_weights):
    """A spy on the restore writes what it brought back, to compare with the best checkpoint on
    disk, key by key: weights, EMA, batch-norm statistics, Adam's slots and step, the RNG."""
    import numpy as np
    import tensorflow as tf

    import gan
    written = []
    real_restore = gan.restore_checkpoint

    def spy(ladagan, objects, prefix):
        real_restore(ladagan, objects, prefix)
        if 'best-training-checkpoints' in prefix and not written:
            # A copy of the best checkpoint as restored: a better FID after the rollback
            # replaces it on disk (the best manager keeps one), as it did on an Intel Xeon.
            best = tmp_path / 'best_at_rollback'
            best.mkdir()
            for path in glob.glob(prefix + '.*'):
                shutil.copy(path, best)
            after = tf.train.Checkpoint(**objects).write(str(tmp_path / 'after_rollback'))
            written.append((str(best / os.path.basename(prefix)), after))
    monkeypatch.setattr(gan, 'restore_checkpoint', spy)
    run, args = _run(tmp_path, images, '--total_iter', '12', '--set', 'fid_guard=rollback',
                     '--set', 'fid_guard_retries=1')
    code = train.main(args)
    events = _events(run)
    assert events[0]['action'] == 'restore', events
    assert 'rolled back to the best checkpoint' in events[0]['message']
    # At most one rollback: diverging again after it stops the run (exit code 1).
    assert [event['action'] for event in events[1:]] == (['stop'] if code == 1 else [])
    best, after = (tf.train.load_checkpoint(path) for path in written[0])
    keys = [key for key in best.get_variable_to_shape_map()
            if not key.startswith(('save_counter', '_CHECKPOINTABLE_OBJECT_GRAPH'))]
    assert len(keys) > 100 and any('d_optimizer' in key for key in keys)
    for key in keys:
        np.testing.assert_array_equal(after.get_tensor(key), best.get_tensor(key), err_msg=key)
    # Trained on after the rollback at halved learning rates (the best checkpoint holds 0.05).
    assert best.get_tensor('g_optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE') == (
        np.float32(0.05))
    with open(os.path.join(run, 'training-checkpoints', 'checkpoint')) as f:
        latest = os.path.join(run, 'training-checkpoints', f.readline().split('"')[1])
    assert tf.train.load_checkpoint(latest).get_tensor(
        'd_optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE') == np.float32(0.025)


@pytest.mark.slow
def test_early_stopping_ends_at_the_right_evaluation(tmp_path, images, capsys, fid_weights):
    run, args = _run(tmp_path, images, '--total_iter', '40', '--set', 'fid_guard=off',
                     '--set', 'early_stop_patience=2')
    assert train.main(args) == 0
    fids = [fid for _, fid in _fids(run)]
    best = fids.index(min(fids))
    assert len(fids) == best + 3  # the best, then two evaluations without a better one
    assert [event['action'] for event in _events(run)] == ['finish']
    assert 'Early stop: no better FID than' in capsys.readouterr().out


# ---------------------------------------------------------------- the NaN guard

class _FakeFID:
    """Stands in for the FID evaluator: every evaluation is better than the one before."""

    def __init__(self):
        self.calls = 0

    def __call__(self, conf, eval_source, class_counts=None, class_names=None):
        def evaluate(generator):
            self.calls += 1
            return {'fid': 100.0 / self.calls}
        return evaluate


def _inject_nan(monkeypatch, turns_nan):
    """After the train steps (counted over restores) for which `turns_nan(call)` holds, a
    discriminator weight turns NaN, as a diverging update would make it."""
    original = gan.LadaGAN.train_step
    calls = {'count': 0}

    def train_step(self, *args, **kwargs):
        metrics = original(self, *args, **kwargs)
        calls['count'] += 1
        if turns_nan(calls['count']):
            weight = self.discriminator.trainable_weights[0]
            weight.assign(weight * float('nan'))
        return metrics
    monkeypatch.setattr(gan.LadaGAN, 'train_step', train_step)


def _stop_message(step, retries, last_good):
    tried = f' after {retries} restore(s) at halved learning rates' if retries else ''
    return (f'error: Training diverged: non-finite discriminator/inp_conv/kernel at step {step} '
            f'({step * BATCH} images){tried}; the last good checkpoint is {last_good}; start a '
            'new --model_dir with lower g_lr and d_lr, or with --set nan_retries=N to restore '
            'and halve them automatically.')


@pytest.mark.slow
@pytest.mark.parametrize('nan_retries', [0, 1])
def test_non_finite_values_stop_or_restore_and_are_never_saved(
        nan_retries, tmp_path, dataset, monkeypatch, capsys):
    run = str(tmp_path / 'run')
    latest_dir = os.path.join(run, 'training-checkpoints')
    best_dir = os.path.join(run, 'best-training-checkpoints')
    monkeypatch.setattr(train, 'make_fid_evaluator', _FakeFID())
    # Plots are not under test here and cost seconds per checkpoint.
    monkeypatch.setattr(plots, 'save_attention_maps', lambda *args, **kwargs: None)
    # Steps 1-2, save, step 3 turns NaN; with a retry: restore to step 2, steps 3-4, save,
    # step 5 turns NaN again and the one retry is spent.
    _inject_nan(monkeypatch, lambda call: call == 3 or (nan_retries and call >= 6))
    args = TINY + ['--file_pattern', dataset, '--model_dir', run, '--fid_inter', '2',
                   '--total_iter', '6', '--set', 'n_fid_real=40',
                   '--set', f'nan_retries={nan_retries}']
    assert train.main(args) == 1
    out, err = capsys.readouterr()
    if nan_retries:
        restored = os.path.join(latest_dir, f'ckpt-{2 * BATCH}')
        assert (f'non-finite discriminator/inp_conv/kernel at step 3 ({3 * BATCH} images): '
                f'restored {restored} with the learning rates halved (restore 1 of at most 1): '
                'g_lr=0.0001, d_lr=0.0001') in out
        last_good, seen = _latest(latest_dir)
        assert err.strip().splitlines()[-1] == _stop_message(5, 1, last_good)
        assert seen == 4 * BATCH  # trained on after the restore
        assert tf.train.load_checkpoint(last_good).get_tensor(LR_KEY) == np.float32(0.0001)
    else:
        last_good, seen = _latest(latest_dir)
        assert err.strip().splitlines()[-1] == _stop_message(3, 0, last_good)
        assert seen == 2 * BATCH
    # The best checkpoint is the last good one (each FID beats the one before), never a NaN one.
    assert _latest(best_dir)[1] == seen
    for folder in (latest_dir, best_dir):
        for name in os.listdir(folder):
            if name.endswith('.index'):
                assert _weights_finite(os.path.join(folder, name[:-len('.index')]))
    records = _metrics(run)
    assert [r['n_images'] for r in records if 'd_loss' in r] == list(range(BATCH, seen + 1, BATCH))
    assert all(np.isfinite(value) for record in records for value in record.values())


@pytest.mark.slow
def test_a_run_whose_own_training_goes_non_finite_restores_then_stops(tmp_path, dataset, capsys):
    """No NaN put in by hand: learning rates of 1 (5,000 times the official) make the tiny GAN's
    losses and R1 explode within a few steps (1e8 and 1e14 at the second, seen), then overflow
    float32. The guard finds the non-finite values, restores the last checkpoint with both
    learning rates halved, overflows again and stops; nothing non-finite is saved or logged."""
    run = str(tmp_path / 'run')
    latest_dir = os.path.join(run, 'training-checkpoints')
    args = TINY + ['--file_pattern', dataset, '--model_dir', run, '--fid_inter', '0',
                   '--ckpt_inter', '2', '--total_iter', '12', '--seed', '0',
                   '--set', 'g_lr=1', '--set', 'd_lr=1', '--set', 'nan_retries=1']
    assert train.main(args) == 1
    out, err = capsys.readouterr()
    restore = re.search(r'^non-finite .+ at step (\d+) \((\d+) images\): restored (\S+) with the '
                        r'learning rates halved \(restore 1 of at most 1\): g_lr=0\.5, d_lr=0\.5$',
                        out, re.M)
    assert restore, out
    # Back to the last checkpoint before the overflow (one every 2 steps).
    restored_seen = int(restore.group(3).rsplit('-', 1)[1])
    assert restored_seen == 2 * BATCH * ((int(restore.group(1)) - 1) // 2) > 0
    stop = re.match(r'error: Training diverged: non-finite .+ at step \d+ \((\d+) images\) after '
                    r'1 restore\(s\) at halved learning rates; the last good checkpoint is \S+; ',
                    err.strip().splitlines()[-1])
    assert stop, err
    for name in os.listdir(latest_dir):
        if name.endswith('.index'):
            assert _weights_finite(os.path.join(latest_dir, name[:-len('.index')]))
    records = _metrics(run)
    assert records and all(np.isfinite(value) for record in records for value in record.values())
    seen = [record['n_images'] for record in records]
    assert seen == list(range(BATCH, seen[-1] + 1, BATCH))  # the undone steps' records dropped
    assert seen[-1] == int(stop.group(1)) - BATCH  # the log ends at the last finite step
