"""What prepare.py reads: image folders, zips, CIFAR-10's python archive, LSUN's lmdb folders, and
the class labels they carry.

    source = sources.open_source('cifar-10-python.tar.gz', split='train')
    for item in source.items():        # in order: item.name, item.data (bytes) or item.pixels
        ...                            # (uint8 HWC), item.label (an int, or None)

Every source reads its images in a fixed order, so that a prepared set is the same whenever it
is made. Nothing is extracted to disk and no pickle runs code: CIFAR-10's batches (Python 2
pickles of numpy arrays) go through an unpickler that knows only what they hold.
"""
import collections
import hashlib
import io
import json
import os
import pickle
import re
import tarfile
import zipfile

import numpy as np

import data
from config import UserError


Item = collections.namedtuple('Item', 'name data pixels label')
LABEL_KINDS = ('auto', 'none', 'folders', 'json')
# A folder of five digits is a shard folder of a prepared set's layout (00000/img00000000.png),
# never a class.
SHARD_FOLDER = re.compile(r'^\d{5}$')
CIFAR10_FOLDER = 'cifar-10-batches-py'
CIFAR10_SPLITS = {'train': [f'data_batch_{index}' for index in range(1, 6)],
                  'test': ['test_batch']}


class Source:
    """A source of images: `kind`, `path`, `count` (known before reading), `class_names` (None
    without labels), `items()` in order, and `checksum()` (sha256 hex of what was read, complete
    once items() has been read to its end)."""

    kind = 'folder'

    def __init__(self, path):
        self.path = path
        self.class_names = None
        self._digest = hashlib.sha256()

    def checksum(self):
        return self._digest.hexdigest()

    def _restart_checksum(self):
        """A new read from the first item: the checksum is of this read (a sample read earlier
        does not count)."""
        self._digest = hashlib.sha256()

    def _counted(self, name, payload):
        """Hash one item's name and bytes into the source's checksum."""
        self._digest.update(name.encode('utf-8', 'surrogateescape') + b'\0')
        self._digest.update(hashlib.sha256(payload).digest())


def file_sha256(path, block=1 << 24):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for part in iter(lambda: f.read(block), b''):
            digest.update(part)
    return digest.hexdigest()


# ---------------------------------------------------------------- labels of named files

def class_of(relative_path):
    """The class folder of a file (its first folder that is not a shard folder), or None."""
    folders = [part for part in relative_path.replace('\\', '/').split('/')[:-1]
               if not SHARD_FOLDER.match(part)]
    return folders[0] if folders else None


def labels_from_folders(names, where):
    """(label per name, class names): classes are the sorted class folders."""
    classes = [class_of(name) for name in names]
    missing = [name for name, found in zip(names, classes) if found is None]
    if missing:
        raise UserError(f'--labels folders needs every image of {where} in a class folder, but '
                        f'{missing[0]!r} is in none (folders of five digits are shard folders of '
                        'a prepared set, not classes)')
    class_names = sorted(set(classes))
    index = {name: position for position, name in enumerate(class_names)}
    return [index[found] for found in classes], class_names


def _labels_from_json(names, text, where):
    """(label per name, class names) from a dataset.json in NVIDIA's format
    ({"labels": [[file, int], ...]}, ours adds "class_names")."""
    try:
        document = json.loads(text)
        pairs = document['labels']
        if pairs is None:
            return None, None
        table = {str(name).replace('\\', '/'): label for name, label in pairs}
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f'The dataset.json of {where} is not in the {{"labels": [[file, int], '
                        f'...]}} format ({err})') from None
    labels = []
    for name in names:
        label = table.get(name)
        if isinstance(label, bool) or not isinstance(label, int) or label < 0:
            what = 'has no label' if label is None else f'has the label {label!r}, not a class index'
            raise UserError(f'{name!r} {what} in the dataset.json of {where}: give every image '
                            'an integer class of 0 or more, or prepare with --labels none')
        labels.append(label)
    class_names = document.get('class_names') if isinstance(document, dict) else None
    if isinstance(class_names, list):  # then every label must name one of them
        beyond = next((name for name, label in zip(names, labels)
                       if label >= len(class_names)), None)
        if beyond is not None:
            raise UserError(f'{beyond!r} has the label {table[beyond]} in the dataset.json of '
                            f'{where}, which names {len(class_names)} classes (0 to '
                            f'{len(class_names) - 1}): fix the label or the class names')
    else:
        class_names = [str(index) for index in range(max(labels) + 1)]
    return labels, [str(name) for name in class_names]


class _NamedFiles(Source):
    """Images named by their path inside the source (a folder or a zip), in name order, with
    labels from class folders or the source's dataset.json."""

    def _set_labels(self, names, labels, json_text):
        if labels == 'auto':
            labels = 'json' if json_text is not None and json.loads(json_text).get(
                'labels') is not None else 'none'
        if labels == 'json' and json_text is None:
            raise UserError(f'--labels json reads the dataset.json of {self.path}, which has none')
        if labels == 'none':
            self.labels = [None] * len(names)
        elif labels == 'folders':
            self.labels, self.class_names = labels_from_folders(names, self.path)
        else:
            self.labels, self.class_names = _labels_from_json(names, json_text, self.path)
            if self.labels is None:
                self.labels = [None] * len(names)
        self.label_kind = labels


class FolderSource(_NamedFiles):
    kind = 'folder'

    def __init__(self, path, labels='auto'):
        super().__init__(path)
        self.files = data.list_image_files(path)
        self.names = [os.path.relpath(file, path).replace(os.sep, '/') for file in self.files]
        self.count = len(self.files)
        json_path = os.path.join(path, 'dataset.json')
        json_text = open(json_path).read() if os.path.isfile(json_path) else None
        self._set_labels(self.names, labels, json_text)

    def items(self):
        self._restart_checksum()
        for file, name, label in zip(self.files, self.names, self.labels):
            with open(file, 'rb') as f:
                payload = f.read()
            self._counted(name, payload)
            yield Item(name, payload, None, label)


class ZipSource(_NamedFiles):
    kind = 'zip'

    def __init__(self, path, labels='auto'):
        super().__init__(path)
        try:
            self.archive = zipfile.ZipFile(path)
            members = self.archive.namelist()
        except (OSError, zipfile.BadZipFile) as err:
            raise UserError(f'{path} is not a readable zip file ({err})') from None
        self.names = sorted(name for name in members if not name.endswith('/') and
                            name.lower().endswith(data.IMAGE_EXTENSIONS))
        if not self.names:
            raise UserError(f'The zip file {path} holds no images; allowed extensions: '
                            + ', '.join(ext[1:] for ext in data.IMAGE_EXTENSIONS))
        self.count = len(self.names)
        json_text = (self.archive.read('dataset.json').decode() if 'dataset.json' in members
                     else None)
        self._set_labels(self.names, labels, json_text)

    def items(self):
        self._restart_checksum()
        for name, label in zip(self.names, self.labels):
            payload = self.archive.read(name)
            self._counted(name, payload)
            yield Item(name, payload, None, label)


class LmdbSource(Source):
    """An LSUN category's lmdb folder (bedroom_train_lmdb: data.mdb, lock.mdb): one encoded
    image (WebP) per key, read in key order; named by the key."""
    kind = 'lmdb'

    def __init__(self, path, labels='auto'):
        super().__init__(path)
        if labels not in ('auto', 'none'):
            raise UserError(f'--labels {labels}: an lmdb folder carries no labels; use --labels none')
        try:
            import lmdb
        except ImportError:
            raise UserError(f'Reading the lmdb folder {path} needs the lmdb package: '
                            'pip install lmdb') from None
        try:
            self.env = lmdb.open(path, readonly=True, lock=False, readahead=False,
                                 max_readers=1, subdir=True)
            self.count = self.env.stat()['entries']
        except lmdb.Error as err:
            raise UserError(f'{path} is not a readable lmdb folder ({err})') from None
        if not self.count:
            raise UserError(f'The lmdb folder {path} holds no images')
        self.label_kind = 'none'

    def items(self):
        self._restart_checksum()
        with self.env.begin(write=False) as transaction:
            for key, value in transaction.cursor():
                name = key.decode('ascii', 'backslashreplace')
                self._counted(name, value)
                yield Item(name, bytes(value), None, None)


# ---------------------------------------------------------------- CIFAR-10

def _numpy_reconstruct():
    """numpy's array unpickling function, wherever this numpy keeps it (numpy._core from 2.0)."""
    core = getattr(np, '_core', None)
    return (core if core is not None else np.core).multiarray._reconstruct


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch: a dict of byte strings, lists and numpy arrays, written by
    Python 2. Any other global is refused before anything is run."""

    def __init__(self, file, where):
        super().__init__(file, encoding='bytes')
        self.where = where

    def find_class(self, module, name):
        if (module, name) in (('numpy.core.multiarray', '_reconstruct'),
                              ('numpy._core.multiarray', '_reconstruct')):
            return _numpy_reconstruct()
        if (module, name) == ('numpy', 'ndarray'):
            return np.ndarray
        if (module, name) == ('numpy', 'dtype'):
            return np.dtype
        raise UserError(f'{self.where} is not a CIFAR-10 batch: its pickle names {module}.{name}, '
                        'which none does; refused without running it')


def _unpickle(file, where):
    try:
        batch = _CifarUnpickler(file, where).load()
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged pickle raises many types
        raise UserError(f'{where} is not a readable CIFAR-10 batch ({type(err).__name__}: '
                        f'{err})') from None
    if not isinstance(batch, dict):
        raise UserError(f'{where} is not a CIFAR-10 batch (it holds a {type(batch).__name__})')
    return {key.decode('latin-1') if isinstance(key, bytes) else key: value
            for key, value in batch.items()}


class Cifar10Source(Source):
    """CIFAR-10's python version: cifar-10-python.tar.gz (read inside the archive) or its
    extracted cifar-10-batches-py folder; the train split (data_batch_1 to 5, 50,000 images) or
    the test split (test_batch, 10,000), labels and class names included."""
    kind = 'cifar10'

    def __init__(self, path, split='train', labels='auto'):
        super().__init__(path)
        if split not in CIFAR10_SPLITS:
            raise UserError(f'--split {split!r} is not a CIFAR-10 split: use train or test')
        if labels not in ('auto', 'none'):
            raise UserError(f'--labels {labels}: CIFAR-10 brings its own labels; leave --labels '
                            'out (or none to drop them)')
        self.split = split
        names = CIFAR10_SPLITS[split] + ['batches.meta']
        if os.path.isdir(path):
            batches = {}
            for name in names:
                file_path = os.path.join(path, name)
                if not os.path.isfile(file_path):
                    raise UserError(f'{path} is not CIFAR-10\'s python folder: it has no {name}')
                with open(file_path, 'rb') as f:
                    batches[name] = _unpickle(f, file_path)
                self._counted(name, bytes.fromhex(file_sha256(file_path)))
        else:
            batches = self._read_archive(path, names)
            self._digest = hashlib.sha256(bytes.fromhex(file_sha256(path)))
        meta = batches.pop('batches.meta')
        images, classes = [], []
        for name in CIFAR10_SPLITS[split]:
            batch = batches[name]
            try:
                pixels = np.asarray(batch['data'], np.uint8)
                # Rows of 3,072 bytes: the red plane (32 rows of 32), then green, then blue.
                images.append(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                classes.extend(int(label) for label in batch['labels'])
            except (KeyError, ValueError, TypeError) as err:
                raise UserError(f'{name} of {path} is not a CIFAR-10 batch ({err})') from None
        self.images = np.concatenate(images)
        self.count = len(self.images)
        if len(classes) != self.count:
            raise UserError(f'{path} has {len(classes)} labels for {self.count} images')
        names = [name.decode() if isinstance(name, bytes) else str(name)
                 for name in meta.get('label_names', [])]
        if labels == 'none' or not names:
            self.labels, self.label_kind = [None] * self.count, 'none'
        else:
            self.labels, self.class_names, self.label_kind = classes, names, 'cifar10'

    @staticmethod
    def _read_archive(path, names):
        try:
            with tarfile.open(path, 'r:*') as archive:
                batches = {}
                for name in names:
                    try:
                        member = archive.extractfile(f'{CIFAR10_FOLDER}/{name}')
                    except KeyError:
                        member = None
                    if member is None:
                        raise UserError(f'{path} is not cifar-10-python.tar.gz: it has no '
                                        f'{CIFAR10_FOLDER}/{name}')
                    batches[name] = _unpickle(member, f'{path}:{CIFAR10_FOLDER}/{name}')
                return batches
        except (OSError, tarfile.TarError, EOFError) as err:
            raise UserError(f'{path} is not a readable tar.gz archive ({err})') from None

    def items(self):
        for index, (pixels, label) in enumerate(zip(self.images, self.labels)):
            yield Item(f'{self.split}/{index:05d}', None, pixels, label)


# ---------------------------------------------------------------- which source a path is

def source_kind(path):
    """'cifar10', 'lmdb', 'zip' or 'folder' for an existing path; UserError otherwise."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, 'data_batch_1')):
            return 'cifar10'
        if os.path.isfile(os.path.join(path, 'data.mdb')):
            return 'lmdb'
        return 'folder'
    if os.path.isfile(path):
        lowered = path.lower()
        if lowered.endswith(('.tar.gz', '.tgz', '.tar')):
            return 'cifar10'
        if lowered.endswith('.zip'):
            return 'zip'
        raise UserError(f'--source {path} is a file prepare.py does not read: give an image '
                        'folder, a .zip, cifar-10-python.tar.gz or an lmdb folder')
    raise UserError(f'--source {path} does not exist')


def open_source(path, split='train', labels='auto'):
    """The Source at `path` (see source_kind), with labels as `labels` says: auto (CIFAR-10's,
    or the source's dataset.json where it has labels, else none), none, folders or json."""
    if labels not in LABEL_KINDS:
        raise UserError(f'--labels {labels!r} is not allowed: use one of {", ".join(LABEL_KINDS)}')
    kind = source_kind(path)
    if kind != 'cifar10' and split != 'train':
        raise UserError(f'--split {split} applies to CIFAR-10 only; {path} is a {kind}')
    if kind == 'cifar10':
        return Cifar10Source(path, split, labels)
    if kind == 'lmdb':
        return LmdbSource(path, labels)
    if kind == 'zip':
        return ZipSource(path, labels)
    return FolderSource(path, labels)


def decode(item):
    """An item's pixels: (H, W, 3) uint8 RGB (data.pil_to_rgb_uint8); raises when they do not
    decode."""
    if item.pixels is not None:
        return item.pixels
    from PIL import Image
    with Image.open(io.BytesIO(item.data)) as image:
        return data.pil_to_rgb_uint8(image)
