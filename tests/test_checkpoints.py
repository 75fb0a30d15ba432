"""checkpoints.py: the authors' checkpoints map variable by variable, their Hub download, and run
folders that record their data and resume across versions."""
import json
import os
import re
import shutil
import sys
import time
import types

import pytest

import checkpoints
import config
import official
import generate
import train
import trainer as trainer_lib
from conftest import render_shape_images

TESTS = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(TESTS, 'fixtures', 'official')
OFFICIAL_TINY32 = os.path.join(FIXTURES, 'tiny32')


# ---------------------------------------------------------------- the authors' checkpoints

def test_official_checkpoint_mismatch_is_reported(tmp_path):
    # A config that does not fit the checkpoint must fail loudly, never half-load.
    folder = tmp_path / 'wrong'
    (folder / 'best-training-checkpoints').mkdir(parents=True)
    source = os.path.join(FIXTURES, 'tiny32')
    for name in os.listdir(os.path.join(source, 'best-training-checkpoints')):
        os.symlink(os.path.join(source, 'best-training-checkpoints', name),
                   folder / 'best-training-checkpoints' / name)
    with open(os.path.join(source, 'config.json')) as f:
        official_config = json.load(f)
    official_config['g_mlp'] = [64, 64, 32]
    (folder / 'config.json').write_text(json.dumps(official_config))
    with pytest.raises(config.UserError, match='shape-mismatched.*block_32/mlp'):
        official.load_official_checkpoint(folder)
    with pytest.raises(config.UserError, match='neither a model folder nor a checkpoint'):
        official.load_official_checkpoint(tmp_path / 'nothing')


def test_checkpoint_prefix_is_accepted():
    prefix = os.path.join(FIXTURES, 'tiny32', 'best-training-checkpoints', 'ckpt-16')
    loaded = official.load_official_checkpoint(prefix)
    assert loaded['config'].img_size == 32 and loaded['n_images'] == 16


# ---------------------------------------------------------------- run folders remember their data

OLD_RUN = os.path.join(TESTS, 'fixtures', 'run_before_run_record')


@pytest.fixture
def old_run(tmp_path):
    """A copy of a run folder written before run.json existed, and 16 images to train on."""
    run = str(tmp_path / 'run')
    shutil.copytree(OLD_RUN, run)
    return run, render_shape_images(str(tmp_path / 'data'), 16, size=32)


BFLOAT16_RUN = os.path.join(TESTS, 'fixtures', 'bfloat16_run_before_islands')
# Step 3 of BFLOAT16_RUN as the code that wrote it logged it when resumed (its README.md).
BFLOAT16_STEP_3 = {'d_loss': 1.5148413181304932, 'gp': 0.014622832648456097,
                   'real_logits_mean': -0.3966722786426544,
                   'fake_logits_mean': -0.35672470927238464}


@pytest.mark.slow
def test_a_bfloat16_run_from_before_the_islands_resumes_with_its_own_policy(tmp_path, capsys):
    """A mixed_bfloat16 run written before float32_islands existed trained with no part in
    float32: its config.json, without the key, resumes with [], and its next step is the one
    the code that wrote it took. The discriminator's values at that step (before the step's
    updates; one batch is the whole set, unaugmented, so the data order cannot move them) are
    that code's to 3e-4; with today's five islands they are 1.5e-3 to 2.4e-3 away (measured;
    the fixture's README)."""
    run = str(tmp_path / 'run')
    shutil.copytree(BFLOAT16_RUN, run)
    data = render_shape_images(str(tmp_path / 'data'), 8, size=32)
    assert train.main(['--model_dir', run, '--file_pattern', data, '--total_iter', '3']) == 0
    assert 'float32_islands=[]' in capsys.readouterr().out
    with open(os.path.join(run, 'config.json')) as f:
        stored = json.load(f)
    assert (stored['precision'], stored['float32_islands']) == ('mixed_bfloat16', [])
    step_3 = checkpoints.read_metrics(run)[0][-1]
    assert step_3['n_images'] == 24
    for key, value in BFLOAT16_STEP_3.items():
        assert abs(step_3[key] - value) <= 3e-4, (key, step_3[key], value)


def _run_record(run):
    with open(os.path.join(run, 'run.json')) as f:
        return json.load(f)


@pytest.mark.slow
def test_a_run_from_before_the_run_record_resumes_with_notices(old_run, capsys):
    """Merged with test_a_moved_dataset_is_a_notice_and_kept_in_the_record, which trained the
    same old run for its first resume: its assertions follow, on this run."""
    run, data = old_run
    with open(os.path.join(run, 'config.json')) as f:
        stored = json.load(f)
    del stored['nan_retries']  # as if the key had been added to config.py after the run
    checkpoints.write_json_atomic(os.path.join(run, 'config.json'), stored)
    # Keys added since the fixture was written (r1_interval, the guard's, ...) and nan_retries.
    added = [key for key in config.config if key not in stored]
    assert 'nan_retries' in added and 'r1_interval' in added
    assert train.main(['--model_dir', run, '--file_pattern', data, '--total_iter', '5',
                       '--fid_inter', '0']) == 0
    out = capsys.readouterr().out
    notices = [line for line in out.splitlines() if line.startswith('notice: ')]
    prefix, seen = re.search(r'^Resumed from (\S+?)(?: instead, as new or newer)?: ([\d,]+) images '
                             'seen', out, re.M).groups()
    assert notices == [
        f'notice: {run}/config.json predates the config keys {", ".join(added)}: using '
        + ', '.join(f'{key}={[] if key == "float32_islands" else config.config[key]!r}'
                    for key in added),
        f'notice: {run} has no run.json (it predates recorded data and options): training on '
        f'--file_pattern {data} with the options given or their defaults; they are recorded '
        'from now on',
        # Its checkpoint holds no data order: it goes on in the exact one from its step.
        f'notice: {prefix} was written before runs kept their data order: the run goes on from '
        f'image {seen} of the exact order, but its images before it were drawn in another '
        'order'], out
    assert 'Resumed from' in out and 'Train dataset: 16 images' in out
    assert _run_record(run)['options']['file_pattern'] == data
    with open(os.path.join(run, 'config.json')) as f:
        assert json.load(f)['nan_retries'] == 0  # completed, so the notice comes once
    # Resumed once more with only --model_dir: the recorded data, no notice.
    assert train.main(['--model_dir', run, '--total_iter', '6']) == 0
    out = capsys.readouterr().out
    assert 'Train dataset: 16 images' in out
    assert [line for line in out.splitlines() if line.startswith('notice: ')] == [
        f'notice: --total_iter 6 replaces the recorded 5 of {run} (kept in run.json)']
    # The run goes on where its data moved: on this run, which spares tracing one more resume.
    _a_moved_dataset_is_a_notice_and_kept_in_the_record(run, data, capsys, total_iter=7)


def _a_moved_dataset_is_a_notice_and_kept_in_the_record(run, data, capsys, total_iter):
    moved = data + '_moved'
    shutil.move(data, moved)
    capsys.readouterr()
    # Where the record points at nothing, the error says that the path came from the record.
    assert train.main(['--model_dir', run, '--total_iter', str(total_iter)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: The dataset path '{data}' does not exist") and (
        f'(--file_pattern as recorded in {run}/run.json: give the data\'s new place on the '
        'command line)') in err
    assert train.main(['--model_dir', run, '--total_iter', str(total_iter), '--file_pattern',
                       moved]) == 0
    out = capsys.readouterr().out
    assert (f'notice: --file_pattern {moved} replaces the recorded {data} of {run} '
            '(kept in run.json)') in out
    record = _run_record(run)
    assert record['options']['file_pattern'] == moved
    assert [(change['option'], change['from'], change['to'])
            for change in record['changes'] if change['option'] == 'file_pattern'] == [
        ('file_pattern', data, moved)]


def test_a_resumed_run_takes_every_network_from_its_checkpoint(old_run):
    """A network that the checkpoint to resume holds is built without drawing initial values
    and restored from it: D and the EMA generator, value for value. This old run's checkpoint
    holds G only through G's optimizer (its trainable variables): G is drawn, as in a new run,
    then takes those values."""
    import keras
    import numpy as np
    import tensorflow as tf

    import model
    run, _ = old_run
    with open(os.path.join(run, 'config.json')) as f:
        conf, _ = config.config_from_dict(json.load(f), 'config.json')
    keras.utils.set_random_seed(conf.seed)  # as train.main does before it builds the Trainer
    trainer = trainer_lib.Trainer(conf, run, {'max_ckpt_to_keep': 1},
                                  tf.distribute.get_strategy())
    trainer.restore()
    expected = {'discriminator': model.build_discriminator(conf, initialize=False),
                'ema_generator': model.build_generator(conf, 'ema_generator', initialize=False)}
    # Before it is read: the kernels that take the configured initializer are all zero.
    assert not np.any(expected['discriminator'].weights[0].numpy())
    tf.train.Checkpoint(**expected).read(trainer.ckpts.resume_from).assert_existing_objects_matched()
    for name, net in expected.items():
        for weight, reference in zip(getattr(trainer.gan, name).weights, net.weights):
            assert np.any(reference.numpy()) or 'bias' in weight.path, weight.path
            np.testing.assert_array_equal(weight.numpy(), reference.numpy(), err_msg=weight.path)
    reader = tf.train.load_checkpoint(trainer.ckpts.resume_from)
    for index, weight in enumerate(trainer.gan.generator.trainable_weights):
        np.testing.assert_array_equal(weight.numpy(), reader.get_tensor(
            f'g_optimizer/_trainable_variables/{index}/.ATTRIBUTES/VARIABLE_VALUE'))


def test_a_run_from_before_the_run_record_generates(old_run, tmp_path):
    run, _ = old_run
    assert generate.main(['--model_dir', run, '--seeds', '0-3', '--grid',
                          '--outdir', str(tmp_path / 'out')]) == 0
    assert sorted(os.listdir(tmp_path / 'out')) == ['grid.png'] + [
        f'seed{seed:04d}.png' for seed in range(4)]


@pytest.mark.parametrize('given, fid_inter, ckpt_inter', [
    ({}, train.DEMO_FID_INTER, train.DEMO_CKPT_INTER),             # the demo's own schedule
    ({'fid_inter': 240}, 240, 240),                                 # demo, FID every 240
    ({'file_pattern': 'data'}, 5000, 5000),
    ({'file_pattern': 'data', 'fid_inter': 20000}, 20000, 20000),  # follows a given fid_inter
    ({'file_pattern': 'data', 'fid_inter': 0}, 0, 5000),            # FID off
    ({'file_pattern': 'data', 'fid_inter': 20000, 'ckpt_inter': 7}, 20000, 7)])
def test_checkpoint_interval_follows_the_fid_interval(tmp_path, given, fid_inter, ckpt_inter):
    options = dict.fromkeys(checkpoints.RECORDED_OPTIONS) | given
    resolved, _, _ = checkpoints.resolve_options(str(tmp_path / 'run'), options,
                                                 train.option_defaults, resumed=False)
    assert (resolved['fid_inter'], resolved['ckpt_inter']) == (fid_inter, ckpt_inter)


# ---------------------------------------------------------------- download_official_checkpoint

def fake_hub(monkeypatch, hf_hub_download):
    """Install a stand-in `huggingface_hub` module (the real one is optional) whose
    hf_hub_download is the given function; skip the reachability probe."""
    hub = types.ModuleType('huggingface_hub')
    hub.hf_hub_download = hf_hub_download
    hub.constants = types.SimpleNamespace(ENDPOINT='https://huggingface.co')
    hub.errors = types.SimpleNamespace(HfHubHTTPError=type('HfHubHTTPError', (OSError,), {}))
    monkeypatch.setitem(sys.modules, 'huggingface_hub', hub)
    monkeypatch.setitem(sys.modules, 'huggingface_hub.constants', hub.constants)
    monkeypatch.setitem(sys.modules, 'huggingface_hub.errors', hub.errors)
    monkeypatch.setattr(official, '_check_hub_reachable', lambda endpoint: None)


def test_download_unknown_name(tmp_path):
    with pytest.raises(config.UserError) as error:
        official.download_official_checkpoint('cifar100', dest_dir=tmp_path / 'dl')
    assert 'cifar10, celeba_64, ffhq_128, bedroom_128' in str(error.value)
    assert not (tmp_path / 'dl').exists()


def test_download_without_network_is_one_clear_sentence(monkeypatch, tmp_path):
    def offline(repo_id, filename, local_dir):
        os.makedirs(os.path.join(local_dir, '.cache'), exist_ok=True)  # as the real client
        raise ConnectionError('[Errno -2] Name or service not known\nmore detail')

    fake_hub(monkeypatch, offline)
    with pytest.raises(config.UserError) as error:
        official.download_official_checkpoint('ffhq_128', dest_dir=tmp_path / 'dl')
    message = str(error.value)
    assert 'ffhq_128' in message and 'failed' in message and 'already-downloaded' in message
    assert '\n' not in message and message.count('. ') == 0
    assert not (tmp_path / 'dl').exists()  # no partial download left behind


def test_download_without_huggingface_hub(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'huggingface_hub', None)  # import fails
    with pytest.raises(config.UserError, match='install huggingface_hub'):
        official.download_official_checkpoint('cifar10', dest_dir=tmp_path)


def test_download_writes_the_official_layout(monkeypatch, tmp_path):
    """Files land in <dest>/<name>/ as on the Hub, and load_run_generator reads the folder."""
    steps = official.OFFICIAL_CHECKPOINT_STEPS['cifar10']
    fixture_prefix = os.path.join(OFFICIAL_TINY32, 'best-training-checkpoints', 'ckpt-16')
    requested = []

    def from_fixture(repo_id, filename, local_dir):
        requested.append((repo_id, filename))
        target = os.path.join(local_dir, filename)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        base = os.path.basename(filename)
        if base == 'config.json':
            shutil.copy(os.path.join(OFFICIAL_TINY32, 'config.json'), target)
        elif base == 'checkpoint':
            with open(target, 'w') as f:
                f.write(f'model_checkpoint_path: "ckpt-{steps}"\n')
        else:
            shutil.copy(fixture_prefix + base[len(f'ckpt-{steps}'):], target)
        return target

    fake_hub(monkeypatch, from_fixture)
    folder = official.download_official_checkpoint('cifar10', dest_dir=tmp_path)
    assert folder == os.path.join(str(tmp_path), 'cifar10')
    assert requested == [('milmor/LadaGAN', f'cifar10/{name}') for name in (
        'config.json', 'best-training-checkpoints/checkpoint',
        f'best-training-checkpoints/ckpt-{steps}.index',
        f'best-training-checkpoints/ckpt-{steps}.data-00000-of-00001')]
    assert os.listdir(tmp_path) == ['cifar10']  # the temporary folder is gone
    conf, generator = checkpoints.load_run_generator(folder)
    assert conf.img_size == 32
    # A complete folder is reused without asking the Hub again.
    assert official.download_official_checkpoint('cifar10', dest_dir=tmp_path) == folder
    assert len(requested) == 4


def test_real_client_fails_fast_without_network(monkeypatch, tmp_path):
    huggingface_hub = pytest.importorskip('huggingface_hub')
    from huggingface_hub import constants as hub_constants

    # An unresolvable host (RFC 2606), so the test never downloads even when online.
    monkeypatch.setattr(hub_constants, 'ENDPOINT', 'https://hub.invalid')
    for proxy in ('https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(proxy, raising=False)
    assert huggingface_hub is not None
    started = time.perf_counter()
    with pytest.raises(config.UserError, match='failed'):
        official.download_official_checkpoint('cifar10', dest_dir=tmp_path / 'dl')
    assert time.perf_counter() - started < 15
    assert not (tmp_path / 'dl').exists()
