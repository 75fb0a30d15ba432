"""prepare.py: crops and filters against Pillow's, the prepared folder, its refusals, and that
an interrupted or failed prepare leaves nothing behind."""
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import data  # noqa: E402
import prepare  # noqa: E402
import store  # noqa: E402
from conftest import write_webp_lmdb  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def grace_hopper():
    """matplotlib's sample photograph (a real 512x600 JPEG), decoded."""
    import matplotlib.cbook
    with matplotlib.cbook.get_sample_data('grace_hopper.jpg') as f:
        return np.asarray(Image.open(f).convert('RGB'))


def _pillow_float_box(pixels, size):
    channels = [np.asarray(Image.fromarray(pixels[..., c].astype(np.float32), 'F').resize(
        (size, size), Image.BOX)) for c in range(3)]
    return np.clip(np.rint(np.stack(channels, -1)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize('transform', ['squash', 'center-crop', 'celeba-ddim'])
def test_each_crop_and_filter_is_pillows(grace_hopper, transform):
    import tensorflow as tf
    photo = grace_hopper
    if transform == 'celeba-ddim':  # a CelebA-shaped image: 178 wide, 218 high
        photo = np.asarray(Image.fromarray(photo).resize((178, 218), Image.LANCZOS))
    image = Image.fromarray(photo)
    height, width = photo.shape[:2]
    side = min(height, width)
    boxes = {'squash': (0, 0, width, height),
             'center-crop': ((width - side) // 2, (height - side) // 2,
                             (width - side) // 2 + side, (height - side) // 2 + side),
             'celeba-ddim': (25, 57, 153, 185)}  # DDIM's face box: x 25-152, y 57-184
    cropped = np.asarray(image.crop(boxes[transform]))
    for size in (32, 64):
        lanczos = prepare.transform_image(photo, size, transform, 'lanczos')
        np.testing.assert_array_equal(lanczos, np.asarray(Image.fromarray(cropped).resize(
            (size, size), Image.LANCZOS)))
        box = prepare.transform_image(photo, size, transform, 'box')
        np.testing.assert_array_equal(box, _pillow_float_box(cropped, size))
        eight_bit = np.asarray(Image.fromarray(cropped).resize((size, size), Image.BOX))
        assert np.abs(box.astype(int) - eight_bit).max() <= 1  # Pillow rounds twice in 8 bits
        bilinear = prepare.transform_image(photo, size, transform, 'bilinear')
        official = tf.image.resize(tf.constant(cropped, tf.float32), [size, size]).numpy()
        assert np.abs(bilinear - official).max() <= 0.5 + 1e-3  # the authors', rounded once


def test_center_crop_dhariwal_is_adms(grace_hopper):
    image = Image.fromarray(grace_hopper)  # 512x600: halved while the short side is >= 128
    for size in ((256, 300), (128, 150), (64, 75)):
        image = image.resize(size, Image.BOX)
    scaled = np.asarray(image.resize((64, 75), Image.BICUBIC))  # short side 64 already
    np.testing.assert_array_equal(prepare.center_crop_dhariwal(grace_hopper, 64), scaled[5:69])
    assert prepare.transform_image(grace_hopper, 64, 'center-crop-dhariwal', None).shape == (
        64, 64, 3)


def test_a_1024_png_box_reduced_to_128_is_each_8x8_blocks_mean(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / 'big.png')
    decoded = data.decode_image(str(tmp_path / 'big.png'))
    means = pixels.reshape(128, 8, 128, 8, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(prepare.resize(decoded, 128, 'box'),
                                  np.rint(means).astype(np.uint8))


def test_the_authors_bilinear_halving_each_side_is_each_2x2_blocks_mean():
    """Why squashing LSUN's 256 px side to 128 loses nothing to aliasing there: at exactly half,
    tf.image.resize's bilinear (half-pixel centres) averages each 2x2 block."""
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)
    means = pixels.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(prepare.resize(pixels, 32, 'bilinear'),
                                  np.rint(means).astype(np.uint8))


def _class_folder(root, count=30, size=(40, 30)):
    for index in range(count):
        folder = os.path.join(root, ('cats', 'dogs')[index % 2])
        os.makedirs(folder, exist_ok=True)
        Image.new('RGB', size, (index * 8, 100, 50)).save(os.path.join(folder, f'{index:03d}.png'))
    return root


def _tree(folder):
    """{relative path: bytes} of every file under `folder`."""
    found = {}
    for directory, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, 'rb') as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def test_a_prepared_folder_is_nvidias_layout_with_labels_pixels_and_a_record(tmp_path, capsys):
    source = _class_folder(str(tmp_path / 'pets'), count=1003)
    dest = str(tmp_path / 'prepared')
    assert prepare.main(['--source', source, '--dest', dest, '--img_size', '32', '--transform',
                         'center-crop', '--filter', 'box', '--labels', 'folders']) == 0
    out = capsys.readouterr().out
    assert 'Prepared 1,003 images into' in out and 'with 2 classes' in out
    assert 'at most 0.01 GB on disk' in out  # the space it takes, said before it starts
    layout = sorted(name for name in _tree(dest) if name.endswith('.png'))
    assert layout[0] == '00000/img00000000.png' and layout[-1] == '00001/img00001002.png'
    # FID and the memorisation check list a prepared set from its count, without a walk.
    assert store.image_files(dest) == data.list_image_files(dest) == [
        os.path.join(dest, name) for name in layout]
    with open(os.path.join(dest, 'dataset.json')) as f:
        labels = json.load(f)
    assert labels['class_names'] == ['cats', 'dogs']
    # Name order: cats' 502 images (even indices), then dogs'.
    assert labels['labels'][0] == ['00000/img00000000.png', 0] and labels['labels'][-1][1] == 1
    assert sum(label for _, label in labels['labels']) == 501
    meta = store.read_prepared(dest)
    assert (meta['img_size'], meta['transform'], meta['filter'], meta['count']) == (
        32, 'center-crop', 'box', 1003)
    assert meta['source']['kind'] == 'folder' and len(meta['source']['sha256']) == 64
    assert meta['labels']['kind'] == 'folders' and meta['stats'] is None
    # The pixels training reads are the PNGs' pixels, with their labels.
    pixels = store.prepared_store(dest, 32, center_crop=True)
    for index in (0, 1002):
        np.testing.assert_array_equal(pixels.read(index, index + 1)[0], np.asarray(
            Image.open(os.path.join(dest, layout[index]))))
    np.testing.assert_array_equal(pixels.labels, [label for _, label in labels['labels']])
    # The same command again: the same bytes, file for file.
    again = str(tmp_path / 'again')
    assert prepare.main(['--source', source, '--dest', again, '--img_size', '32', '--transform',
                         'center-crop', '--filter', 'box', '--labels', 'folders']) == 0
    assert _tree(again) == _tree(dest)


def test_an_lmdb_and_a_zip_prepare_too(tmp_path):
    lmdb_folder = write_webp_lmdb(tmp_path / 'bedroom_train_lmdb', 6)
    dest = str(tmp_path / 'bedrooms')
    assert prepare.main(['--source', lmdb_folder, '--dest', dest, '--img_size', '32']) == 0
    meta = store.read_prepared(dest)
    assert (meta['source']['kind'], meta['count'], meta['labels']) == ('lmdb', 6, None)
    with open(os.path.join(dest, 'dataset.json')) as f:
        assert json.load(f) == {'labels': None}
    folder = _class_folder(str(tmp_path / 'pets'), count=6)
    with zipfile.ZipFile(tmp_path / 'pets.zip', 'w') as archive:
        for name in sorted(data.list_image_files(folder)):
            archive.write(name, os.path.relpath(name, folder))
    for source, name in ((folder, 'from_folder'), (str(tmp_path / 'pets.zip'), 'from_zip')):
        assert prepare.main(['--source', source, '--dest', str(tmp_path / name), '--img_size',
                             '32', '--labels', 'folders']) == 0
    # A zip of a folder prepares to the same images and labels as the folder.
    assert {path: content for path, content in _tree(str(tmp_path / 'from_zip')).items()
            if path != 'prepare.json'} == {path: content for path, content in _tree(
                str(tmp_path / 'from_folder')).items() if path != 'prepare.json'}


def _refused(capsys, args, message):
    assert prepare.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], err


def test_bad_input_is_one_sentence_exit_2_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    source = _class_folder(str(tmp_path / 'pets'), count=4)
    dest = tmp_path / 'out'
    dest.mkdir()
    (dest / 'keep.txt').write_text('mine')
    _refused(capsys, ['--source', source, '--dest', str(dest), '--img_size', '32'],
             'is not empty: give a new or empty folder')
    assert os.listdir(dest) == ['keep.txt']
    new = str(tmp_path / 'new')
    _refused(capsys, ['--source', str(tmp_path / 'nowhere'), '--dest', new, '--img_size', '32'],
             'does not exist')
    _refused(capsys, ['--source', source, '--dest', new, '--img_size', '48'],
             '--img_size 48 is not allowed')
    _refused(capsys, ['--source', source, '--dest', new, '--img_size', '32', '--transform',
                      'center-crop-dhariwal', '--filter', 'box'], '--filter does not apply')
    _refused(capsys, ['--dataset', 'celeba_64', '--dest', new],
             "--source is needed: CelebA's img_align_celeba folder")
    # celeba-ddim on images that are not CelebA's: nothing can be prepared, nothing is left.
    _refused(capsys, ['--source', source, '--dest', new, '--img_size', '32', '--transform',
                      'celeba-ddim'], 'celeba-ddim crops the 178x218 images of img_align_celeba')
    # No network: the archive cannot come, and the sentence says where to put it.
    monkeypatch.setenv('LADAGAN_CACHE_DIR', str(tmp_path / 'cache'))
    for variable in ('https_proxy', 'HTTPS_PROXY', 'http_proxy', 'HTTP_PROXY'):
        monkeypatch.setenv(variable, 'http://127.0.0.1:9')
    _refused(capsys, ['--dataset', 'cifar10', '--dest', new],
             f'cifar-10-python.tar.gz could not be downloaded from {prepare.CIFAR10_URL}')
    assert sorted(os.listdir(tmp_path)) == ['out', 'pets']  # no partial folder, no download


def test_a_disk_too_small_is_refused_before_anything_is_written(tmp_path, capsys):
    """An LSUN-sized lmdb (as many entries as fill this disk at 256 px, one shared tiny image)."""
    import lmdb
    count = store.free_bytes(str(tmp_path)) // prepare._estimate_bytes(1, 256) + 1000
    env = lmdb.open(str(tmp_path / 'huge_lmdb'), map_size=max(1 << 26, count * 256))
    buffer = io.BytesIO()
    Image.new('RGB', (4, 4), (90, 60, 30)).save(buffer, 'WEBP', lossless=True)
    value = buffer.getvalue()
    with env.begin(write=True) as transaction:
        for index in range(count):
            transaction.put(index.to_bytes(8, 'big'), value)
    env.close()
    _refused(capsys, ['--source', str(tmp_path / 'huge_lmdb'), '--dest', str(tmp_path / 'out'),
                      '--img_size', '256'], 'but its disk has')
    assert sorted(os.listdir(tmp_path)) == ['huge_lmdb']


@pytest.mark.slow
def test_an_interrupted_prepare_leaves_nothing_and_a_killed_one_is_cleaned_up(tmp_path):
    source = str(tmp_path / 'big')
    os.makedirs(source)
    pixels = np.random.default_rng(0).integers(0, 256, (384, 384, 3), np.uint8)
    for index in range(150):
        Image.fromarray(np.roll(pixels, index, 0)).save(os.path.join(source, f'{index:03d}.png'))
    dest = str(tmp_path / 'prepared')
    command = [sys.executable, os.path.join(ROOT, 'prepare.py'), '--source', source, '--dest',
               dest, '--img_size', '32', '--filter', 'lanczos', '--workers', '1']

    def partial_folders():
        return [name for name in os.listdir(tmp_path) if name.startswith('.prepared.partial-')]

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, cwd=ROOT)
        deadline = time.time() + 60
        while not (partial_folders() and os.path.isdir(os.path.join(
                tmp_path, partial_folders()[0], '00000'))) and time.time() < deadline:
            time.sleep(0.05)
        process.send_signal(sig)
        _, err = process.communicate(timeout=60)
        assert not os.path.exists(dest)
        if sig == signal.SIGKILL:
            assert len(partial_folders()) == 1  # no chance to clean up: the next run does
        else:
            assert process.returncode == 130 and not partial_folders()
            assert err.strip().splitlines()[-1] == f'Interrupted: nothing was written to {dest}'
    finished = subprocess.run(command[:-2], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert 'notice: removed' in finished.stdout and not partial_folders()
    assert store.read_prepared(dest)['count'] == 150
