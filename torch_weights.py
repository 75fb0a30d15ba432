"""Reading PyTorch weight files (torch.save zips, legacy streams, TorchScript) without PyTorch.

The FID Inception weights are published as PyTorch files. A pickle can run code, so these files
are read by RestrictedTorchUnpickler, which allows only the few globals that rebuild tensors and
refuses anything else before it is looked up; tensors become numpy arrays read from the raw
storages. Nothing from the file is executed and torch is never imported.
"""
import collections
import io
import os
import pickle
import zipfile

import numpy as np

from config import UserError


class UnsafePickleError(UserError):
    """A weight file asked to run code that is not on the tensor-loading allow-list."""


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
            raise UserError('The weight file uses storage views, which this reader does not support.')
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
        raise UserError(f'Storage {tensor_ref.storage.key} in the weight file is truncated.')
    storage = np.frombuffer(storage_bytes, dtype=dtype, count=numel)
    if len(tensor_ref.shape) != len(tensor_ref.stride):
        raise UserError('A tensor in the weight file has mismatching shape and stride.')
    # Refuse shapes/strides that would read outside the storage (as_strided does not
    # check) or blow a small storage up into a huge array.
    shape, stride, offset = tensor_ref.shape, tensor_ref.stride, tensor_ref.offset
    if min(shape, default=0) < 0 or min(stride, default=0) < 0 or offset < 0:
        raise UserError('A tensor in the weight file has a negative size, stride or offset.')
    if 0 in shape:
        return np.zeros(shape, dtype=dtype.newbyteorder('='))
    last_index = offset + sum((size - 1) * step for size, step in zip(shape, stride))
    if last_index >= numel or float(np.prod(shape, dtype=np.float64)) > numel:
        raise UserError('A tensor in the weight file points outside its storage or is larger than it.')
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
            raise UserError(f'{path} is a zip file but not a PyTorch weight file (no data.pkl).')
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
                    raise UserError(f'{path} lacks the storage {storage_name} of tensor {name}.')
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
            raise UserError(f'{path} is not a PyTorch weight file.') from error
        if magic_number != _LEGACY_MAGIC_NUMBER:
            raise UserError(f'{path} is not a PyTorch weight file.')
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
                raise UserError(f'{path} is truncated or names storage {key} that no tensor uses.')
            numel = int(np.frombuffer(count_bytes, dtype='<i8')[0])
            storage_bytes[str(key)] = file.read(max(numel, 0) * storage.storage_type.dtype.itemsize)
    arrays = {}
    for name, tensor_ref in tensor_refs.items():
        if tensor_ref.storage.key not in storage_bytes:
            raise UserError(f'{path} lacks the storage of tensor {name}.')
        arrays[name] = _materialise(tensor_ref, storage_bytes[tensor_ref.storage.key], 'little')
    return arrays


def read_torch_tensors(path):
    """All tensors of a torch.save or TorchScript file as {dotted name: numpy array}.

    Never imports torch and never runs code from the file: the pickle goes through
    ``RestrictedTorchUnpickler``.  Raises ``UnsafePickleError`` for a file that
    references anything but tensors and ``UserError`` for an unreadable one.
    """
    if not os.path.isfile(path):
        raise UserError(f'Inception weight file {path!r} does not exist.')
    if zipfile.is_zipfile(path):
        return _read_torch_zip(path)
    return _read_torch_legacy(path)
