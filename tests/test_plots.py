"""plots.py: sample grids, attention maps and loss curves are written as readable PNGs."""
import os

import numpy as np
import pytest
from PIL import Image

import data
import plots


def test_save_image_grid_writes_8x8_png(tmp_path):
    images = np.random.default_rng(0).uniform(-1, 1, (64, 16, 16, 3)).astype(np.float32)
    path = str(tmp_path / 'grid.png')
    grid = plots.save_image_grid(images, path)
    side = 8 * (16 + 2) + 2
    assert grid.shape == (side, side, 3)
    with Image.open(path) as saved:
        assert saved.size == (side, side)
        np.testing.assert_array_equal(np.asarray(saved), grid)
    np.testing.assert_array_equal(grid[2:18, 2:18], data.to_uint8(images[0]))


def test_save_attention_maps_one_png_per_stage(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    maps = [rng.random((8, 4, tokens)).astype(np.float32) for tokens in (64, 256, 1024)]
    paths = plots.save_attention_maps(images, maps, str(tmp_path / 'attn'), heads=[4, 4, 4], plot_size=5.2)
    assert [os.path.basename(p) for p in paths] == [
        'attn_stage0_8x8.png', 'attn_stage1_16x16.png', 'attn_stage2_32x32.png']
    for path in paths:
        with Image.open(path) as saved:
            width, height = saved.size
            assert height >= 500 and width > height / 2  # readable panels for 8 rows x 6 columns
            assert np.asarray(saved).std() > 10  # not empty
    with pytest.raises(ValueError, match='not a square'):
        plots.save_attention_maps(images, [rng.random((8, 4, 60))], str(tmp_path / 'bad'))


def test_save_loss_curves_writes_png(tmp_path):
    steps = np.arange(1, 120) * 256
    history = {'d_loss': list(zip(steps, np.sin(steps))), 'g_loss': list(zip(steps, np.cos(steps))),
               'gp': list(zip(steps, np.full(len(steps), 1e-4))),
               'real_logits_mean': list(zip(steps, np.ones(len(steps)))),
               'fake_logits_mean': list(zip(steps, -np.ones(len(steps)))),
               'cr': list(zip(steps, np.zeros(len(steps)))),  # all zero: no panel
               'fid': [(10000, 80.0), (20000, float('nan')), (30000, 60.0)]}
    path = str(tmp_path / 'loss.png')
    assert plots.save_loss_curves(history, path) == path
    with Image.open(path) as saved:
        assert saved.size == (1200, 600)  # 4 panels: 2 columns x 2 rows of 6x3 inches at 100 dpi
        assert np.asarray(saved).std() > 10
    empty_path = str(tmp_path / 'empty.png')
    plots.save_loss_curves({}, empty_path)
    assert os.path.getsize(empty_path) > 0
