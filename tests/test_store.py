"""store.py: the pixel store's chunks, its checks, prepared sets, and the image cache."""
import json
import os
import sys
import time

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import data  # noqa: E402
import store  # noqa: E402
from config import UserError  # noqa: E402


def test_chunks_hold_about_a_mebibyte_and_small_sets_still_have_64():
    assert store.chunk_length(3_000_000, 128) == 21  # 21 * 49,152 bytes: just under 1 MiB
    assert store.chunk_length(50_000, 32) == 341
    assert store.chunk_length(4_495, 32) == 71  # the demo set: 64 chunks, one per worker
    assert store.chunk_length(24, 32) == 1
    assert store.chunk_length(10, 256) == 1  # an image larger than a chunk is a chunk


def _write(folder, count, size=8, labels=False):
    writer = store.StoreWriter(folder, size, count, with_labels=labels)
    images = np.random.default_rng(count).integers(0, 256, (count, size, size, 3), np.uint8)
    for index, image in enumerate(images):
        writer.add(image, index % 3 if labels else None)
    return writer.close(), images


def test_a_store_reads_back_what_was_written_across_its_chunks(tmp_path):
    meta, images = _write(str(tmp_path / 's'), 200, labels=True)
    assert (meta['chunk_images'], meta['chunks']) == (4, 50)
    pixels = store.open_store(str(tmp_path / 's'))
    assert pixels.count == 200 and pixels.chunk_sizes == [4] * 50 and pixels.nbytes == 200 * 192
    np.testing.assert_array_equal(pixels.read(), images)
    np.testing.assert_array_equal(pixels.read(3, 13), images[3:13])  # across chunk ends
    np.testing.assert_array_equal(pixels.labels, np.arange(200) % 3)
    # Fewer images than expected (files that did not decode): the last chunk is short.
    writer = store.StoreWriter(str(tmp_path / 'short'), 8, 200)
    for image in images[:10]:
        writer.add(image)
    writer.close()
    assert store.open_store(str(tmp_path / 'short')).chunk_sizes == [4, 4, 2]


@pytest.mark.parametrize('damage, message', [
    ('truncate', r'chunk-000003.u8 holds 100 bytes, not 192'),
    ('delete', r'chunk-000003.u8 is missing'),
    ('description', r'does not describe a pixel store'),
])
def test_a_damaged_store_is_one_sentence(tmp_path, damage, message):
    folder = str(tmp_path / 's')
    _write(folder, 40)
    chunk = os.path.join(folder, store.chunk_name(3))
    if damage == 'truncate':
        os.truncate(chunk, 100)
    elif damage == 'delete':
        os.remove(chunk)
    else:
        with open(os.path.join(folder, store.META), 'w') as f:
            f.write('{"format": "something else"}')
    with pytest.raises(UserError, match=message):
        store.open_store(folder)


def _images(folder, count, size=20):
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        Image.new('RGB', (size + 5, size), (index * 9, 40, 90)).save(
            os.path.join(folder, f'{index:02d}.png'))
    return data.list_image_files(folder)


def test_the_image_cache_decodes_once_per_file_list_size_and_crop(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('LADAGAN_CACHE_DIR', str(tmp_path / 'cache'))
    files = _images(str(tmp_path / 'pics'), 12)
    first = store.cached_store(files, 16)
    assert first.folder.startswith(str(tmp_path / 'cache' / 'image-cache' / 'pics-16px-'))
    np.testing.assert_array_equal(first.read(), data.load_image_array(files, 16,
                                                                      show_progress=False))
    assert 'Decoding images at 16px into the image cache' in capsys.readouterr().err
    written = os.path.getmtime(os.path.join(first.folder, store.META))
    again = store.cached_store(files, 16)
    assert again.folder == first.folder and 'Decoding' not in capsys.readouterr().err
    assert os.path.getmtime(os.path.join(first.folder, store.META)) == written
    # Another size, a crop, a changed file: another cache, decoded anew.
    others = {store.cached_store(files, 8).folder, store.cached_store(files, 16, True).folder}
    os.utime(files[0], ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    others.add(store.cached_store(files, 16).folder)
    assert len(others | {first.folder}) == 4
    assert store.cached_store(files, 16, True).folder.split('/')[-1].startswith('pics-16px-crop-')


def test_a_damaged_cache_is_rebuilt_and_a_full_disk_is_refused_first(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.setenv('LADAGAN_CACHE_DIR', str(tmp_path / 'cache'))
    files = _images(str(tmp_path / 'pics'), 12)
    folder = store.cached_store(files, 16).folder
    os.remove(os.path.join(folder, store.chunk_name(0)))
    np.testing.assert_array_equal(store.cached_store(files, 16).read(),
                                  data.load_image_array(files, 16, show_progress=False))
    assert 'notice: rebuilding the image cache' in capsys.readouterr().out
    # An image size whose cache cannot fit on this disk: refused before anything is written.
    free = store.free_bytes(str(tmp_path))
    side = int(np.sqrt(free / len(files) / 3)) + 64
    with pytest.raises(UserError, match='The image cache needs .* more than the disk has free'):
        store.cached_store(files, side)
    assert len(os.listdir(os.path.join(tmp_path, 'cache', 'image-cache'))) == 1


def test_prepared_sets_are_recognised_and_checked(tmp_path):
    prepared = str(tmp_path / 'set')
    _write(os.path.join(prepared, store.PREPARED_PIXELS), 10)
    assert not store.is_prepared(prepared)
    with open(os.path.join(prepared, store.PREPARED_META), 'w') as f:
        json.dump({'img_size': 8, 'transform': 'center-crop', 'stats': None}, f)
    assert store.is_prepared(prepared) and store.prepared_statistics(prepared) is None
    assert store.prepared_store(prepared, 8, center_crop=True).count == 10
    with pytest.raises(UserError, match='prepared at 8 px but the run trains at img_size 16'):
        store.prepared_store(prepared, 16, False)
    with open(os.path.join(prepared, store.PREPARED_META), 'w') as f:
        f.write('{"img_size": ')
    with pytest.raises(UserError, match='prepare.json is not a readable description'):
        store.prepared_store(prepared, 8, False)
