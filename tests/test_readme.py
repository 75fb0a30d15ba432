"""The README's commands work as written (or in a quick form), and CI runs its test command."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme():
    with open(os.path.join(ROOT, 'README.md')) as f:
        return f.read()


def command_lines():
    return [line.strip() for line in readme().splitlines() if line.startswith('    python3 ')]


def test_ci_runs_exactly_the_readme_test_command():
    test_command = next(line for line in command_lines() if 'pytest' in line)
    with open(os.path.join(ROOT, '.ci', 'run')) as f:
        ci = [line.strip() for line in f if line.strip() and not line.startswith('#')]
    install, _, run = test_command.partition(' && python3 -m pytest')
    assert install.replace('install -r', 'install -q -r').replace(
        'install --no-deps', 'install -q --no-deps') in ci
    assert 'python3 -m pytest' + run in ci


def test_first_command_installs_and_trains_the_demo():
    first = command_lines()[0]
    assert first.startswith('python3 -m pip install -r requirements.txt')
    assert first.endswith('&& python3 train.py')


def _run(command):
    result = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-2000:])
    return result.stdout


def test_documented_quick_commands_run():
    lines = command_lines()
    assert 'python3 train.py --preset tiny --dry_run' in ' '.join(lines)
    assert '"img_size": 32' in _run('python3 train.py --preset tiny --dry_run')
    assert '19,901,647' in _run('python3 model.py --preset cifar10')


def test_every_documented_script_and_flag_exists():
    # Each python3 SCRIPT --flag in the README must be accepted by that script's parser.
    helps = {}
    for line in command_lines():
        match = re.match(r'python3 (\w+\.py)(.*)', line)
        if not match:
            continue
        script, rest = match.groups()
        if script not in helps:
            helps[script] = _run(f'python3 {script} --help')
        for flag in re.findall(r'(--\w+)', rest):
            assert flag in helps[script], f'{script} has no {flag} (README: {line})'
