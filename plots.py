"""Pictures of a run: sample grids, attention maps per stage and head, loss curves.

matplotlib's object API (Figure + FigureCanvasAgg) is used throughout: no pyplot, no global
backend switch, so importing this module in a notebook leaves the user's matplotlib setup alone.
"""
import os

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter
from PIL import Image

from data import to_uint8


def _as_uint8_rgb(images):
    """(B, H, W, C) float in [-1, 1] or uint8, C in {1, 3} -> uint8 (B, H, W, 3)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f'Expected images of shape (B, H, W, 1 or 3), got {images.shape}.')
    if images.dtype != np.uint8:
        images = to_uint8(images)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images


def make_image_grid(images, nrow=None, padding=2, pad_value=128):
    """Tile images (B, H, W, C) into one uint8 (rows*(H+p)+p, nrow*(W+p)+p, 3) array; nrow = images per row."""
    images = _as_uint8_rgb(images)
    count, height, width, _ = images.shape
    columns = int(nrow) if nrow else int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    grid = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding, 3),
                   pad_value, np.uint8)
    for index, image in enumerate(images):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[top:top + height, left:left + width] = image
    return grid


def save_image_grid(images, path, nrow=None, padding=2):
    """Save images (B, H, W, C) in [-1, 1] (or uint8) as one PNG grid (8x8 for 64 images,
    2 px grey padding); returns the uint8 grid (for TensorBoard)."""
    grid = make_image_grid(images, nrow=nrow, padding=padding)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(grid).save(path)
    return grid


def _new_figure(width_inches, height_inches, dpi=100):

    figure = Figure(figsize=(width_inches, height_inches), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _attention_path(path_prefix, stage, grid_side):
    path_prefix = os.fspath(path_prefix)
    name = f'stage{stage}_{grid_side}x{grid_side}.png'
    if os.path.isdir(path_prefix) or path_prefix.endswith(os.sep):
        return os.path.join(path_prefix, 'attention_' + name)
    return f'{path_prefix}_{name}'


def _min_max_scaled(values):
    """values scaled to [0, 1] by their own minimum and maximum, as imshow's default norm; a
    constant map is all zeros."""
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _nearest_upsample(pixels, side):
    """(h, w, ...) -> (side, side, ...) by nearest neighbour: each source pixel a block."""
    rows = np.arange(side) * pixels.shape[0] // side
    columns = np.arange(side) * pixels.shape[1] // side
    return pixels[rows][:, columns]


def _colour(cmap, values):
    """A map in [0, 1] (..., h, w) -> float RGB (..., h, w, 3) in [0, 1] through a colormap."""
    return matplotlib.colormaps[cmap](values)[..., :3]


def _attention_panels(picture, grids, side):
    """One row of an attention figure, each panel float RGB (side, side, 3): the image (S, S, 3)
    in [0, 1], each head's map (heads, g, g) in viridis, and the heads' mean, bilinear over the
    image, in inferno at alpha 0.55."""
    image = _nearest_upsample(picture, side)
    heads = [_nearest_upsample(_colour('viridis', _min_max_scaled(grid)), side) for grid in grids]
    mean_map = np.asarray(Image.fromarray(grids.mean(axis=0), mode='F').resize(
        (side, side), Image.BILINEAR))
    overlay = 0.55 * _colour('inferno', _min_max_scaled(mean_map)) + 0.45 * image
    return [image] + heads + [overlay]


def save_attention_maps(images, attn_maps, path_prefix, heads=None, plot_size=5.2, max_images=8):
    """One PNG per generator stage: each generated image beside its per-head attention maps.

    images: (B, S, S, 3) in [-1, 1] (or uint8). attn_maps: one array per stage,
    (B, heads, tokens) with tokens a square (64, 256, 1024 for the 8x8, 16x16, 32x32
    stages). heads: optional heads per stage, to check the maps against.
    Each row is one image (at most max_images): the image, every head's map reshaped
    to its token grid (viridis, each map min-max scaled, as the official plots), and
    the heads' mean overlaid on the image ('mean overlay'). plot_size: figure height in inches (the
    official plots' figure size). path_prefix: files '<prefix>_stage<r>_<g>x<g>.png',
    or 'attention_stage<r>_<g>x<g>.png' inside it when it is a folder. Returns the paths.

    The panels are composed as one picture and drawn in a single image: a figure of one axes
    per panel (8 rows x 6 columns) took about a second per checkpoint to lay out and draw.
    """
    images = _as_uint8_rgb(images)[:max_images]
    count, image_side = images.shape[0], images.shape[1]
    if heads is not None and len(heads) != len(attn_maps):
        raise ValueError(f'heads={list(heads)} has {len(heads)} entries but {len(attn_maps)} '
                         'attention maps were given; give one head count per stage.')
    # Pixels per panel: at least ~100, so that a 32x32 map shows 3 px per token; a multiple of
    # the image side, so that every image pixel is a block of the same size.
    side = image_side * max(1, int(np.ceil(100 / image_side)))
    gap = max(2, int(round(0.04 * side)))  # white between panels
    pictures = np.asarray(images, np.float32) / 255  # (B, S, S, 3) in [0, 1]
    paths = []
    for stage, stage_maps in enumerate(attn_maps):
        stage_maps = np.asarray(stage_maps, dtype=np.float32)[:count]  # (B, heads, tokens)
        if stage_maps.ndim != 3:
            raise ValueError(f'Attention maps of stage {stage} have shape {stage_maps.shape}; '
                             'expected (batch, heads, tokens).')
        num_heads, num_tokens = stage_maps.shape[1:]
        if heads is not None and heads[stage] != num_heads:
            raise ValueError(f'Stage {stage} maps have {num_heads} heads but heads[{stage}]={heads[stage]}.')
        grid_side = int(round(np.sqrt(num_tokens)))
        if grid_side * grid_side != num_tokens:
            raise ValueError(f'Stage {stage} has {num_tokens} tokens, which is not a square grid.')
        grids = stage_maps.reshape(stage_maps.shape[0], num_heads, grid_side, grid_side)  # (B, heads, g, g)
        columns = num_heads + 2  # image, heads, mean overlay
        mosaic = np.ones((count * (side + gap) - gap, columns * (side + gap) - gap, 3), np.float32)
        for row in range(count):
            top = row * (side + gap)
            for column, panel in enumerate(_attention_panels(pictures[row], grids[row], side)):
                left = column * (side + gap)
                mosaic[top:top + side, left:left + side] = panel
        panel = plot_size / (count + 0.6)  # inches per panel; 0.6 panel for the titles
        dpi = max(100, int(np.ceil(100 / panel)))
        figure = _new_figure(panel * columns, plot_size, dpi=dpi)
        title_band = 0.6 * panel / plot_size  # figure fraction above the panels
        figure.add_axes((0.005, 0.005, 0.99, 0.995 - title_band), frame_on=False, xticks=[],
                        yticks=[]).imshow(mosaic, interpolation='nearest', aspect='auto')
        font_size = max(5, min(10, 11 * panel))
        titles = ['image'] + [f'head {head}' for head in range(num_heads)] + ['mean overlay']
        for column, title in enumerate(titles):
            centre = 0.005 + 0.99 * (column * (side + gap) + side / 2) / mosaic.shape[1]
            figure.text(centre, 1 - title_band + 0.004, title, fontsize=font_size,
                        ha='center', va='bottom')
        # Short enough for a 2-head figure (4 panels wide); the maps are min-max scaled each.
        figure.suptitle(f'stage {stage}: {grid_side}x{grid_side} tokens, {num_heads} heads',
                        fontsize=font_size)
        path = _attention_path(path_prefix, stage, grid_side)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        figure.savefig(path)
        paths.append(path)
    return paths


# Panels of save_loss_curves: (title, metric names drawn together). Others get a panel each.
_LOSS_PANELS = (
    ('Losses', ('d_loss', 'g_loss', 'd_total')),
    ('R1 gradient penalty (weighted)', ('gp',)),
    ('Discriminator logit means', ('real_logits_mean', 'fake_logits_mean')),
    ('Consistency loss (bCR)', ('cr',)),
    ('FID', ('fid',)),
    ('Class accuracy of generated images (kNN; the real images\' beside it)',
     ('class_accuracy', 'class_accuracy_ceiling')),
    ('float16 loss scales', ('d_loss_scale', 'g_loss_scale')),
    ('float16 steps skipped so far', ('skipped_steps',)),
)
_NOT_PLOTTED = {'step_skipped'}  # 0 or 1 per logged step: skipped_steps shows it summed


def _finite_series(points):
    """[(images_seen, value), ...] -> two float arrays with non-finite values dropped."""
    if not points:
        return np.zeros(0), np.zeros(0)
    seen, values = (np.asarray(column, dtype=np.float64) for column in zip(*points))
    keep = np.isfinite(seen) & np.isfinite(values)
    return seen[keep], values[keep]


def save_loss_curves(history, path):
    """Plot a training history {metric: [(images_seen, value), ...]} to one PNG with a panel per group:
    d/g losses, gradient penalty, real/fake logit means, bCR, FID, then any other metric.
    Noisy series (> 50 points) are drawn faint with a moving average on top. Returns path."""
    series = {name: _finite_series(points) for name, points in history.items()
              if name not in _NOT_PLOTTED}
    series = {name: data for name, data in series.items() if data[0].size}
    panels = []
    for title, names in _LOSS_PANELS:
        present = [name for name in names if name in series]
        if _all_zero(series, present):
            continue
        if present:
            panels.append((title, present))
    grouped = {name for _, names in _LOSS_PANELS for name in names}
    panels += [(name, [name]) for name in sorted(series) if name not in grouped]
    if not panels:
        panels = [('no metrics yet', [])]
    columns = 2 if len(panels) > 1 else 1
    rows = int(np.ceil(len(panels) / columns))
    figure = _new_figure(6 * columns, 3 * rows, dpi=100)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, (title, names) in zip(axes, panels):
        for name in names:
            seen, values = series[name]
            if values.size > 50:
                line, = axis.plot(seen, values, linewidth=0.6, alpha=0.3)
                window = max(2, values.size // 50)
                smooth = np.convolve(values, np.ones(window) / window, mode='valid')
                axis.plot(seen[window - 1:], smooth, color=line.get_color(), linewidth=1.4,
                          label=f'{name} (mean of {window})')
            else:
                axis.plot(seen, values, marker='o' if values.size < 20 else None, markersize=3,
                          linewidth=1.2, label=name)
        if names == ['fid']:
            seen, values = series['fid']
            best = int(np.argmin(values))
            axis.plot(seen[best], values[best], 'r*', markersize=10, label=f'best {values[best]:.2f}')
        axis.set_title(title, fontsize=10)
        axis.set_xlabel('images seen', fontsize=8)
        axis.xaxis.set_major_formatter(EngFormatter())
        axis.tick_params(labelsize=8)
        axis.grid(alpha=0.3)
        if names:
            axis.legend(fontsize=7)
    for axis in axes[len(panels):]:
        axis.set_axis_off()
    # Fixed margins and gaps in inches (tick labels, axis label, title), not tight_layout: it
    # measured every text's extent and took 0.36 s of the 1.0 s this picture costs each save.
    # subplots_adjust takes gaps as fractions of a panel's size, so they are converted here.
    width, height = 6 * columns, 3 * rows
    left, right, bottom, top, column_gap, row_gap = 0.75, 0.15, 0.55, 0.3, 0.9, 0.8
    panel_width = (width - left - right - column_gap * (columns - 1)) / columns
    panel_height = (height - bottom - top - row_gap * (rows - 1)) / rows
    figure.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                           top=1 - top / height, wspace=column_gap / panel_width,
                           hspace=row_gap / panel_height)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path)
    return path


def _all_zero(series, names):
    """True when every listed metric is constantly 0 (e.g. cr when bCR is off): not worth a panel."""
    return bool(names) and all(not np.any(series[name][1]) for name in names)


def save_nearest_neighbours(generated, neighbours, distances, path, labels=None):
    """The memorisation picture: each generated image (a row) followed by its nearest training
    images in Inception feature space, each titled with its distance.

    generated: (Q, S, S, 3) uint8 or [-1, 1]; neighbours: (Q, k, S, S, 3); distances: (Q, k);
    labels: optional row titles (e.g. 'seed 12'). Returns path."""
    generated = _as_uint8_rgb(generated)
    count, k = distances.shape
    panel = 1.1  # inches per image
    figure = _new_figure(panel * (k + 1), panel * count + 0.4, dpi=max(100, 96 * 2))
    axes = figure.subplots(count, k + 1, squeeze=False)
    for row in range(count):
        axes[row, 0].imshow(generated[row], interpolation='nearest')
        axes[row, 0].set_title(labels[row] if labels else 'generated', fontsize=6, pad=2)
        for column, image in enumerate(_as_uint8_rgb(neighbours[row]), start=1):
            axes[row, column].imshow(image, interpolation='nearest')
            axes[row, column].set_title(f'{distances[row, column - 1]:.1f}', fontsize=6, pad=2)
    for axis in axes.ravel():
        axis.set_axis_off()
    height = panel * count + 0.4
    # The title in the top 0.2 inch, clear of the first row's distance labels.
    figure.suptitle(f'generated (left) and its {k} nearest training images (Inception '
                    'feature distance)', fontsize=7, y=1 - 0.08 / height, va='top')
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.4 / height,
                           wspace=0.05, hspace=0.35)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path)
    return path
