"""Image files in, uint8 pixels out: listing, decoding, resizing, fingerprints.

    files = data.list_image_files('data/ffhq')                   # folder, glob, file or list
    pixels = data.decode_image(files[0], 128)                    # (128, 128, 3) uint8
    images = data.load_image_array(files, 32)                    # (N, 32, 32, 3) uint8

Images of any mode become RGB (alpha over white) and are resized with the maths of
tf.image.resize (bilinear, no antialias) from their full size, as the official pipeline does,
then rounded to uint8. Training reads them from a pixel store (store.py: a prepared set, or the
image cache written the first time a folder is read) in the run's data order (batches.py).
`to_uint8` is the one quantisation of generated images (the official PNG saving): sample grids,
generate.py and FID all use it.
"""
import glob
import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from tqdm import tqdm

from config import UserError


IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp', '.tif', '.tiff')


class SkippedImagesWarning(UserWarning):
    """Some image files could not be decoded and were left out."""


def list_image_files(source):
    """Sorted image paths of a folder (searched recursively), a glob pattern, one image file or
    a list of files.

    Extensions (any case): png, jpg, jpeg, bmp, gif, webp, tif, tiff. Raises UserError when
    the path does not exist or holds no images.
    """
    if isinstance(source, (list, tuple)):
        missing = [path for path in source if not os.path.isfile(path)]
        if missing or not source:
            raise UserError(f'Image file {missing[0]!r} does not exist.' if missing else
                            'The list of image files is empty; give at least one.')
        return sorted(str(path) for path in source)
    path = os.path.expanduser(str(source))
    if os.path.isdir(path):
        candidates = []
        for folder, _, names in os.walk(path, followlinks=True):
            candidates.extend(os.path.join(folder, name) for name in names)
    elif glob.has_magic(path):
        candidates = [found for found in glob.glob(path, recursive=True) if os.path.isfile(found)]
        if not candidates:
            raise UserError(f"The pattern {path!r} matches no files; give an existing image folder "
                            "or a glob such as 'data/*.jpg'.")
    elif os.path.isfile(path):
        candidates = [path]
    else:
        raise UserError(f"The dataset path {path!r} does not exist; give an existing image folder "
                        "or a glob such as 'data/*.jpg'.")
    files = sorted(name for name in candidates if name.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise UserError(f"No images found at {path!r}; allowed extensions: "
                        f"{', '.join(ext[1:] for ext in IMAGE_EXTENSIONS)}.")
    return files


def dataset_fingerprint(files):
    """Short hex hash of the sorted paths with their sizes and modification times (for caches)."""
    digest = hashlib.sha256()
    for path in sorted(str(f) for f in files):
        try:
            stat = os.stat(path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        digest.update(f'{os.path.abspath(path)}\0{size}\0{mtime}\n'.encode('utf-8', 'surrogateescape'))
    return digest.hexdigest()[:16]


def select_files(paths, num=None, seed=0):
    """The first ``num`` of a seeded shuffle of ``paths`` (all of them when num is None), sorted."""
    if num is None or num == len(paths):
        return list(paths)
    if num < 2 or num > len(paths):
        raise UserError(f'{num} images were requested but {len(paths)} are available; ask for 2 '
                        f'to {len(paths)}.')
    chosen = np.random.default_rng(seed).permutation(len(paths))[:num]
    return [paths[index] for index in sorted(chosen)]


def pil_to_rgb_uint8(image):
    """Any Pillow image -> (H, W, 3) uint8 RGB; alpha is composited on white, 16-bit scaled to 8-bit."""
    mode = image.mode
    if mode.startswith('I') or mode == 'F':
        # 16-bit (and 32-bit integer) grey: Pillow's own conversion clips at 255, so scale.
        grey = np.asarray(image, dtype=np.float64)
        if mode != 'F':
            grey = grey * (255.0 / 65535.0)
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)  # (H, W)
        return np.repeat(grey[:, :, None], 3, axis=2)
    has_alpha = mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or (
        mode in ('P', 'L', 'RGB') and 'transparency' in image.info)
    if has_alpha:
        rgba = image.convert('RGBA')
        white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert('RGB'))
    if mode != 'RGB':
        image = image.convert('RGB')  # L, 1, P, CMYK, YCbCr, ...
    return np.asarray(image)


def _bilinear_weights(in_size, out_size):
    """Source indices and weights of tf.image.resize(..., 'bilinear') (half-pixel centres, no antialias)."""
    scale = in_size / out_size
    source = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5  # (out,)
    floor = np.floor(source)
    lower = np.clip(floor, 0, in_size - 1).astype(np.int64)
    upper = np.clip(np.ceil(source), 0, in_size - 1).astype(np.int64)
    fraction = (source - floor).astype(np.float32)
    return lower, upper, fraction


def resize_bilinear(image, size):
    """(H, W, C) array -> (size, size, C) float32 with the maths of
    tf.image.resize(image, [size, size], 'bilinear') (antialias=False), in numpy so it runs
    in worker threads without TensorFlow ops. Only the source rows it reads are converted to
    float: a large image costs its decoded bytes, not four times them."""
    image = np.asarray(image)
    height, width = image.shape[:2]
    rows_low, rows_high, row_fraction = _bilinear_weights(height, size)
    cols_low, cols_high, col_fraction = _bilinear_weights(width, size)
    # Interpolate along W first for every needed source row, then along H (as TF does).
    top = image[rows_low].astype(np.float32)  # (size, W, C)
    bottom = image[rows_high].astype(np.float32)  # (size, W, C)
    col_fraction = col_fraction[None, :, None]  # (1, size, 1)
    top = top[:, cols_low] + (top[:, cols_high] - top[:, cols_low]) * col_fraction  # (size, size, C)
    bottom = bottom[:, cols_low] + (bottom[:, cols_high] - bottom[:, cols_low]) * col_fraction
    return top + (bottom - top) * row_fraction[:, None, None]


def center_square(pixels):
    """The largest centred square of (H, W, C) pixels (offsets rounded down, as PIL and
    NVIDIA's dataset tool crop)."""
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return pixels[top:top + side, left:left + side]


def decode_image(path, img_size=None, center_crop=False):
    """One image file -> (img_size, img_size, 3) uint8 RGB, or (H, W, 3) at its own size when
    img_size is None; raises on unreadable files.

    Pillow decodes (first frame of GIFs) at full size; grey, palette, 16-bit, CMYK and alpha
    images become RGB (alpha composited on white). With center_crop the largest centred square
    is kept. The resize is the official pipeline's tf.image.resize bilinear (half-pixel centres,
    no antialias) from the full-size image, then rounded to uint8: that rounding is the only
    difference from the official float pipeline (at most 0.5/127.5 after scaling to [-1, 1]).
    Large reductions alias, as the official pipeline's do: prepare.py offers box and Lanczos
    filters for those."""
    with Image.open(path) as image:  # GIFs open at their first frame
        pixels = pil_to_rgb_uint8(image)  # (H, W, 3)
    if center_crop:
        pixels = center_square(pixels)
    if img_size is None:
        return pixels
    resized = resize_bilinear(pixels, img_size)  # (S, S, 3) float32
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


def try_decode(path, img_size, center_crop):
    """(image or None, error message or None): any failure means 'skip this file'."""
    try:
        return decode_image(path, img_size, center_crop), None
    except Exception as error:  # noqa: BLE001 - corrupt files raise many different types
        return None, f'{type(error).__name__}: {error}'


def warn_skipped(skipped, total):
    """One warning for all undecodable files, naming how many and one example."""
    if skipped:
        example_path, reason = skipped[0]
        warnings.warn(f'Skipped {len(skipped)} of {total} image files that could not be decoded '
                      f'(e.g. {example_path!r}: {reason}).', SkippedImagesWarning, stacklevel=3)


def default_workers():
    """Decoding threads: Pillow decodes and numpy resizes without holding the GIL."""
    return min(16, 2 * (os.cpu_count() or 1))


def decoded_images(files, img_size, center_crop=False, num_workers=None, show_progress=True,
                   desc=None):
    """(path, pixels or None, error or None) of each file, in file order, decoded in parallel
    threads with at most a few thousand files in flight (any number of files, bounded memory)."""
    window = 4096
    with ThreadPoolExecutor(num_workers or default_workers()) as executor, tqdm(
            total=len(files), disable=not show_progress, unit='img',
            desc=desc or f'Decoding images at {img_size}px') as progress:
        for start in range(0, len(files), window):
            chunk = files[start:start + window]
            results = executor.map(lambda path: try_decode(path, img_size, center_crop), chunk)
            for path, (pixels, error) in zip(chunk, results):
                yield path, pixels, error
                progress.update(1)


def load_image_array(files, img_size, center_crop=False, num_workers=None, show_progress=True,
                     return_files=False):
    """Decode `files` in parallel threads -> uint8 array (N, img_size, img_size, 3), and with
    return_files the files it holds, in order.

    Unreadable files are left out; one SkippedImagesWarning names how many and an
    example. Raises UserError when no file could be decoded.
    """
    files = [str(f) for f in files]
    img_size = check_positive_int(img_size, 'img_size')
    if not files:
        raise UserError('No image files were given to load; pass at least one image path.')
    images = np.empty((len(files), img_size, img_size, 3), np.uint8)  # (N, S, S, 3)
    kept, skipped = 0, []
    for path, pixels, error in decoded_images(files, img_size, center_crop, num_workers,
                                              show_progress):
        if pixels is None:
            skipped.append((path, error))
        else:
            images[kept] = pixels
            kept += 1
    if kept == 0:
        raise UserError(f'None of the {len(files)} image files could be decoded '
                        f'(e.g. {skipped[0][0]!r}: {skipped[0][1]}).')
    warn_skipped(skipped, len(files))
    if return_files:
        left_out = {path for path, _ in skipped}
        return images[:kept], [path for path in files if path not in left_out]
    return images[:kept]


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f'{name}={value!r} is not allowed; it must be a positive integer.')
    return int(value)


def available_memory_bytes():
    """MemAvailable from /proc/meminfo, else available physical pages from sysconf, else 4 GiB."""
    try:
        with open('/proc/meminfo') as meminfo:
            for line in meminfo:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (AttributeError, OSError, ValueError):
        return 4 * 1024 ** 3


def check_some_decodable(files, img_size, center_crop, sample_size=32):
    """Fail early, before anything is written, if a sample of the files is all unreadable."""
    sample = files[:sample_size]
    if all(try_decode(path, img_size, center_crop)[0] is None for path in sample):
        which = (f'the {len(files)}' if len(sample) == len(files) else
                 f'the first {len(sample)} of {len(files)}')
        raise UserError(f'None of {which} image files could be decoded (e.g. {sample[0]!r}); '
                        'check the dataset path.')


def to_uint8(images):
    """Float images in [-1, 1] -> uint8 via clip(x * 127.5 + 127.5, 0, 255), truncated as the official code saves them."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(images * 127.5 + 127.5, 0, 255).astype(np.uint8)
