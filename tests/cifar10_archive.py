"""A cifar-10-python.tar.gz written here, with known pixels and labels, pickled as the real
archive's batches are: by Python 2's pickle (protocol 2), byte strings as SHORT_BINSTRING and
BINSTRING, arrays through numpy.core.multiarray._reconstruct. Python 3's default pickle encoding
fails on them (the raw pixels are not ASCII) exactly as on the real files; Keras's load_batch
reads them. No network is needed to test prepare.py's CIFAR-10 path end to end."""
import io
import struct
import tarfile

import numpy as np

CLASS_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
               'truck']


def _string(value):
    """A Python 2 str: SHORT_BINSTRING below 256 bytes, else BINSTRING."""
    value = value.encode() if isinstance(value, str) else value
    if len(value) < 256:
        return b'U' + bytes([len(value)]) + value
    return b'T' + struct.pack('<i', len(value)) + value


def _int(value):
    if 0 <= value < 256:
        return b'K' + bytes([value])
    if 0 <= value < 65536:
        return b'M' + struct.pack('<H', value)
    return b'J' + struct.pack('<i', value)


def _uint8_array(array):
    """numpy.core.multiarray._reconstruct(ndarray, (0,), 'b') then BUILD with (1, shape,
    dtype('u1'), False, raw bytes), as numpy pickles an array under Python 2."""
    dtype = (b'cnumpy\ndtype\n' + _string('u1') + _int(0) + _int(1) + b'\x87R'
             + b'(' + _int(3) + _string('|') + b'NNN' + b'J\xff\xff\xff\xff' * 2 + _int(0)
             + b'tb')
    shape = b'(' + b''.join(_int(side) for side in array.shape) + b't'
    return (b'cnumpy.core.multiarray\n_reconstruct\n' + b'cnumpy\nndarray\n' + _int(0) + b'\x85'
            + _string('b') + b'\x87R' + b'(' + _int(1) + shape + dtype + b'\x89'
            + _string(np.ascontiguousarray(array, np.uint8).tobytes()) + b'tb')


def python2_pickle(entries):
    """A protocol-2 pickle of a dict {str: str | list of int | list of str | uint8 array}."""
    out = b'\x80\x02}('
    for key, value in entries.items():
        out += _string(key)
        if isinstance(value, np.ndarray):
            out += _uint8_array(value)
        elif isinstance(value, list):
            out += b'](' + b''.join(_int(v) if isinstance(v, int) else _string(v)
                                    for v in value) + b'e'
        else:
            out += _string(value)
    return out + b'u.'


def known_images(count, seed):
    """(count, 32, 32, 3) uint8 whose three channels differ everywhere (a wrong planar-to-HWC
    transpose cannot give them back), and labels cycling through the ten classes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    images[:, :, :, 0] = images[:, :, :, 0] // 3              # red in [0, 85)
    images[:, :, :, 1] = 85 + images[:, :, :, 1] // 3         # green in [85, 170)
    images[:, :, :, 2] = 170 + images[:, :, :, 2] // 3        # blue in [170, 255)
    images[:, 0, 0] = [255, 0, 128]                           # rows and columns told apart
    return images, [int(label) for label in (np.arange(count) + seed) % 10]


def write_cifar10_archive(path, per_batch=12, test_count=10):
    """Writes `path` (cifar-10-python.tar.gz); returns {'train': (images, labels), 'test': ...}."""
    splits = {'train': known_images(5 * per_batch, 1), 'test': known_images(test_count, 2)}
    files = {'batches.meta': python2_pickle({'num_cases_per_batch': [per_batch],
                                             'label_names': CLASS_NAMES, 'num_vis': [3072]})}
    for index in range(5):
        images, labels = splits['train']
        part = slice(index * per_batch, (index + 1) * per_batch)
        files[f'data_batch_{index + 1}'] = _batch(f'training batch {index + 1} of 5',
                                                  images[part], labels[part])
    files['test_batch'] = _batch('testing batch 1 of 1', *splits['test'])
    with tarfile.open(path, 'w:gz') as archive:
        for name, payload in files.items():
            info = tarfile.TarInfo(f'cifar-10-batches-py/{name}')
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return splits


def _batch(title, images, labels):
    # Rows of 3,072 bytes: the red plane, then green, then blue, each 32 rows of 32.
    planar = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    return python2_pickle({'batch_label': title, 'labels': labels, 'data': planar,
                           'filenames': [f'image_{i}.png' for i in range(len(images))]})
