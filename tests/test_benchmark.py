"""benchmark.py runs end to end in its quick form, reports sane numbers and names its CPU."""
import os
import subprocess
import sys

import numpy as np
import pytest

import benchmark
import benchmark_data
import benchmark_steps
import cli
from test_readme_commands import QUICK_BENCHMARK, run_command


@pytest.mark.slow
@pytest.mark.xdist_group('commands_benchmark')
def test_quick_benchmark_with_profile(workspaces):
    """The train (with a profile) and memory sections on the tiny preset, both modes: the
    documented command `python3 benchmark.py --only train,memory` in its quick form (one run,
    shared with tests/test_readme_commands.py), checked by check_quick_benchmark."""
    run_command(workspaces, QUICK_BENCHMARK)


def test_a_section_that_does_not_exist_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        benchmark.parse_args(['--only', 'trian'])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("error: --only 'trian' names no known section; available: "
                        + ', '.join(benchmark.SECTIONS))


def test_the_table_and_the_cpu_model():
    table = benchmark.format_table([{'section': 'train', **benchmark.row(
        'tiny: train step', 123.456, 'img/s', 'batch 2')}])
    assert 'tiny: train step' in table and '123.5' in table and 'img/s' in table
    machine = cli.cpu_model()
    assert machine.split(', ')[1].endswith(' cores') and machine.split(', ')[0]


def test_compared_steps_alternate_after_one_untimed_call_each():
    """The speed ratios (conditional against unconditional, precisions) rest on timing the steps
    in turn, round by round, after each has compiled: a drift of the machine's speed then falls
    on both alike."""
    calls = []
    steps = {name: (lambda real, name=name: calls.append((name, real))) for name in ('a', 'b')}
    times = benchmark_steps.alternating_times(steps, 'batch', rounds=3)
    assert calls == [('a', 'batch'), ('b', 'batch')] * 4
    assert {name: len(seconds) for name, seconds in times.items()} == {'a': 3, 'b': 3}
    assert all(value >= 0 for seconds in times.values() for value in seconds)


def test_a_child_of_a_large_process_reports_its_own_peak_memory():
    """The memory section measures each configuration in a child process: its peak must be the
    child's own, not its parent's (Linux's ru_maxrss counts the forked parent image; seen when
    the suite's 12 GB test process ran the quick benchmark, whose tiny child reported 17 GB)."""
    ballast = np.ones(512 * 2**20 // 8)  # 512 MB, resident in this process
    child = subprocess.run(
        [sys.executable, '-c', 'import benchmark; print(benchmark._peak_rss_mb())'],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True,
        text=True, check=True)
    assert 0 < float(child.stdout) < 256 < ballast.nbytes / 2**20, child.stdout


def test_the_data_sections_photos_weigh_what_ffhqs_do(tmp_path):
    """The prepare rate is measured on synthetic 1,024 px photographs; decoding dominates it, so
    they must PNG-compress about as FFHQ's images1024x1024 do (1 to 2.5 MB a file)."""
    from PIL import Image
    path = str(tmp_path / 'photo.png')
    Image.fromarray(benchmark_data._photo(1024, 0)).save(path)
    assert 1.0e6 < os.path.getsize(path) < 2.5e6
