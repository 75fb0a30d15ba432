"""report.py: the run report is one self-contained page; a real headless browser shows every
image on it and draws the FID curve."""
import contextlib
import io
import os
import shutil

import pytest

import report
from conftest import render_shape_images


@pytest.fixture(scope='module')
def reported_run(tmp_path_factory, fid_weights):
    """A real tiny run with three FID evaluations, and its report written as a user would (in
    this process: a fresh interpreter is not what is tested here)."""
    import train
    folder = tmp_path_factory.mktemp('report')
    images = render_shape_images(str(folder / 'data'), 24, size=32)
    run = str(folder / 'run')
    assert train.main(['--preset', 'tiny', '--file_pattern', images, '--model_dir', run,
                       '--total_iter', '6', '--fid_inter', '2', '--metrics_inter', '1',
                       '--set', 'n_fid_real=24', '--set', 'n_fid_gen=24',
                       '--set', 'fid_batch_size=24']) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert train.main(['--model_dir', run, '--report']) == 0
    assert out.getvalue().strip() == f'Wrote {run}/report.html'
    return run


# The tests that read `reported_run` share one test process (xdist group), hence one run.
@pytest.mark.slow
@pytest.mark.xdist_group('reported_run')
def test_the_report_is_one_file_with_everything_embedded(reported_run, tmp_path):
    moved = tmp_path / 'report.html'
    shutil.copy(os.path.join(reported_run, 'report.html'), moved)  # alone, away from the run
    page = moved.read_text()
    assert page.count('src="data:image/png;base64,') >= 6  # 2 grids, losses, 3 attention maps
    assert 'src="http' not in page and 'href="http' not in page and '<script' not in page
    for words in ('best FID', 'images seen', 'training time', 'Config', "The guard's events"):
        assert words in page


def test_the_fid_curve_has_a_point_per_evaluation():
    svg = report.fid_curve_svg([(32, 300.0), (64, 250.0), (96, 260.0)])
    points = svg.split('<polyline points="')[1].split('"')[0].split()
    assert len(points) == 3
    xs, ys = zip(*(map(float, point.split(',')) for point in points))
    assert xs[0] < xs[1] < xs[2] and ys[1] > ys[0]  # 250 is the lower FID: drawn lower
    assert 'best FID 250.00' in svg


def _browser():
    """(playwright's sync_playwright, the path of Chromium). In CI both are always there
    (.ci/run installs Debian's chromium, requirements-dev.txt playwright): the test runs.
    Elsewhere, without them, it is skipped with the reason."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    executable = next((shutil.which(name) for name in ('chromium', 'chromium-browser',
                                                        'google-chrome') if shutil.which(name)),
                      None)
    if sync_playwright and executable:
        return sync_playwright, executable
    assert not os.environ.get('CI'), 'CI must have playwright and chromium (see .ci/run)'
    pytest.skip('needs playwright (requirements-dev.txt) and Chromium (apt install chromium)')


@pytest.mark.slow
@pytest.mark.xdist_group('reported_run')
def test_the_report_opens_in_headless_chromium(reported_run):
    sync_playwright, executable = _browser()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                  '--disable-component-update', '--no-first-run', '--disable-sync'])
        try:
            page = browser.new_page()
            page.goto('file://' + os.path.join(reported_run, 'report.html'))
            page.wait_for_load_state('load')
            loaded = page.evaluate('Array.from(document.images).map('
                                   'image => [image.complete, image.naturalWidth])')
            curve = page.evaluate('''() => {
                const line = document.querySelector('#fid-curve polyline');
                const box = line.getBoundingClientRect();
                return [line.getAttribute('points').trim().split(/\\s+/).length,
                        box.width, box.height]; }''')
        finally:
            browser.close()
    assert len(loaded) >= 6 and all(complete and width > 0 for complete, width in loaded), loaded
    points, width, height = curve
    assert points == 3 and width > 100 and height > 0, curve


def test_a_corrupt_config_is_one_sentence_and_no_report(tmp_path, capsys):
    import train
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'config.json').write_text('{"img_size": 32,')  # cut short
    assert train.main(['--model_dir', str(run), '--report']) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {run}/config.json is not a valid LadaGAN config (')
    assert len(err.strip().splitlines()) == 1 and not (run / 'report.html').exists()
