"""torch_weights.py: PyTorch weight files read without PyTorch; hostile pickles are refused."""
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

import config
import torch_weights


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
    loaded = torch_weights.read_torch_tensors(str(path))
    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)
    # A transposed view: same storage, swapped strides.
    path = write_torch_zip(tmp_path / 't.pth', {'t': np.arange(6, dtype=np.float32).reshape(2, 3)},
                           strides={'t': (1, 2)}, legacy=legacy)
    np.testing.assert_array_equal(torch_weights.read_torch_tensors(str(path))['t'],
                                  np.arange(6, dtype=np.float32).reshape(3, 2).T)


def test_out_of_bounds_tensor_is_rejected(tmp_path):
    path = write_torch_zip(tmp_path / 'bad.pth', {'x': np.zeros(4, np.float32)}, offsets={'x': 3})
    with pytest.raises(config.UserError, match='outside its storage'):
        torch_weights.read_torch_tensors(str(path))
    # Stride 0 stays in bounds; the element count check stops 4 floats becoming 4 GB.
    path = write_torch_zip(tmp_path / 'huge.pth', {'x': np.zeros(4, np.float32)},
                           shapes={'x': (10 ** 9,)}, strides={'x': (0,)})
    with pytest.raises(config.UserError, match='larger than it'):
        torch_weights.read_torch_tensors(str(path))
    path = write_torch_zip(tmp_path / 'short.pth', {'x': np.zeros(4, np.float32)}, numels={'x': 1000})
    with pytest.raises(config.UserError, match='truncated'):
        torch_weights.read_torch_tensors(str(path))


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
    with pytest.raises(torch_weights.UnsafePickleError, match='refusing to load global'):
        torch_weights.read_torch_tensors(str(path))
    assert not marker.exists()


