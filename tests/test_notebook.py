"""demo.ipynb runs headless end to end: the official tiny fixture stands in for the download and
the demo model trains for 3 iterations; outputs go to a temporary folder."""

import os

import nbformat
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO_ROOT, 'demo.ipynb')
OFFICIAL_TINY32 = os.path.join(REPO_ROOT, 'tests', 'fixtures', 'official', 'tiny32')
TIMEOUT_SECONDS = 600  # per cell; the whole run takes about a minute on 2 CPU cores


def _inject_after_parameters(notebook, source):
    """Insert a cell after the one tagged 'parameters' (as papermill does) and return it."""
    tagged = [index for index, cell in enumerate(notebook.cells)
              if 'parameters' in cell.get('metadata', {}).get('tags', [])]
    assert len(tagged) == 1, 'demo.ipynb needs exactly one cell tagged "parameters"'
    cell = nbformat.v4.new_code_cell(source)
    notebook.cells.insert(tagged[0] + 1, cell)
    return cell


@pytest.mark.slow
def test_demo_notebook_runs(tmp_path, monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    KernelSpecManager().get_kernel_spec('python3')  # raises when ipykernel's kernel is missing
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert notebook.metadata.kernelspec.name == 'python3'
    run_dir, samples_dir = tmp_path / 'run', tmp_path / 'samples'
    _inject_after_parameters(notebook, f'RUN_DIR = {str(run_dir)!r}\n'
                                       f'SAMPLES_DIR = {str(samples_dir)!r}')
    # The kernel inherits this environment: no download, a 3-iteration training.
    monkeypatch.setenv('LADAGAN_CHECKPOINT_DIR', OFFICIAL_TINY32)
    monkeypatch.setenv('LADAGAN_DEMO_ITERS', '3')
    monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '2')
    # The python3 kernel spec runs 'python'; jupyter_client swaps that for sys.executable,
    # so the kernel is this interpreter with this environment's packages.
    client = NotebookClient(notebook, kernel_name='python3', timeout=TIMEOUT_SECONDS,
                            resources={'metadata': {'path': REPO_ROOT}})
    client.execute()

    pretrained_out = samples_dir / 'pretrained'
    expected = ['grid.png', 'interpolation.gif', 'attention_stage0_8x8.png',
                'attention_stage1_16x16.png', 'attention_stage2_32x32.png',
                'seed0000.png', 'seed0015.png']
    for name in expected:
        assert (pretrained_out / name).is_file(), name
    assert (run_dir / 'config.json').is_file()
    assert any(name.endswith('.index') for name in os.listdir(run_dir / 'training-checkpoints'))
    assert (run_dir / 'loss_curves.png').is_file()
    assert (samples_dir / 'demo' / 'grid.png').is_file()
    # The figures and the GIF were displayed.
    outputs = [output for cell in notebook.cells if cell.cell_type == 'code'
               for output in cell.get('outputs', [])]
    assert sum('image/png' in output.get('data', {}) for output in outputs) >= 5
    assert any('image/gif' in output.get('data', {}) for output in outputs)


@pytest.mark.parametrize('needle', ["['git', 'clone', '-q', REPO_URL, 'ladagan']",
                                    "'pip', 'install', '-q', '-r', 'requirements.txt'",
                                    'drive.mount(', '--fid_inter', 'import google.colab'])
def test_demo_notebook_has_colab_steps(needle):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert any(needle in cell.source for cell in notebook.cells)


def _run_setup_cell(folder, repo_url, monkeypatch):
    """Run the notebook's first code cell in `folder` (a fresh runtime holds no repository) and
    return its outputs and the kernel's working directory afterwards."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    setup = next(cell for cell in notebook.cells if cell.cell_type == 'code')
    probe = nbformat.v4.new_code_cell('import os; print("cwd:", os.getcwd())')
    notebook.cells = [setup, probe]
    monkeypatch.setenv('LADAGAN_REPO_URL', repo_url)  # the kernel inherits the environment
    client = NotebookClient(notebook, kernel_name='python3', timeout=TIMEOUT_SECONDS,
                            resources={'metadata': {'path': str(folder)}})
    try:
        client.execute()
        failed = False
    except CellExecutionError:
        failed = True
    texts = [''.join(output.get('text', '')) + '\n'.join(output.get('traceback', []))
             for cell in notebook.cells for output in cell.get('outputs', [])]
    return failed, '\n'.join(texts)


def test_setup_cell_without_a_repository_address_stops_with_one_sentence(tmp_path, monkeypatch):
    failed, output = _run_setup_cell(tmp_path, '', monkeypatch)
    assert failed
    assert output.strip() == (
        "SetupStop: Set REPO_URL in the first code cell to the git address of the ladagan "
        "repository (e.g. 'https://github.com/OWNER/ladagan'), then run it again.")
    assert not os.listdir(tmp_path)


def test_setup_cell_with_a_bad_address_stops_with_one_sentence_not_a_git_error(tmp_path, monkeypatch):
    failed, output = _run_setup_cell(tmp_path, str(tmp_path / 'no_such_repo'), monkeypatch)
    assert failed
    assert output.startswith(f"SetupStop: git could not clone REPO_URL='{tmp_path}/no_such_repo' (")
    assert output.strip().endswith('correct the address in the first code cell and run it again.')
    assert output.strip().count('\n') == 0


@pytest.mark.slow
def test_setup_cell_clones_the_repository_and_installs_its_requirements(tmp_path, monkeypatch):
    # A local clone stands in for GitHub (no network here); pip finds everything installed.
    failed, output = _run_setup_cell(tmp_path, REPO_ROOT, monkeypatch)
    assert not failed, output
    assert f'cwd: {tmp_path}/ladagan' in output
    assert os.path.isfile(tmp_path / 'ladagan' / 'generate.py')
