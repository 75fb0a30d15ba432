"""data.py: listing, fingerprints, decoding (the official bilinear resize from full size), to_uint8."""

import io
import os
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import data  # noqa: E402
from config import UserError  # noqa: E402

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
    huge = Image.new('RGB', (4000, 3000), (0, 128, 255))  # decoded at full size
    add('huge.jpg', huge, (0, 128, 255), quality=90)
    add('big.png', Image.new('RGB', (1300, 900), (250, 100, 0)), (250, 100, 0))
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


# ---------------------------------------------------------------- listing


def test_list_image_files_folder_glob_and_errors(odd_folder, tmp_path):
    folder, expected = odd_folder
    files = data.list_image_files(folder)
    assert files == sorted(files)
    assert sorted(os.path.relpath(f, folder) for f in files) == sorted(expected)  # recursive, no .txt
    assert data.list_image_files(os.path.join(folder, '*.png')) == sorted(
        os.path.join(folder, name) for name in expected if name.endswith('.png') and '/' not in name)
    assert data.list_image_files(os.path.join(folder, '**', '*.jpeg')) == [
        os.path.join(folder, 'sub', 'dir', 'nested.jpeg')]
    missing = str(tmp_path / 'missing')
    with pytest.raises(UserError, match='missing'):
        data.list_image_files(missing)
    with pytest.raises(UserError, match='matches no files'):
        data.list_image_files(missing + '/*.png')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(UserError, match='No images found'):
        data.list_image_files(str(tmp_path / 'empty'))


def test_dataset_fingerprint_tracks_changes(tmp_path):
    root = _id_folder(str(tmp_path / 'ids'), 3)
    files = data.list_image_files(root)
    first = data.dataset_fingerprint(files)
    assert first == data.dataset_fingerprint(list(reversed(files)))  # order-independent
    os.utime(files[0], ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    assert data.dataset_fingerprint(files) != first
    assert data.dataset_fingerprint(files[:2]) != data.dataset_fingerprint(files)


# ---------------------------------------------------------------- decoding


def test_odd_images_decode_to_rgb_and_bad_ones_are_skipped(odd_folder):
    folder, expected = odd_folder
    files = data.list_image_files(folder)
    with pytest.warns(data.SkippedImagesWarning, match='Skipped 2 of 14'):
        images = data.load_image_array(files, SIZE, show_progress=False)
    good = [f for f in files if expected[os.path.relpath(f, folder)] is not None]
    assert images.shape == (len(good), SIZE, SIZE, 3) and images.dtype == np.uint8
    for path, image in zip(good, images):  # file order is kept
        colour = expected[os.path.relpath(path, folder)]
        np.testing.assert_allclose(image[SIZE // 2, SIZE // 2], colour, atol=3, err_msg=path)


def test_only_corrupt_files_raise(tmp_path):
    root = _id_folder(str(tmp_path / 'bad'), 0, bad=3)
    with pytest.raises(UserError, match='None of the 3 image files could be decoded'):
        data.load_image_array(data.list_image_files(root), SIZE, show_progress=False)
    with pytest.raises(UserError, match='None of the 3 image files could be decoded'):
        data.check_some_decodable(data.list_image_files(root), SIZE, False)


def test_bilinear_resize_matches_tf_image_resize(tmp_path):
    """From the full-size image, as the official pipeline resizes: a large reduction too (no
    box pre-shrink, which made 1,024 px images neither the official resize nor antialiased)."""
    rng = np.random.default_rng(1)
    for shape, size in (((37, 53, 3), 16), ((10, 12, 3), 32), ((64, 64, 3), 64),
                        ((1024, 700, 3), 32)):
        pixels = rng.integers(0, 256, shape, np.uint8)
        reference = tf.image.resize(tf.constant(pixels, tf.float32), [size, size], 'bilinear').numpy()
        np.testing.assert_allclose(data.resize_bilinear(pixels, size), reference, atol=1e-3)
        path = str(tmp_path / f'{shape[0]}.png')
        Image.fromarray(pixels).save(path)
        decoded = data.decode_image(path, size).astype(np.float32)
        # Only the final rounding to uint8 differs: at most half a level.
        assert np.abs(decoded - reference).max() <= 0.5 + 1e-3


def test_center_crop_keeps_the_middle_square(tmp_path):
    pixels = np.zeros((20, 60, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:40] = (0, 255, 0)
    pixels[:, 40:] = (0, 0, 255)
    path = str(tmp_path / 'wide.png')
    Image.fromarray(pixels).save(path)
    cropped = data.decode_image(path, 8, center_crop=True)
    np.testing.assert_array_equal(cropped, np.broadcast_to([0, 255, 0], (8, 8, 3)))
    stretched = data.decode_image(path, 8, center_crop=False)
    assert stretched[:, 0, 0].min() == 255 and stretched[:, -1, 2].min() == 255  # whole width kept


def test_to_uint8_matches_official_conversion():
    values = np.array([-2.0, -1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 3.0], np.float32)
    np.testing.assert_array_equal(data.to_uint8(values), [0, 0, 0, 127, 191, 254, 255, 255])


def test_quantisation_matches_official_png_saving():
    images = np.float32([-1.5, -1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 2.0]).reshape(1, 2, 4, 1).repeat(3, -1)
    expected = np.clip(images * 127.5 + 127.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(data.to_uint8(images), expected)
    assert data.to_uint8(np.zeros((1, 1, 1, 3)))[0, 0, 0, 0] == 127  # truncation, not rounding


def test_load_image_composites_alpha_on_white_and_resizes(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, :] = (255, 0, 0, 255)  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'a.png')
    pixels = data.decode_image(str(tmp_path / 'a.png'))
    assert pixels.dtype == np.uint8 and pixels.shape == (8, 8, 3)
    assert tuple(pixels[0, 0]) == (255, 0, 0) and tuple(pixels[7, 7]) == (255, 255, 255)
    assert data.decode_image(str(tmp_path / 'a.png'), img_size=4).shape == (4, 4, 3)
