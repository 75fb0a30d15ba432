"""sources.py: CIFAR-10's Python 2 pickles (read safely), zips, LSUN's lmdb, folders, labels."""
import io
import json
import os
import pickle
import sys
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sources  # noqa: E402
from cifar10_archive import (CLASS_NAMES, python2_pickle,  # noqa: E402
                             write_cifar10_archive)
from config import UserError  # noqa: E402
from conftest import write_webp_lmdb  # noqa: E402


@pytest.fixture(scope='module')
def cifar10(tmp_path_factory):
    folder = tmp_path_factory.mktemp('cifar')
    path = str(folder / 'cifar-10-python.tar.gz')
    return path, write_cifar10_archive(path)


def _pixels(source):
    return np.stack([sources.decode(item) for item in source.items()])


@pytest.mark.parametrize('split', ['train', 'test'])
def test_cifar10_archive_and_folder_give_the_known_pixels_and_labels(cifar10, tmp_path, split):
    path, known = cifar10
    images, labels = known[split]
    source = sources.open_source(path, split)
    assert (source.kind, source.count, source.class_names) == ('cifar10', len(images), CLASS_NAMES)
    # Planar rows (R, G, B planes) back to HWC: each channel keeps its own range, [0, 0] its
    # own colour; a wrong transpose mixes them.
    np.testing.assert_array_equal(_pixels(source), images)
    assert [item.label for item in source.items()] == labels
    extracted = tmp_path / 'extracted'
    with tarfile.open(path) as archive:
        archive.extractall(extracted, filter='data')
    folder = sources.open_source(str(extracted / sources.CIFAR10_FOLDER), split)
    np.testing.assert_array_equal(_pixels(folder), images)
    assert [item.label for item in folder.items()] == labels
    assert sources.open_source(path, split, labels='none').class_names is None


def test_the_test_archive_is_pickled_as_the_real_one(cifar10, tmp_path):
    """Python 3's default encoding fails on these batches as on the real ones; Keras's reader,
    which the real archive is usually read with, agrees with ours."""
    import cli
    cli.import_tensorflow_quietly()
    from keras.src.datasets.cifar import load_batch
    path, known = cifar10
    with tarfile.open(path) as archive:
        raw = archive.extractfile('cifar-10-batches-py/data_batch_2').read()
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(raw)
    (tmp_path / 'data_batch_2').write_bytes(raw)
    pixels, labels = load_batch(str(tmp_path / 'data_batch_2'))
    np.testing.assert_array_equal(pixels.transpose(0, 2, 3, 1), known['train'][0][12:24])
    assert list(labels) == known['train'][1][12:24]


def test_a_pickle_naming_another_global_is_refused_without_running_it(tmp_path):
    marker = tmp_path / 'ran'
    payload = (b'\x80\x02cposix\nsystem\n' + b'U' + bytes([len(f'touch {marker}')])
               + f'touch {marker}'.encode() + b'\x85R.')
    folder = tmp_path / sources.CIFAR10_FOLDER
    folder.mkdir()
    for name in sources.CIFAR10_SPLITS['train'] + ['batches.meta']:
        (folder / name).write_bytes(payload)
    with pytest.raises(UserError, match=r'its pickle names posix.system, which none does; '
                                        'refused without running it'):
        sources.open_source(str(folder))
    assert not marker.exists()
    (folder / 'data_batch_1').write_bytes(python2_pickle({'data': 'x'})[:-5])
    with pytest.raises(UserError, match='is not a readable CIFAR-10 batch'):
        sources.open_source(str(folder))


def _png_bytes(colour, size=(6, 5)):
    buffer = io.BytesIO()
    Image.new('RGB', size, colour).save(buffer, 'PNG')
    return buffer.getvalue()


def test_folders_labels_from_class_folders_or_dataset_json_never_shard_folders(tmp_path):
    root = tmp_path / 'classes'
    for name, colour in (('dog/b.png', 1), ('cat/00000/a.png', 2), ('cat/c.png', 3)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_png_bytes((colour, 0, 0)))
    source = sources.open_source(str(root), labels='folders')
    assert source.class_names == ['cat', 'dog']
    assert [(item.name, item.label) for item in source.items()] == [
        ('cat/00000/a.png', 0), ('cat/c.png', 0), ('dog/b.png', 1)]
    assert sources.open_source(str(root)).class_names is None  # auto: no dataset.json, none
    # A prepared set's layout: its five-digit folders are shards, its labels in dataset.json.
    layout = tmp_path / 'layout'
    (layout / '00000').mkdir(parents=True)
    for index in range(3):
        (layout / '00000' / f'img{index:08d}.png').write_bytes(_png_bytes((index, 0, 0)))
    with pytest.raises(UserError, match="'00000/img00000000.png' is in none .*shard folders"):
        sources.open_source(str(layout), labels='folders')
    labels = [[f'00000/img{index:08d}.png', 2 - index] for index in range(3)]
    (layout / 'dataset.json').write_text(json.dumps({'labels': labels, 'class_names': list('xyz')}))
    source = sources.open_source(str(layout))  # auto: the labels of its dataset.json
    assert [item.label for item in source.items()] == [2, 1, 0] and source.class_names == list('xyz')
    labels[1][1] = -1
    (layout / 'dataset.json').write_text(json.dumps({'labels': labels}))
    with pytest.raises(UserError, match="'00000/img00000001.png' has the label -1, not a class"):
        sources.open_source(str(layout))
    labels[1][1] = 0
    (layout / 'dataset.json').write_text(json.dumps({'labels': labels, 'class_names': ['x', 'y']}))
    with pytest.raises(UserError, match=r"'00000/img00000000.png' has the label 2 .* names 2 "
                                        r"classes \(0 to 1\)"):
        sources.open_source(str(layout))
    (layout / 'dataset.json').write_text(json.dumps({'labels': labels[:2]}))
    with pytest.raises(UserError, match="'00000/img00000002.png' has no label"):
        sources.open_source(str(layout))


def test_a_zip_is_read_in_name_order_with_its_dataset_json(tmp_path):
    path = tmp_path / 'images.zip'
    with zipfile.ZipFile(path, 'w') as archive:
        for name, red in (('b/2.png', 2), ('a/1.png', 1), ('notes.txt', 0)):
            archive.writestr(name, _png_bytes((red, 0, 0)) if name.endswith('png') else 'x')
        archive.writestr('dataset.json', json.dumps({'labels': [['a/1.png', 0], ['b/2.png', 1]]}))
    source = sources.open_source(str(path))
    assert source.kind == 'zip' and source.count == 2 and source.class_names == ['0', '1']
    items = list(source.items())
    assert [(item.name, item.label) for item in items] == [('a/1.png', 0), ('b/2.png', 1)]
    assert [sources.decode(item)[0, 0, 0] for item in items] == [1, 2]
    assert len(source.checksum()) == 64
    (tmp_path / 'broken.zip').write_bytes(b'PK not really')
    with pytest.raises(UserError, match='is not a readable zip file'):
        sources.open_source(str(tmp_path / 'broken.zip'))


def test_an_lmdb_of_webp_images_is_read_in_key_order(tmp_path):
    folder = write_webp_lmdb(tmp_path / 'bedroom_train_lmdb', 5)
    source = sources.open_source(folder)
    assert source.kind == 'lmdb' and source.count == 5
    items = list(source.items())
    assert [item.name for item in items] == sorted(item.name for item in items)
    widths = [sources.decode(item).shape[1] for item in items]
    assert sorted(widths) == [40, 41, 42, 43, 44]
    with pytest.raises(UserError, match='an lmdb folder carries no labels'):
        sources.open_source(folder, labels='folders')


def test_bad_sources_are_one_sentence(tmp_path):
    with pytest.raises(UserError, match='does not exist'):
        sources.open_source(str(tmp_path / 'missing'))
    (tmp_path / 'notes.txt').write_text('x')
    with pytest.raises(UserError, match='is a file prepare.py does not read'):
        sources.open_source(str(tmp_path / 'notes.txt'))
    (tmp_path / 'fake.tar.gz').write_bytes(b'not gzip')
    with pytest.raises(UserError, match='is not a readable tar.gz archive'):
        sources.open_source(str(tmp_path / 'fake.tar.gz'))
    with pytest.raises(UserError, match='--split test applies to CIFAR-10 only'):
        sources.open_source(str(tmp_path), split='test')
