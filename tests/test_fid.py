"""fid.py and distances.py: FID and KID values, the reference-statistics cache shared across
runs, the in-training evaluator and the command line."""

import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg

import config
import data
import distances
import fid

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- FID of real image sets

@pytest.fixture(scope='module')
def set_features(standard_extractor, fid_image_sets):
    return {name: fid.extract_file_features(data.list_image_files(folder), standard_extractor, progress=False)
            for name, folder in fid_image_sets.items()}


def _fid(features_a, features_b):
    return distances.frechet_distance(*distances.activation_statistics(features_a), *distances.activation_statistics(features_b))


def test_fid_of_a_set_with_itself_is_zero(set_features, standard_extractor, fid_image_sets):
    assert set_features['emoji'].shape == (len(data.list_image_files(fid_image_sets['emoji'])), 2048)
    # Same images in other batch sizes: identical statistics, FID 0.
    again = fid.extract_file_features(data.list_image_files(fid_image_sets['emoji'])[:8], standard_extractor,
                                      batch_size=3, progress=False)
    assert _fid(set_features['emoji'][:8], again) == pytest.approx(0.0, abs=1e-3)


def test_fid_halves_of_one_set_closer_than_different_sets(set_features):
    emoji, shapes = set_features['emoji'], set_features['shapes']
    half = len(emoji) // 2
    within = _fid(emoji[:half], emoji[half:])
    across = _fid(emoji[:half], shapes[:half])
    assert within < 0.5 * across, (within, across)


# ---------------------------------------------------------------- distances

def _scipy_fid(mu1, sigma1, mu2, sigma2):
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean).real)


@pytest.mark.parametrize('dim', [64, 256])
def test_frechet_distance_matches_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    features_a = rng.standard_normal((4 * dim, dim)) @ rng.standard_normal((dim, dim)) * 0.3
    features_b = rng.standard_normal((4 * dim, dim)) * 1.2 + 0.1
    stats = (*distances.activation_statistics(features_a), *distances.activation_statistics(features_b))
    assert distances.frechet_distance(*stats) == pytest.approx(_scipy_fid(*stats), rel=1e-6)


def test_frechet_distance_with_singular_covariances():
    # Fewer samples than dimensions: rank-deficient covariances.  Exact reference:
    # tr sqrtm(S1 S2) is the nuclear norm of Xc Yc^T / sqrt((n-1)(m-1)).
    rng = np.random.default_rng(1)
    features_a, features_b = rng.standard_normal((40, 128)), rng.standard_normal((50, 128)) + 0.2
    mu_a, sigma_a = distances.activation_statistics(features_a)
    mu_b, sigma_b = distances.activation_statistics(features_b)
    centred_a, centred_b = features_a - mu_a, features_b - mu_b
    nuclear = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum() / np.sqrt(39 * 49)
    reference = (mu_a - mu_b) @ (mu_a - mu_b) + np.trace(sigma_a) + np.trace(sigma_b) - 2 * nuclear
    assert distances.frechet_distance(mu_a, sigma_a, mu_b, sigma_b) == pytest.approx(reference, rel=1e-6)
    assert distances.frechet_distance(mu_a, sigma_a, mu_a, sigma_a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_falls_back_to_eps(monkeypatch):
    calls = []
    real_trace = distances._trace_sqrt_product

    def fails_once(sigma1, sigma2):
        calls.append(sigma1[0, 0])
        if len(calls) == 1:
            raise np.linalg.LinAlgError('did not converge')
        return real_trace(sigma1, sigma2)

    monkeypatch.setattr(distances, '_trace_sqrt_product', fails_once)
    with pytest.warns(UserWarning, match='adding 1e-06'):
        value = distances.frechet_distance(np.zeros(3), np.eye(3), np.ones(3), np.eye(3))
    assert value == pytest.approx(3.0, abs=1e-5) and calls[1] == pytest.approx(1 + 1e-6)


def test_frechet_distance_rejects_bad_statistics():
    with pytest.raises(config.UserError, match='sigma must be'):
        distances.frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(config.UserError, match='NaN'):
        distances.frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))


def test_kid_unbiased_and_shapes():
    rng = np.random.default_rng(0)
    same_a, same_b = rng.standard_normal((300, 32)), rng.standard_normal((300, 32))
    mean, std = distances.kernel_inception_distance(same_a, same_b, num_subsets=20, subset_size=100)
    assert isinstance(mean, float) and isinstance(std, float) and std > 0
    assert abs(mean) < 3 * std + 1e-3
    shifted = rng.standard_normal((300, 32)) * 1.5 + 0.5
    mean_diff, std_diff = distances.kernel_inception_distance(same_a, shifted, num_subsets=20, subset_size=100)
    assert mean_diff > 5 * std_diff and mean_diff > 100 * abs(mean)
    # subset_size larger than the sets is clipped to the set size
    assert np.isfinite(distances.kernel_inception_distance(same_a[:5], shifted[:7], num_subsets=3)[0])
    with pytest.raises(config.UserError, match='same d'):
        distances.kernel_inception_distance(same_a, shifted[:, :5])


# ---------------------------------------------------------------- training-time evaluator

def _sample_fn(seed):
    rng = np.random.default_rng(seed)
    return lambda batch_size: rng.uniform(-1, 1, (batch_size, 32, 32, 3)).astype(np.float32)


def test_evaluator_caches_real_statistics(standard_extractor, fid_image_sets, tmp_path,
                                          fid_weights):
    stats_dir = str(tmp_path / 'stats')
    options = dict(real_source=fid_image_sets['emoji'], img_size=32, n_real=6, n_gen=4,
                   batch_size=6, stats_dir=stats_dir, inception_weights=fid_weights, progress=False)
    evaluator = fid.FIDEvaluator(**options)
    assert evaluator.extractor is standard_extractor  # one network per process
    before = standard_extractor.num_images_processed
    first = evaluator.evaluate(_sample_fn(0), gen_batch_size=3)
    assert standard_extractor.num_images_processed - before == 6 + 4
    assert isinstance(first, float) and first > 0
    cached_files = glob.glob(os.path.join(stats_dir, '*.npz'))
    assert len(cached_files) == 1
    with np.load(cached_files[0], allow_pickle=False) as data:
        assert data['mu'].shape == (2048,) and data['sigma'].shape == (2048, 2048)
        real_mu = data['mu']

    # The next evaluation extracts features of the generated images only.
    before = standard_extractor.num_images_processed
    assert evaluator.evaluate(_sample_fn(0)) == pytest.approx(first, rel=1e-5)
    assert standard_extractor.num_images_processed - before == 4

    # A new evaluator (e.g. a resumed run) loads the statistics from disk.
    before = standard_extractor.num_images_processed
    np.testing.assert_array_equal(fid.FIDEvaluator(**options).real_statistics()['mu'], real_mu)
    assert standard_extractor.num_images_processed == before

    # KID needs the real features: computed once more, then cached with them.
    metrics = fid.FIDEvaluator(compute_kid=True, **options).evaluate_metrics(_sample_fn(0))
    assert set(metrics) == {'fid', 'kid_mean', 'kid_std'}
    before = standard_extractor.num_images_processed
    assert fid.FIDEvaluator(compute_kid=True, **options).real_statistics()['features'].shape == (6, 2048)
    assert standard_extractor.num_images_processed == before


def test_two_runs_on_one_dataset_share_the_reference_statistics(
        standard_extractor, fid_image_sets, tmp_path, monkeypatch):
    """The cache lives in config.cache_dir('fid-stats'), keyed by the files (names, sizes,
    modification times), the image size, the crop and the detector: not in a run folder."""
    monkeypatch.setenv('LADAGAN_CACHE_DIR', str(tmp_path / 'cache'))
    real = str(tmp_path / 'real')
    shutil.copytree(fid_image_sets['emoji'], real)
    conf = config.make_config('tiny', n_fid_real=16, n_fid_gen=4, fid_batch_size=8)
    before = standard_extractor.num_images_processed
    fid.training_evaluator(conf, real)  # the first run computes them, before its first step
    assert standard_extractor.num_images_processed - before == 16
    stats = glob.glob(str(tmp_path / 'cache' / 'fid-stats' / '*'))
    assert len(stats) == 1 and stats[0].endswith('.npz')  # written whole: no temporary left
    before = standard_extractor.num_images_processed
    fid.training_evaluator(conf, real)  # a second run on the same data loads them
    assert standard_extractor.num_images_processed == before
    # Another crop or size, or a changed file, is another key.
    fid.training_evaluator(conf.replace(center_crop=True), real)
    first = sorted(data.list_image_files(real))[0]
    os.utime(first, ns=(os.stat(first).st_atime_ns, os.stat(first).st_mtime_ns + 10 ** 9))
    before = standard_extractor.num_images_processed
    fid.training_evaluator(conf, real)
    assert standard_extractor.num_images_processed - before == 16
    assert len(glob.glob(str(tmp_path / 'cache' / 'fid-stats' / '*.npz'))) == 3


def test_evaluator_rejects_bad_input(fid_image_sets, tmp_path):
    with pytest.raises(config.UserError, match='does not exist'):
        fid.FIDEvaluator(str(tmp_path / 'missing'), img_size=32)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(config.UserError, match='No images found'):
        fid.FIDEvaluator(str(tmp_path / 'empty'), img_size=32)
    with pytest.raises(config.UserError, match='1000 images were requested'):
        fid.FIDEvaluator(fid_image_sets['emoji'], img_size=32, n_real=1000)
    with pytest.raises(config.UserError, match='Backbone'):
        fid.FIDEvaluator(fid_image_sets['emoji'], img_size=32, backbone='vgg')


# ---------------------------------------------------------------- CLI

def test_cli_saves_and_reuses_statistics(fid_image_sets, tmp_path, capsys, fid_weights):
    stats_path = str(tmp_path / 'emoji.npz')
    assert fid.main([fid_image_sets['emoji'], '--num', '8', '--save_stats', stats_path, '--kid',
                     '--inception_weights', fid_weights]) == 0
    assert os.path.isfile(stats_path)
    assert fid.main([stats_path, fid_image_sets['shapes'], '--num', '8', '--kid',
                     '--inception_weights', fid_weights]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith('FID: ') and float(lines[-2].split()[1]) > 0
    assert lines[-1].startswith('KID: ')


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    assert fid.main([str(tmp_path / 'empty'), str(tmp_path / 'empty')]) == 2
    assert fid.main(['only_one_path']) == 2
    assert fid.main([str(tmp_path / 'a.npz'), str(tmp_path / 'b.npz')]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith('error: ') for line in errors)


@pytest.mark.slow
def test_cli_model_dir_scores_the_run_against_its_recorded_reference(tmp_path, capsys, fid_weights):
    """A real run folder (the old-run fixture, resumed for one step so that it records its
    data): fid.py --model_dir finds the reference in run.json, with no mock in between."""
    import train
    from conftest import render_shape_images
    run = str(tmp_path / 'run')
    shutil.copytree(os.path.join(REPO_DIR, 'tests', 'fixtures', 'run_before_run_record'), run)
    # The run's reference is its --eval_dir, not its training images.
    train_data = render_shape_images(str(tmp_path / 'train'), 8, size=32)
    eval_data = render_shape_images(str(tmp_path / 'eval'), 16, size=32, seed=7)
    # Without run.json the run names no reference: one sentence.
    assert fid.main(['--model_dir', run, '--num', '8']) == 2
    assert capsys.readouterr().err == (f'error: {run} records no training data (it has no '
                                       'run.json); pass the real images as PATH_A.\n')
    assert train.main(['--model_dir', run, '--file_pattern', train_data, '--eval_dir', eval_data,
                       '--total_iter', '5', '--fid_inter', '0']) == 0
    capsys.readouterr()
    assert fid.main(['--model_dir', run, '--num', '12', '--cache_dir', str(tmp_path / 'cache'),
                     '--inception_weights', fid_weights]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert f'FID of 12 images of the EMA generator of {run} against 12 images of {eval_data}' in out
    value = float(out[-1].split()[1])
    assert out[-1].startswith('FID: ') and np.isfinite(value) and value > 0
    # The same 12 reference images' statistics in TTUR's format (mu and sigma, nothing else):
    # the same FID, and a caveat about how other tools resize.
    assert fid.main([eval_data, '--num', '12', '--save_stats', str(tmp_path / 'ours.npz'),
                     '--inception_weights', fid_weights]) == 0
    with np.load(tmp_path / 'ours.npz') as ours:
        np.savez(tmp_path / 'ttur.npz', mu=ours['mu'], sigma=ours['sigma'])
    capsys.readouterr()
    assert fid.main(['--model_dir', run, '--num', '12', str(tmp_path / 'ttur.npz'),
                     '--inception_weights', fid_weights]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].endswith(f'against the statistics in {tmp_path / "ttur.npz"}')
    assert out[1].startswith(f'note: {tmp_path / "ttur.npz"} was not written by this project')
    assert float(out[-1].split()[1]) == value
    assert fid.main(['--model_dir', str(tmp_path / 'no_such_run')]) == 2
    assert capsys.readouterr().err.strip() == (
        f'error: {tmp_path}/no_such_run is not a LadaGAN run folder: it has no config.json')


def test_cli_skips_and_counts_undecodable_images(fid_image_sets, tmp_path, capsys, fid_weights):
    folder = tmp_path / 'with_a_bad_file'
    shutil.copytree(fid_image_sets['emoji'], folder)
    (folder / 'broken.png').write_bytes(b'not an image')
    with pytest.warns(data.SkippedImagesWarning, match='Skipped 1 of 17 image files'):
        assert fid.main([str(folder), fid_image_sets['shapes'], '--batch_size', '8',
                         '--inception_weights', fid_weights]) == 0
    assert float(capsys.readouterr().out.strip().splitlines()[-1].split()[1]) > 0


@pytest.mark.slow
def test_cli_subprocess_prints_fid_and_fails_cleanly(fid_image_sets, tmp_path, fid_weights):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_DIR, 'fid.py'), fid_image_sets['emoji'], fid_image_sets['shapes'],
         '--num', '4', '--batch_size', '4'],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip().splitlines()[-1].split()[1]) > 0

    result = subprocess.run([sys.executable, os.path.join(REPO_DIR, 'fid.py'), str(tmp_path / 'missing'),
                             fid_image_sets['shapes']], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().count('\n') == 0 and 'missing' in result.stderr
    assert 'Traceback' not in result.stderr
