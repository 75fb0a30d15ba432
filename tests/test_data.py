"""Tests for the DATA and PLOTS sections of utils.py."""

import io
import os
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import utils  # noqa: E402
from utils import UserError  # noqa: E402

SIZE = 16


# ---------------------------------------------------------------- fixtures


def _save(image, path, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **kwargs)
    return path


@pytest.fixture(scope='module')
def odd_folder(tmp_path_factory):
    """A folder of awkward images; returns (folder, {name: expected RGB of the image's centre or None if bad})."""
    folder = str(tmp_path_factory.mktemp('odd'))
    expected = {}

    def add(name, image, colour, **kwargs):
        _save(image, os.path.join(folder, name), **kwargs)
        expected[name] = colour

    add('grey_L.png', Image.new('L', (40, 30), 100), (100, 100, 100))
    add('grey_alpha_LA.png', Image.new('LA', (20, 20), (0, 0)), (255, 255, 255))  # transparent -> white
    palette = Image.new('P', (20, 20), 1)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.info['transparency'] = 1  # index 1 (blue) is transparent
    add('palette_transparent_P.png', palette, (255, 255, 255))
    half_alpha = Image.new('RGBA', (20, 20), (255, 0, 0, 128))
    add('rgba_half.png', half_alpha, (255, 127, 127))
    add('grey16_I16.png', Image.fromarray(np.full((20, 20), 32896, np.uint16)), (128, 128, 128))
    add('cmyk.jpg', Image.new('CMYK', (24, 24), (0, 0, 0, 0)), (255, 255, 255), quality=95)
    add('non_square.bmp', Image.new('RGB', (50, 20), (10, 200, 30)), (10, 200, 30))
    add('photo.webp', Image.new('RGB', (30, 30), (0, 0, 250)), (0, 0, 250), lossless=True)
    add('sub/dir/nested.jpeg', Image.new('RGB', (64, 48), (200, 200, 0)), (200, 200, 0), quality=95)
    huge = Image.new('RGB', (4000, 3000), (0, 128, 255))  # JPEG draft path
    add('huge.jpg', huge, (0, 128, 255), quality=90)
    add('big.png', Image.new('RGB', (1300, 900), (250, 100, 0)), (250, 100, 0))  # Image.reduce path
    first_frame = Image.new('P', (20, 20), 0)
    first_frame.putpalette([0, 255, 0, 255, 0, 255] + [0] * 762)
    second_frame = Image.new('P', (20, 20), 1)
    second_frame.putpalette([0, 255, 0, 255, 0, 255] + [0] * 762)
    add('anim.gif', first_frame, (0, 255, 0), save_all=True, append_images=[second_frame])
    # Bad files: a truncated PNG and text named .png.
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buffer, 'PNG')
    with open(os.path.join(folder, 'truncated.png'), 'wb') as handle:
        handle.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    expected['truncated.png'] = None
    with open(os.path.join(folder, 'text.png'), 'w') as handle:
        handle.write('not an image')
    expected['text.png'] = None
    with open(os.path.join(folder, 'notes.txt'), 'w') as handle:
        handle.write('ignored: not an image extension')
    return folder, expected


def _id_folder(root, count, size=SIZE, bad=0):
    """count constant-colour images whose red value encodes their index (id = red // 8), plus `bad` text files."""
    os.makedirs(root, exist_ok=True)
    for index in range(count):
        Image.new('RGB', (size + 3, size), (index * 8, 50, 200)).save(os.path.join(root, f'{index:03d}.png'))
    for index in range(bad):
        with open(os.path.join(root, f'bad{index}.png'), 'w') as handle:
            handle.write('x')
    return root


def _batch_ids(batch):
    """float batch (B, S, S, 3) in [-1, 1] -> image ids from the red channel."""
    red = (batch.numpy()[:, SIZE // 2, SIZE // 2, 0] + 1.0) * 127.5
    return [int(round(value / 8)) for value in red]


# ---------------------------------------------------------------- listing


def test_list_image_files_folder_glob_and_errors(odd_folder, tmp_path):
    folder, expected = odd_folder
    files = utils.list_image_files(folder)
    assert files == sorted(files)
    assert sorted(os.path.relpath(f, folder) for f in files) == sorted(expected)  # recursive, no .txt
    assert utils.list_image_files(os.path.join(folder, '*.png')) == sorted(
        os.path.join(folder, name) for name in expected if name.endswith('.png') and '/' not in name)
    assert utils.list_image_files(os.path.join(folder, '**', '*.jpeg')) == [
        os.path.join(folder, 'sub', 'dir', 'nested.jpeg')]
    missing = str(tmp_path / 'missing')
    with pytest.raises(UserError, match='missing'):
        utils.list_image_files(missing)
    with pytest.raises(UserError, match='matches no files'):
        utils.list_image_files(missing + '/*.png')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(UserError, match='No images found'):
        utils.list_image_files(str(tmp_path / 'empty'))


def test_dataset_fingerprint_tracks_changes(tmp_path):
    root = _id_folder(str(tmp_path / 'ids'), 3)
    files = utils.list_image_files(root)
    first = utils.dataset_fingerprint(files)
    assert first == utils.dataset_fingerprint(list(reversed(files)))  # order-independent
    os.utime(files[0], ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    assert utils.dataset_fingerprint(files) != first
    assert utils.dataset_fingerprint(files[:2]) != utils.dataset_fingerprint(files)


# ---------------------------------------------------------------- decoding


def test_odd_images_decode_to_rgb_and_bad_ones_are_skipped(odd_folder):
    folder, expected = odd_folder
    files = utils.list_image_files(folder)
    with pytest.warns(utils.SkippedImagesWarning, match='Skipped 2 of 14'):
        images = utils.load_image_array(files, SIZE, show_progress=False)
    good = [f for f in files if expected[os.path.relpath(f, folder)] is not None]
    assert images.shape == (len(good), SIZE, SIZE, 3) and images.dtype == np.uint8
    for path, image in zip(good, images):  # file order is kept
        colour = expected[os.path.relpath(path, folder)]
        np.testing.assert_allclose(image[SIZE // 2, SIZE // 2], colour, atol=3, err_msg=path)


def test_only_corrupt_files_raise(tmp_path):
    root = _id_folder(str(tmp_path / 'bad'), 0, bad=3)
    with pytest.raises(UserError, match='None of the 3 image files could be decoded'):
        utils.load_image_array(utils.list_image_files(root), SIZE, show_progress=False)
    with pytest.raises(UserError):
        utils.make_train_dataset(root, SIZE, 2)
    with pytest.raises(UserError):
        utils.make_train_dataset(root, SIZE, 2, cache_limit_bytes=0)  # streaming checks a sample


def test_bilinear_resize_matches_tf_image_resize(tmp_path):
    rng = np.random.default_rng(1)
    for shape, size in (((37, 53, 3), 16), ((10, 12, 3), 32), ((64, 64, 3), 64)):
        pixels = rng.integers(0, 256, shape, np.uint8)
        reference = tf.image.resize(tf.constant(pixels, tf.float32), [size, size], 'bilinear').numpy()
        np.testing.assert_allclose(utils.resize_bilinear(pixels, size), reference, atol=1e-3)
        path = str(tmp_path / f'{shape[0]}.png')
        Image.fromarray(pixels).save(path)
        decoded = utils.decode_image(path, size).astype(np.float32)
        # Only the final rounding to uint8 differs: at most half a level.
        assert np.abs(decoded - reference).max() <= 0.5 + 1e-3


def test_center_crop_keeps_the_middle_square(tmp_path):
    pixels = np.zeros((20, 60, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:40] = (0, 255, 0)
    pixels[:, 40:] = (0, 0, 255)
    path = str(tmp_path / 'wide.png')
    Image.fromarray(pixels).save(path)
    cropped = utils.decode_image(path, 8, center_crop=True)
    np.testing.assert_array_equal(cropped, np.broadcast_to([0, 255, 0], (8, 8, 3)))
    stretched = utils.decode_image(path, 8, center_crop=False)
    assert stretched[:, 0, 0].min() == 255 and stretched[:, -1, 2].min() == 255  # whole width kept


# ---------------------------------------------------------------- tf.data pipeline


@pytest.mark.filterwarnings('ignore:Skipped 1 of 11')  # the skip warning is tested above
@pytest.mark.parametrize('cache_limit_bytes', [None, 0], ids=['in_memory', 'streaming'])
def test_train_dataset_batches_shuffling_and_determinism(tmp_path, cache_limit_bytes):
    root = _id_folder(str(tmp_path / 'ids'), 10, bad=1)
    dataset, size = utils.make_train_dataset(root, SIZE, 4, seed=3, cache_limit_bytes=cache_limit_bytes,
                                             return_size=True)
    assert size == (10 if cache_limit_bytes is None else 11)  # streaming counts files before decoding
    batches = list(dataset.take(12))
    for batch in batches:
        assert batch.shape == (4, SIZE, SIZE, 3) and batch.dtype == tf.float32
        assert float(tf.reduce_min(batch)) >= -1.0 and float(tf.reduce_max(batch)) <= 1.0
    ids = [_batch_ids(batch) for batch in batches]
    # drop_remainder: 10 good images -> 2 batches (8 distinct images) per epoch.
    epochs = [ids[2 * epoch] + ids[2 * epoch + 1] for epoch in range(6)]
    for epoch in epochs:
        assert len(set(epoch)) == 8 and set(epoch) <= set(range(10))
    assert len({tuple(epoch) for epoch in epochs}) > 1  # reshuffled every epoch
    again = utils.make_train_dataset(root, SIZE, 4, seed=3, cache_limit_bytes=cache_limit_bytes)
    assert [_batch_ids(batch) for batch in again.take(12)] == ids  # same seed, same batches
    other = utils.make_train_dataset(root, SIZE, 4, seed=4, cache_limit_bytes=cache_limit_bytes)
    assert [_batch_ids(batch) for batch in other.take(12)] != ids


def test_sharding_splits_the_files(tmp_path):
    root = _id_folder(str(tmp_path / 'ids'), 9)
    seen = []
    for shard in range(3):
        dataset, size = utils.make_train_dataset(root, SIZE, 3, seed=0, num_shards=3, shard_index=shard,
                                                 return_size=True)
        assert size == 3
        seen.append(set(_batch_ids(next(iter(dataset)))))
    assert seen == [{0, 3, 6}, {1, 4, 7}, {2, 5, 8}]
    with pytest.raises(UserError, match='shard_index=3'):
        utils.make_train_dataset(root, SIZE, 3, num_shards=3, shard_index=3)


def test_too_few_images_and_bad_arguments_raise(tmp_path):
    root = _id_folder(str(tmp_path / 'ids'), 3)
    with pytest.raises(UserError, match='fewer than batch_size=4'):
        utils.make_train_dataset(root, SIZE, 4)
    with pytest.raises(UserError, match='fewer than batch_size=4'):
        utils.make_train_dataset(root, SIZE, 4, cache_limit_bytes=0)
    with pytest.raises(UserError, match='img_size=0'):
        utils.make_train_dataset(root, 0, 2)


# ---------------------------------------------------------------- OpenMoji demo dataset


def test_openmoji_renders_colour_emoji_and_caches(tmp_path, monkeypatch):
    folder = utils.openmoji_dataset(32, cache_dir=str(tmp_path), limit=40)
    files = utils.list_image_files(folder)
    assert len(files) == 40
    images = np.stack([np.asarray(Image.open(path)) for path in files])  # (40, 32, 32, 3)
    assert images.shape == (40, 32, 32, 3)
    assert all((image < 250).any() for image in images)  # non-blank
    assert len({image.tobytes() for image in images}) == 40  # all different
    saturation = images.max(-1).astype(int) - images.min(-1)  # (40, 32, 32)
    assert (saturation.max(axis=(1, 2)) > 100).mean() > 0.5  # mostly colourful
    corners = images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 255).all()  # white background, glyphs not touching the corners
    assert os.path.exists(os.path.join(folder, 'ATTRIBUTION.txt'))

    def must_not_render(*args, **kwargs):
        raise AssertionError('the cached folder should have been reused')

    monkeypatch.setattr(utils, '_render_openmoji_chunk', must_not_render)
    assert utils.openmoji_dataset(32, cache_dir=str(tmp_path), limit=40) == folder


def test_interrupted_openmoji_render_leaves_no_folder(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(utils, '_render_openmoji_chunk', interrupted)
    with pytest.raises(KeyboardInterrupt):
        utils.openmoji_dataset(32, cache_dir=str(tmp_path), limit=5, num_workers=1)
    assert os.listdir(tmp_path) == []  # neither the final nor the partial folder


# ---------------------------------------------------------------- plots


def test_to_uint8_matches_official_conversion():
    values = np.array([-2.0, -1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 3.0], np.float32)
    np.testing.assert_array_equal(utils.to_uint8(values), [0, 0, 0, 127, 191, 254, 255, 255])


def test_save_image_grid_writes_8x8_png(tmp_path):
    images = np.random.default_rng(0).uniform(-1, 1, (64, 16, 16, 3)).astype(np.float32)
    path = str(tmp_path / 'grid.png')
    grid = utils.save_image_grid(images, path)
    side = 8 * (16 + 2) + 2
    assert grid.shape == (side, side, 3)
    with Image.open(path) as saved:
        assert saved.size == (side, side)
        np.testing.assert_array_equal(np.asarray(saved), grid)
    np.testing.assert_array_equal(grid[2:18, 2:18], utils.to_uint8(images[0]))


def test_save_attention_maps_one_png_per_stage(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    maps = [rng.random((8, 4, tokens)).astype(np.float32) for tokens in (64, 256, 1024)]
    paths = utils.save_attention_maps(images, maps, str(tmp_path / 'attn'), heads=[4, 4, 4], plot_size=5.2)
    assert [os.path.basename(p) for p in paths] == [
        'attn_stage0_8x8.png', 'attn_stage1_16x16.png', 'attn_stage2_32x32.png']
    for path in paths:
        with Image.open(path) as saved:
            width, height = saved.size
            assert height >= 500 and width > height / 2  # readable panels for 8 rows x 6 columns
            assert np.asarray(saved).std() > 10  # not empty
    with pytest.raises(ValueError, match='not a square'):
        utils.save_attention_maps(images, [rng.random((8, 4, 60))], str(tmp_path / 'bad'))


def test_save_loss_curves_writes_png(tmp_path):
    steps = np.arange(1, 120) * 256
    history = {'d_loss': list(zip(steps, np.sin(steps))), 'g_loss': list(zip(steps, np.cos(steps))),
               'gp': list(zip(steps, np.full(len(steps), 1e-4))),
               'real_logits_mean': list(zip(steps, np.ones(len(steps)))),
               'fake_logits_mean': list(zip(steps, -np.ones(len(steps)))),
               'cr': list(zip(steps, np.zeros(len(steps)))),  # all zero: no panel
               'fid': [(10000, 80.0), (20000, float('nan')), (30000, 60.0)]}
    path = str(tmp_path / 'loss.png')
    assert utils.save_loss_curves(history, path) == path
    with Image.open(path) as saved:
        assert saved.size == (1200, 600)  # 4 panels: 2 columns x 2 rows of 6x3 inches at 100 dpi
        assert np.asarray(saved).std() > 10
    empty_path = str(tmp_path / 'empty.png')
    utils.save_loss_curves({}, empty_path)
    assert os.path.getsize(empty_path) > 0
