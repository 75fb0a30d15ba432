"""openmoji.py: the built-in demo dataset renders colour emoji once and caches them."""
import os

import numpy as np
import pytest
from PIL import Image

import data
import openmoji


def test_openmoji_renders_colour_emoji_and_caches(tmp_path, monkeypatch):
    folder = openmoji.openmoji_dataset(32, cache_dir=str(tmp_path), limit=40)
    files = data.list_image_files(folder)
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
    # The demo set repeats: rendered again, in one process instead of several, pixel for pixel.
    again = data.list_image_files(openmoji.openmoji_dataset(
        32, cache_dir=str(tmp_path / 'again'), limit=40, num_workers=1))
    assert [os.path.basename(path) for path in again] == [os.path.basename(p) for p in files]
    np.testing.assert_array_equal(np.stack([np.asarray(Image.open(path)) for path in again]),
                                  images)

    def must_not_render(*args, **kwargs):
        raise AssertionError('the cached folder should have been reused')

    monkeypatch.setattr(openmoji, '_render_openmoji_chunk', must_not_render)
    assert openmoji.openmoji_dataset(32, cache_dir=str(tmp_path), limit=40) == folder


def test_interrupted_openmoji_render_leaves_no_folder(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(openmoji, '_render_openmoji_chunk', interrupted)
    with pytest.raises(KeyboardInterrupt):
        openmoji.openmoji_dataset(32, cache_dir=str(tmp_path), limit=5, num_workers=1)
    assert os.listdir(tmp_path) == []  # neither the final nor the partial folder


