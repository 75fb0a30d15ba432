"""benchmark.py runs end to end in its quick form, reports sane numbers and names its CPU."""
import pytest

import benchmark
import cli
from test_readme_commands import QUICK_BENCHMARK, run_command


@pytest.mark.slow
@pytest.mark.xdist_group('commands_benchmark')
def test_quick_benchmark_with_profile(workspaces):
    """The train (with a profile), data and memory sections on the tiny preset, both modes: the
    documented command `python3 benchmark.py --only train,data,memory` in its quick form (one
    run, shared with tests/test_readme_commands.py), checked by check_quick_benchmark."""
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
