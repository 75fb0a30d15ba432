"""What each documented command must have produced: the checks tests/test_readme_commands.py
runs after a command (its COMMANDS table names one per command). Each takes the command's
result (stdout, stderr, returncode) and its workspace folder, and asserts on the files and lines
a user would look at."""
import glob
import json
import os
import re

import numpy as np
from PIL import Image

from cifar10_archive import known_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def _json(path):
    with open(path) as f:
        return json.load(f)


def _checkpoint(folder):
    with open(os.path.join(folder, 'checkpoint')) as f:
        name = re.search(r'model_checkpoint_path: "(.+)"', f.read()).group(1)
    assert os.path.isfile(os.path.join(folder, name + '.index')), name
    return name


def _fid_line(stdout):
    value = float(re.search(r'^FID: (\S+)$', stdout, re.M).group(1))
    assert np.isfinite(value) and value > 0
    return value


def _metrics(run):
    with open(os.path.join(run, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


def prepared_cifar10(result, ws):
    """The test archive (tests/cifar10_archive.py), prepared: its pixels, labels, statistics."""
    folder = os.path.join(ws, 'data', 'cifar10')
    images, labels = known_images(60, 1)  # the train split of write_cifar10_archive
    names = [f'{index // 1000:05d}/img{index:08d}.png' for index in range(len(images))]
    for index in (0, len(images) - 1):
        np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(folder, names[index]))),
                                      images[index])
    dataset = _json(os.path.join(folder, 'dataset.json'))
    assert dataset['labels'] == [[name, label] for name, label in zip(names, labels)]
    assert dataset['class_names'][:2] == ['airplane', 'automobile']
    meta = _json(os.path.join(folder, 'prepare.json'))
    assert (meta['dataset'], meta['count'], meta['source']['kind']) == ('cifar10', 60, 'cifar10')
    assert meta['stats'] == {'file': 'fid-stats.npz', 'images': 60, 'backbone': 'standard'}
    assert 'Prepared 60 images into data/cifar10 with 10 classes' in result.stdout


def prepared_dataset(dest, size, count):
    """A paper data set's command, on the stand-ins of write_paper_downloads."""
    def check(result, ws):
        folder = os.path.join(ws, dest)
        meta = _json(os.path.join(folder, 'prepare.json'))
        assert (meta['img_size'], meta['count'], meta['stats']['images']) == (size, count, count)
        with Image.open(os.path.join(folder, '00000', 'img00000000.png')) as image:
            assert image.size == (size, size)
    return check


def cifar10_run(result, ws):
    run = os.path.join(ws, 'runs', 'cifar10')
    options = _json(os.path.join(run, 'run.json'))['options']
    # The run records its data, absolute, so that `train.py --model_dir RUN` finds it again.
    assert options['file_pattern'] == os.path.join(ws, 'data', 'cifar10')
    assert options['eval_dir'] is None  # FID against the training set, as the paper's
    assert f'read from the prepared set {os.path.join(ws, "data", "cifar10")}' in result.stdout
    assert _json(os.path.join(run, 'config.json'))['img_size'] == 32
    _checkpoint(os.path.join(run, 'best-training-checkpoints'))
    fids = [record['fid'] for record in _metrics(run) if 'fid' in record]
    assert fids and np.isfinite(fids[-1])


def conditional_run(result, ws):
    """CIFAR-10's labels, from the prepared set: ten classes, recorded with the run."""
    run = os.path.join(ws, 'runs', 'cifar10_cond')
    assert _json(os.path.join(run, 'config.json'))['num_classes'] == 10
    assert _json(os.path.join(run, 'run.json'))['classes'][3:6] == ['cat', 'deer', 'dog']
    assert 'Classes: 10 (airplane, automobile, bird' in result.stdout


def class_grid(result, ws):
    out = os.path.join(ws, 'out')
    for name in ('cat', 'dog'):
        assert _png_names(os.path.join(out, name)) == [f'seed{seed:04d}.png' for seed in range(8)]
    with Image.open(os.path.join(out, 'grid.png')) as grid:  # a row per class, a seed a column
        assert grid.size == (8 * 34 + 2, 2 * 34 + 2)


def conditional_scores(result, ws):
    _fid_line(result.stdout)
    assert re.search(r'^class accuracy: [\d.]+ \(k-nearest-neighbour classifier', result.stdout,
                     re.M)
    rows = re.findall(r'^(\w+) \| (\d+) \| (\d+) \|', result.stdout, re.M)
    assert [name for name, *_ in rows][:3] == ['airplane', 'automobile', 'bird']
    assert sum(int(real) for _, real, _ in rows) == 60 and sum(int(n) for *_, n in rows) == 20


def conditional_experiment(result, ws):
    results = _json(os.path.join(ws, 'cond', 'results.json'))
    assert [run['mode'] for run in results] == ['conditional']
    assert results[0]['cpu'] in result.stdout and 0 <= results[0]['class_accuracy'] <= 1
    assert [row['name'] for row in results[0]['classes']] == ['discs', 'squares']
    assert os.path.getsize(os.path.join(ws, 'cond', 'conditional_grid.png')) > 1000
    assert '| `conditional` |' in open(os.path.join(ws, 'cond', 'conditional.md')).read()


def conditional_benchmark(result, ws):
    rows = _rows(ws, 'conditional.json')
    for name in ('unconditional', 'conditional', 'conditional, class_input=noise'):
        row = rows[f'tiny, no XLA, {name}: train step']
        assert row['value'] > 0 and re.match(r'\d\.\d{3}x unconditional \(rounds ', row['note'])


def resume(result, ws):
    # Only --model_dir was given: the run's own 60 images are read, not the demo set.
    assert 'Resumed from' in result.stdout
    assert 'Train dataset: 60 images' in result.stdout, result.stdout
    assert 'OpenMoji' not in result.stdout
    assert _metrics(os.path.join(ws, 'runs', 'cifar10'))[-1]['n_images'] == 3 * 16


def ffhq_run(result, ws):
    run = os.path.join(ws, 'runs', 'ffhq')
    conf = _json(os.path.join(run, 'config.json'))
    # The documented --set batch_size=32, then the test's --set batch_size=2: the last one wins.
    assert (conf['img_size'], conf['batch_size'], conf['bcr']) == (128, 2, True)
    assert _checkpoint(os.path.join(run, 'training-checkpoints')) == 'ckpt-2'


def dry_run(result, ws):
    conf = json.loads(result.stdout[result.stdout.index('{'):])
    assert (conf['img_size'], conf['g_dim']) == (32, [64, 32, 16])
    assert not os.path.exists(os.path.join(ws, 'runs'))


def default_cifar10_run(result, ws, batch=4):
    run = os.path.join(ws, 'runs', 'cifar10')  # the preset names the default run folder
    assert _checkpoint(os.path.join(run, 'training-checkpoints')) == f'ckpt-{batch}'
    assert _json(os.path.join(run, 'run.json'))['options']['file_pattern'] == os.path.join(
        ws, 'data', 'cifar10')


def two_workers(result, ws):
    """Two worker processes trained 12 steps of the global batch 16 together (tests/
    test_distribute.py stops the same command with SIGTERM midway and resumes it)."""
    run = os.path.join(ws, 'runs', 'cifar10')
    default_cifar10_run(result, ws, batch=12 * 16)
    assert result.stdout.count('Done: 192 images seen') == 2, result.stdout
    # The workers agreed whether to stop before the first and the 11th step only (FID is off),
    # not before every step as before #36; every step's values were read (--metrics_inter 1).
    assert result.stdout.count(
        'Host reads of collectives in 12 steps: 2 to agree whether to stop (at the first step, '
        "then every 10) or on an FID, 12 of logged or saved steps' values") == 2, result.stdout
    assert [record['n_images'] for record in _metrics(run)] == list(range(16, 193, 16))
    assert sorted(os.listdir(os.path.join(run, 'training-checkpoints')))[0] == 'checkpoint'
    # Worker 1 joined every save in a scratch folder of its own and removed it at the end.
    assert not [name for name in os.listdir(run) if name.startswith('.worker')]


def bfloat16_run(result, ws):
    run = os.path.join(ws, 'runs', 'ffhq_128')
    assert _json(os.path.join(run, 'config.json'))['precision'] == 'mixed_bfloat16'
    assert _checkpoint(os.path.join(run, 'training-checkpoints')) == 'ckpt-2'


def _png_names(folder):
    return sorted(name for name in os.listdir(folder) if re.match(r'seed\d+\.png$', name))


def seeds_and_grid(result, ws):
    out = os.path.join(ws, 'out')
    assert _png_names(out)[:1] + _png_names(out)[-1:] == ['seed0000.png', 'seed0063.png']
    assert len(_png_names(out)) == 64
    assert Image.open(os.path.join(out, 'grid.png')).size == (8 * 34 + 2, 8 * 34 + 2)


def num(result, ws):
    assert len(_png_names(os.path.join(ws, 'out', 'fid50k'))) == 20


def interpolation(result, ws):
    with Image.open(os.path.join(ws, 'out', 'interpolation.gif')) as gif:
        assert gif.is_animated and gif.n_frames > 6


def attention_maps(result, ws):
    names = sorted(name for name in os.listdir(os.path.join(ws, 'out'))
                   if name.startswith('attention_stage'))
    assert names == ['attention_stage0_8x8.png', 'attention_stage1_16x16.png',
                     'attention_stage2_32x32.png']


def pretrained(result, ws):
    out = os.path.join(ws, 'out')
    assert len(_png_names(out)) == 16
    assert Image.open(os.path.join(out, 'grid.png')).size == (4 * 34 + 2, 4 * 34 + 2)


def fid(result, ws):
    _fid_line(result.stdout)


def fid_and_kid(result, ws):
    _fid_line(result.stdout)
    assert re.search(r'^KID: \S+ \+- \S+$', result.stdout, re.M)


def saved_statistics(result, ws):
    """fid.py --save_stats of the prepared PNGs: prepare.py --stats wrote the same numbers."""
    with np.load(os.path.join(ws, 'cifar10_train.npz')) as stats, np.load(os.path.join(
            ws, 'data', 'cifar10', 'fid-stats.npz')) as prepared:
        assert stats['mu'].shape == (2048,) and stats['sigma'].shape == (2048, 2048)
        np.testing.assert_array_equal(stats['mu'], prepared['mu'])
        np.testing.assert_array_equal(stats['sigma'], prepared['sigma'])


def run_fid(result, ws):
    _fid_line(result.stdout)
    # Scored against the reference the run recorded (its training set): the prepared
    # statistics of all its images, the paper's protocol.
    assert (f'against the FID statistics of 60 images of the prepared set '
            f'{os.path.join(ws, "data", "cifar10")}' in result.stdout), result.stdout


def model_table(result, ws):
    assert 'params 19,901,647' in result.stdout and 'params 6,775,940' in result.stdout


def _rows(ws, name):
    return {row['metric']: row for row in _json(os.path.join(ws, name))['results']}


def attention_benchmark(result, ws):
    rows = _json(os.path.join(ws, 'bench.json'))['results']
    assert {row['section'] for row in rows} == {'attention'} and len(rows) == 6


def _profiled_step(rows, label):
    """The train section's rows of one profiled step: its img/s and MFU, and the profiler trace
    written and parsed (shares of kernel time adding up to 100%)."""
    assert rows[f'{label}: train step']['value'] > 0  # img/s
    assert 0 < rows[f'{label}: model FLOPs utilisation']['value'] < 100
    shares = [r['value'] for name, r in rows.items() if name.startswith(f'{label}: kernel time')]
    assert len(shares) >= 2 and abs(sum(shares) - 100) < 1e-6


def profile(result, ws):
    """The train section without XLA on the presets' own sizes, each traced by the profiler."""
    rows = _rows(ws, 'profile.json')
    for name in ('cifar10_noxla', 'ffhq_128_noxla'):
        assert any(files for _, _, files in os.walk(os.path.join(ws, 'profile', name)))
    assert 'cifar10: kernel time' in result.stdout and 'ffhq_128: train step' in result.stdout
    for preset in ('cifar10', 'ffhq_128'):
        _profiled_step(rows, preset)


def quick_benchmark(result, ws):
    """Train (with a profile) and memory sections on the tiny preset, with XLA (the profile
    command's check reads the step without XLA)."""
    rows = _rows(ws, 'quick.json')
    assert 'tiny: train step' in result.stdout  # the printed table
    assert result.stdout.startswith('CPU: ')  # every measurement names its CPU
    assert _json(os.path.join(ws, 'quick.json'))['meta']['cpu'] in result.stdout
    assert rows['tiny: train step']['note'].endswith('XLA True')
    assert rows['tiny: train step']['value'] > 1  # img/s
    _profiled_step(rows, 'tiny')
    assert any('matmul' in name for name in rows if 'kernel time' in name)
    assert glob.glob(os.path.join(ws, 'profile_quick', 'tiny_xla', '**', '*.xplane.pb'),
                     recursive=True)
    # Memory: measured in a process of its own, the train section's step timed there too.
    assert 100 < rows['tiny, XLA, ours: peak resident memory']['value'] < 8000
    assert rows['tiny, XLA, ours: train step']['value'] == rows['tiny: train step']['value']
    assert rows['dense matmul peak (float32, 2048^3, best of XLA and oneDNN)']['value'] > 1


def data_benchmark(result, ws):
    """Preparing, starting and streaming, in the quick form: 1,000 images at 128 px, not the
    70,000 that docs/datasets.md reports."""
    rows = _rows(ws, 'data.json')
    assert result.stdout.startswith('CPU: ')
    assert rows['prepare, 1,024 -> 128 px (lanczos), PNG in and out']['value'] > 0
    for label in ('prepared set', 'PNG folder, image cache built'):
        startup = rows[f'start-up to the first batch, {label}']
        assert 0 < startup['value'] < 120 and '1,000 images at 128 px' in startup['note']
    assert rows['first use of 1,000 PNGs: decoding into the image cache']['value'] > 0
    streamed = rows['input pipeline, 128 px, streamed cold']
    assert streamed['value'] > 0 and 'the disk reads the same files in sequence' in streamed['note']


def grappler_benchmark(result, ws):
    rows = _rows(ws, 'grappler.json')
    for label in ('with Grappler (TensorFlow default)', 'without Grappler (ours on a CPU)'):
        step = rows[f'tiny, no XLA, {label}: train step']
        assert step['value'] > 0 and step['note'].startswith('first call ')


def authors_benchmark(result, ws):
    """Without the authors' code in DIR, theirs says why it failed; ours is still measured."""
    rows = _rows(ws, 'authors.json')
    assert rows['tiny, no XLA, ours: train step']['value'] > 1
    assert rows['tiny, no XLA, ours: peak resident memory']['value'] > 100
    for metric in ('tiny, no XLA, authors: train step',
                   'tiny, no XLA, authors: peak resident memory'):
        assert np.isnan(rows[metric]['value']) and rows[metric]['note'].startswith('fails: ')


def precision_benchmark(result, ws):
    """float32, the bfloat16 islands, none, and each island left out: a ratio to float32."""
    rows = _rows(ws, 'precision.json')
    variants = ['float32', 'mixed_bfloat16, float32 islands', 'mixed_bfloat16, no islands'] + [
        f'mixed_bfloat16, islands but {island}'
        for island in ('attention', 'norms', 'residual', 'rgb', 'logits')]
    assert list(rows) == [f'tiny, no XLA, {variant}: train step' for variant in variants]
    assert all(row['value'] > 0 and re.match(r'\d+\.\d\dx float32; ', row['note'])
               for row in rows.values())
    assert rows['tiny, no XLA, float32: train step']['note'].startswith('1.00x')


def nearest(result, ws):
    assert re.search(r'^Smallest distance to a training image: [\d.]+ \(seed \d+ and ', result.stdout,
                     re.M), result.stdout
    assert os.path.isfile(os.path.join(ws, 'runs', 'cifar10', 'generated', 'nearest.png'))


def export(result, ws):
    exported = os.path.join(ws, 'exported', 'cifar10')
    for name in ('saved_model.pb', 'generator.onnx', 'README.md', 'config.json'):
        assert os.path.isfile(os.path.join(exported, name)), name


def fid_and_prdc(result, ws):
    _fid_line(result.stdout)
    for name in ('precision', 'recall', 'density', 'coverage'):
        value = float(re.search(rf'^{name}: (\S+)$', result.stdout, re.M).group(1))
        assert 0 <= value <= (np.inf if name == 'density' else 1)


def run_fid_and_prdc(result, ws):
    fid_and_prdc(result, ws)
    # PRDC needs the real images' features, which statistics do not hold: 16 of its images.
    assert (f'against 16 images of {os.path.join(ws, "data", "cifar10")}' in result.stdout), \
        result.stdout


def report(result, ws):
    # The path as the user gave --model_dir, relative here.
    assert result.stdout.strip() == f'Wrote {os.path.join("runs", "cifar10", "report.html")}'
    assert '<svg id="fid-curve"' in open(os.path.join(ws, 'runs', 'cifar10', 'report.html')).read()


def fast_run(result, ws):
    conf = _json(os.path.join(ws, 'runs', 'ffhq_fast', 'config.json'))
    assert (conf['r1_interval'], conf['precision']) == (16, 'float32')


def fid_benchmark(result, ws):
    rows = _rows(ws, 'fid.json')
    folded = rows['feature extraction (batch 50, 32 px -> 299)']['value']
    literal = rows['feature extraction, batch norms not folded (batch 50)']['value']
    assert folded > 0 and literal > 0
    assert rows['FID eval, 50 gen, real stats cached']['note'].startswith('FID ')


def prdc_benchmark(result, ws):
    assert _rows(ws, 'prdc.json')['PRDC, 10,000 real x 10,000 fake']['value'] > 0


def time_to_fid(result, ws):
    out = os.path.join(ws, 'ttf')
    assert os.path.getsize(os.path.join(out, 'time_to_fid.png')) > 10000
    table = open(os.path.join(out, 'time_to_fid.md')).read()
    assert '| `official` |' in table and '| `bfloat16` |' in table
    # The paired difference to official's same seed: its FID at 2 iterations minus official's.
    paired = re.search(r'\| `bfloat16` \| ([-+]\d+\.\d) \| ([-+]\d+\.\d) \| nan \|', table)
    evaluations = _json(os.path.join(out, 'results.json'))
    assert [run['mode'] for run in evaluations] == ['official', 'bfloat16']
    final = {run['mode']: run['evaluations'][-1]['fid'] for run in evaluations}
    assert paired and float(paired.group(1)) == round(final['bfloat16'] - final['official'], 1)
    assert all(len(run['evaluations']) == 2 for run in evaluations)
    assert all(run['cpu'] and run['cpu'] in result.stdout for run in evaluations)


def _latest_networks(run):
    """(config dict, {network: {weight path: value}}) of a run's best (else latest) checkpoint."""
    import checkpoints
    info = checkpoints.init_source(run)
    return info['conf'].to_dict(), checkpoints.init_weights(info, info['conf'], 'its own config')


def finetune(result, ws):
    import config
    import model
    assert 'G, its EMA and D start from' in result.stdout
    source, run = os.path.join(ws, 'runs', 'cifar10'), os.path.join(ws, 'runs', 'my_emoji')
    record = _json(os.path.join(run, 'run.json'))['init_from']
    assert record['source'] == source and record['checkpoint'].startswith(
        os.path.join(source, 'best-training-checkpoints', 'ckpt-'))
    source_conf, source_nets = _latest_networks(source)
    conf, nets = _latest_networks(run)
    # The source's config (the narrow cifar10 run's widths, its batch of 16) with freeze_d=2.
    assert conf == dict(source_conf, freeze_d=2)
    frozen = model.frozen_weight_paths(model.build_discriminator(
        config.Config(conf), initialize=False), 2)
    assert {path.split('/')[1] for path in frozen} == {'inp_conv', 'down_block_0'}
    for path in frozen:
        np.testing.assert_array_equal(nets['discriminator'][path],
                                      source_nets['discriminator'][path])
    assert _metrics(run)[-1]['n_images'] == 2 * 16  # counters from 0, not the source's


def finetune_experiment(result, ws):
    out = os.path.join(ws, 'ft')
    assert os.path.getsize(os.path.join(out, 'finetune.png')) > 10000
    assert '| `finetune_fresh_ema` |' in open(os.path.join(out, 'finetune.md')).read()
    results = _json(os.path.join(out, 'results.json'))
    assert results['cpu'] in result.stdout and np.isfinite(results['source_fid'])
    assert [len(run['evaluations']) for run in results['runs']] == [2]
    # That arm's source is the source run with its EMA generator replaced by its G.
    _, source = _latest_networks(os.path.join(ws, 'runs', 'cifar10'))
    _, fresh = _latest_networks(os.path.join(out, 'source_fresh_ema'))
    for path, value in source['generator'].items():
        np.testing.assert_array_equal(fresh['ema_generator'][path.replace(
            'generator', 'ema_generator', 1)], value)


def inner_loop(result, ws):
    """The inner loop selects tests of every test file, and fewer than the whole suite."""
    selected = re.findall(r'^(tests/test_\w+\.py)::', result.stdout, re.M)
    files = {os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, 'tests',
                                                                            'test_*.py'))}
    assert set(selected) == files, sorted(files - set(selected))
    total = re.search(r'(\d+)/(\d+) tests collected \((\d+) deselected\)', result.stdout)
    assert total and 0 < int(total.group(1)) < int(total.group(2)), result.stdout[-500:]
