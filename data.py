"""Image folders in, training batches out: listing, decoding, resizing, caching and sharding.

    files = data.list_image_files('data/ffhq')                   # folder, glob, file or list
    dataset = data.make_train_dataset('data/ffhq', 128, 64)     # (64, 128, 128, 3) in [-1, 1]
    dataset = data.TrainingImages('data/ffhq', 128, 64, seed=0).dataset(start_batch=1000)
    images = data.load_image_array(files, 32)                   # (N, 32, 32, 3) uint8

Images of any mode become RGB (alpha over white) and are resized with the maths of
tf.image.resize (bilinear, no antialias), as the official pipeline does, then rounded to uint8 and
kept in memory when they fit. `to_uint8` is the one quantisation of generated images (the
official PNG saving): sample grids, generate.py and FID all use it.
"""
import glob
import hashlib
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf
from PIL import Image
from tqdm import tqdm

from config import UserError


IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp', '.tif', '.tiff')


# Images whose short side exceeds this multiple of the target side are first shrunk
# by an integer factor (JPEG draft mode, else Image.reduce, a box filter) that keeps
# the short side >= this multiple, so huge files cannot blow up memory.
_MAX_DECODE_FACTOR = 4


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


def decode_image(path, img_size=None, center_crop=False):
    """One image file -> (img_size, img_size, 3) uint8 RGB, or (H, W, 3) at its own size when
    img_size is None; raises on unreadable files.

    Pillow decodes (first frame of GIFs); grey, palette, 16-bit, CMYK and alpha images
    become RGB (alpha composited on white). With center_crop the largest centred square
    is kept. The resize is tf.image.resize's bilinear (half-pixel centres, no antialias)
    like the official pipeline, then rounded to uint8 for the in-memory cache: that
    rounding is the only difference from the official float pipeline (at most 0.5/127.5
    after scaling to [-1, 1]). To bound memory, images whose short side exceeds 4x the
    target are first shrunk by an integer factor (JPEG draft mode, else Image.reduce, a box
    filter) that keeps the short side >= 4x the target.
    """
    target = _MAX_DECODE_FACTOR * img_size if img_size else float('inf')
    with Image.open(path) as image:  # GIFs open at their first frame
        width, height = image.size
        short_side = min(width, height)
        if image.format == 'JPEG' and short_side > target:
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale, keeping the short side >= target.
            image.draft('RGB', (-(-width * target // short_side), -(-height * target // short_side)))
        pixels = pil_to_rgb_uint8(image)  # (H, W, 3)
    reduce_factor = int(min(pixels.shape[:2]) // target)
    if reduce_factor >= 2:
        pixels = np.asarray(Image.fromarray(pixels).reduce(reduce_factor))  # box filter
    if center_crop:
        height, width = pixels.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        pixels = pixels[top:top + side, left:left + side]
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


def _default_workers():
    return min(16, 2 * (os.cpu_count() or 1))


def load_image_array(files, img_size, center_crop=False, num_workers=None, show_progress=True):
    """Decode `files` in parallel threads -> uint8 array (N, img_size, img_size, 3).

    Unreadable files are left out; one SkippedImagesWarning names how many and an
    example. Raises UserError when no file could be decoded.
    """
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
            results = executor.map(lambda path: try_decode(path, img_size, center_crop), chunk)
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


def image_memory_limit_bytes():
    """The most memory decoded training images may take before they are streamed from disk:
    $LADAGAN_IMAGE_MEMORY_MB when set (0 streams every set), else half the available RAM."""
    value = os.environ.get('LADAGAN_IMAGE_MEMORY_MB')
    if value is None:
        return available_memory_bytes() // 2
    try:
        megabytes = float(value)
    except ValueError:
        megabytes = -1
    if not megabytes >= 0:
        raise UserError(f'LADAGAN_IMAGE_MEMORY_MB={value!r} is not allowed: give a number of '
                        'megabytes, 0 or more.')
    return int(megabytes * 1024 ** 2)


class EpochOrder:
    """The order a run draws its images in: epoch e visits the N items in the permutation drawn
    from rng([seed, e]), B at a time, and drops the last N % B; the run's batch k (its k-th step)
    is batch k mod (N // B) of epoch k // (N // B). A pure function of (seed, N, B, k): a run
    resumed at step k draws exactly the images, in exactly the order, that the uninterrupted run
    would have, without any iterator state beyond the step. So are the x-flips of mirror=True:
    position i of epoch e is flipped when rng([seed, e, 1]) draws below 1/2 there."""

    def __init__(self, num_items, batch_size, seed):
        self.num_items, self.batch_size = num_items, batch_size
        self.batches_per_epoch = num_items // batch_size
        # No seed: a fresh one, so that unseeded epochs still differ from run to run.
        self.seed = np.random.SeedSequence().entropy if seed is None else int(seed)
        # The permutations (and flips) of the last two epochs asked for: the input threads
        # share them, and near an epoch's end they ask for both.
        self._cached, self._lock = {}, threading.Lock()

    def _per_epoch(self, kind, epoch, draw):
        """The array `draw(rng)` of `epoch` (kind 0: the permutation, 1: the flips), from
        rng([seed, epoch]) or rng([seed, epoch, kind]), kept for the last two epochs asked."""
        key = (kind, int(epoch))
        with self._lock:
            value = self._cached.pop(key, None)
            if value is None:
                seed = [self.seed, key[1]] + ([kind] if kind else [])
                value = draw(np.random.default_rng(seed))
            self._cached[key] = value  # the newest last
            while len(self._cached) > 4:
                del self._cached[next(iter(self._cached))]
            return value

    def permutation(self, epoch):
        """int64 (N,): the items of `epoch` in the order they are drawn."""
        return self._per_epoch(0, epoch, lambda rng: rng.permutation(self.num_items))

    def flips(self, epoch):
        """bool (N,): whether the image drawn at each position of `epoch` is mirrored (x-flip,
        probability 1/2; mirror=True), from rng([seed, epoch, 1]): a function of the position,
        as the order is."""
        return self._per_epoch(1, epoch, lambda rng: rng.random(self.num_items) < 0.5)

    def position(self, slot):
        """(epoch, index in its permutation) of the run's slot-th drawn image (batch k holds
        slots k*B .. k*B + B - 1)."""
        batch, row = divmod(int(slot), self.batch_size)
        epoch, offset = divmod(batch, self.batches_per_epoch)
        return epoch, offset * self.batch_size + row

    def batch(self, step):
        """int64 (B,): the items of the run's batch `step`."""
        epoch, start = self.position(int(step) * self.batch_size)
        return self.permutation(epoch)[start:start + self.batch_size]

    def batch_flips(self, step):
        """bool (B,): which images of the run's batch `step` are mirrored (mirror=True)."""
        epoch, start = self.position(int(step) * self.batch_size)
        return self.flips(epoch)[start:start + self.batch_size]


class TrainingImages:
    """A training set and its order (EpochOrder): decoded once into memory when the uint8 images
    fit in `cache_limit_bytes` (default: image_memory_limit_bytes()), else decoded from the files as
    they are drawn. `dataset(start_batch)` is the infinite stream of float32 batches
    (batch_size, img_size, img_size, 3) in [-1, 1] from the run's batch `start_batch` on: a
    resumed run asks for its step. num_shards / shard_index keep every num_shards-th file
    (multi-worker training: each worker draws its own shard in its own order, step by step).
    mirror=True flips each drawn image horizontally with probability 1/2 (EpochOrder.flips)."""

    def __init__(self, file_pattern, img_size, batch_size, center_crop=False, seed=None,
                 cache_limit_bytes=None, num_shards=1, shard_index=0, mirror=False):
        self.img_size = _check_positive_int(img_size, 'img_size')
        self.batch_size = _check_positive_int(batch_size, 'batch_size')
        num_shards = _check_positive_int(num_shards, 'num_shards')
        if isinstance(shard_index, bool) or not isinstance(shard_index, (int, np.integer)) or not (
                0 <= shard_index < num_shards):
            raise UserError(f'shard_index={shard_index!r} is not allowed; it must be an integer in '
                            f'[0, {num_shards - 1}] for num_shards={num_shards}.')
        self.center_crop, self.mirror = center_crop, mirror
        self.files = list_image_files(file_pattern)[shard_index::num_shards]
        if cache_limit_bytes is None:
            cache_limit_bytes = image_memory_limit_bytes()
        self.in_memory = len(self.files) * img_size * img_size * 3 <= cache_limit_bytes
        if self.in_memory:
            self.images = load_image_array(self.files, img_size, center_crop)  # (N, S, S, 3) uint8
            self.num_images = len(self.images)
        else:
            self.images = None
            self.num_images = len(self.files)
            _check_some_decodable(self.files, img_size, center_crop)
        _check_enough_images(self.num_images, batch_size, file_pattern)
        self.order = EpochOrder(self.num_images, batch_size, seed)
        self._replaced = set()  # streamed files that did not decode (warned once)
        shard_note = f' (shard {shard_index} of {num_shards})' if num_shards > 1 else ''
        print(f'Train dataset: {self.num_images} images{shard_note}, '
              f'{self.order.batches_per_epoch} batches of {batch_size} per epoch, '
              f'{"cached in memory" if self.in_memory else "streamed from disk"}.')

    def dataset(self, start_batch=0):
        """Batches start_batch, start_batch + 1, ... of the run, prefetched."""
        size = self.img_size
        if self.in_memory:
            # The batch is gathered from the numpy array in tf.numpy_function, so the (possibly
            # multi-GB) array is neither copied into a TF constant nor embedded in the graph.
            steps = tf.data.Dataset.range(int(start_batch), np.iinfo(np.int64).max)
            dataset = steps.map(lambda step: _numpy_images(self._gather, step, [None, size, size, 3]),
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        else:
            slots = tf.data.Dataset.range(int(start_batch) * self.batch_size, np.iinfo(np.int64).max)
            dataset = slots.map(lambda slot: _numpy_images(self._decode_slot, slot, [size, size, 3]),
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            dataset = dataset.batch(self.batch_size, drop_remainder=True)
        dataset = dataset.map(_scale_to_unit_range, num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=True).prefetch(tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.deterministic = True
        # Sharding is done above by file (num_shards / shard_index), not by tf.distribute.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options)

    def _gather(self, step):
        """uint8 (B, S, S, 3): the in-memory images of the run's batch `step`."""
        images = self.images[self.order.batch(step)]  # a copy: flipping leaves the cache alone
        if self.mirror:
            flips = self.order.batch_flips(step)
            images[flips] = images[flips, :, ::-1]
        return images

    def _decode_slot(self, slot):
        """uint8 (S, S, 3): the image of the run's slot-th draw, decoded from its file. A file
        that does not decode is replaced by the next one of its epoch's permutation that does
        (one warning per file), so every slot, and so the order, is a function of the slot."""
        epoch, index = self.order.position(slot)
        permutation = self.order.permutation(epoch)
        for step in range(self.num_images):
            path = self.files[permutation[(index + step) % self.num_images]]
            pixels, error = try_decode(path, self.img_size, self.center_crop)
            if pixels is not None:
                mirrored = self.mirror and self.order.flips(epoch)[index]
                return np.ascontiguousarray(pixels[:, ::-1]) if mirrored else pixels
            if path not in self._replaced:
                self._replaced.add(path)
                warnings.warn(f'{path!r} could not be decoded ({error}): the next image of the '
                              'epoch takes its place', SkippedImagesWarning, stacklevel=2)
        raise UserError(f'None of the {self.num_images} image files could be decoded.')


def _numpy_images(function, index, shape):
    """function(index) (uint8 images) as a tf.data element of static `shape`."""
    images = tf.numpy_function(function, [index], tf.uint8, stateful=False)
    images.set_shape(shape)
    return images


def make_train_dataset(file_pattern, img_size, batch_size, center_crop=False, seed=None,
                       cache_limit_bytes=None, num_shards=1, shard_index=0, return_size=False,
                       start_batch=0, mirror=False):
    """Infinite tf.data.Dataset of float32 batches (batch_size, img_size, img_size, 3) in [-1, 1]
    from batch `start_batch` of the run on (TrainingImages: the order, caching and sharding).
    Prints the dataset size; with return_size=True returns (dataset, num_images).
    """
    images = TrainingImages(file_pattern, img_size, batch_size, center_crop, seed,
                            cache_limit_bytes, num_shards, shard_index, mirror)
    dataset = images.dataset(start_batch)
    return (dataset, images.num_images) if return_size else dataset


def _check_enough_images(num_images, batch_size, file_pattern):
    if num_images < batch_size:
        raise UserError(f'The dataset {str(file_pattern)!r} has {num_images} usable images, fewer than '
                        f'batch_size={batch_size}; use a smaller batch size or more images.')


def _check_some_decodable(files, img_size, center_crop, sample_size=32):
    """Streaming mode cannot decode everything up front: fail early if a sample is all unreadable."""
    sample = files[:sample_size]
    if all(try_decode(path, img_size, center_crop)[0] is None for path in sample):
        which = (f'the {len(files)}' if len(sample) == len(files) else
                 f'the first {len(sample)} of {len(files)}')
        raise UserError(f'None of {which} image files could be decoded (e.g. {sample[0]!r}); '
                        'check the dataset path.')


def check_train_images(file_pattern, img_size, batch_size, center_crop=False):
    """Cheap up-front check of a training set (exists, a sample decodes, enough files), so a CLI
    can refuse bad input before it creates anything; raises UserError."""
    files = list_image_files(file_pattern)
    # Decodable first: a folder of 9 corrupt files has no usable image, not "9, too few".
    _check_some_decodable(files, img_size, center_crop)
    if len(files) < batch_size:
        raise UserError(f'The dataset {str(file_pattern)!r} has {len(files)} image files, fewer '
                        f'than batch_size={batch_size}; use a smaller batch size or more images.')


def check_fid_images(pattern_or_dir, n_fid_real, option):
    """Raise UserError unless `pattern_or_dir` (given as `option`, e.g. '--eval_dir') holds at
    least n_fid_real image files: a file count, no decoding."""
    count = len(list_image_files(pattern_or_dir))
    if count < n_fid_real:
        raise UserError(f'{option} {str(pattern_or_dir)!r} holds {count} images but the '
                        f'in-training FID needs n_fid_real={n_fid_real}; give at least that many, '
                        f'lower it with --set n_fid_real={count}, or turn FID off with --fid_inter 0.')


def _scale_to_unit_range(images_uint8):
    """uint8 (..., 3) -> float32 in [-1, 1] as the official code: x / 127.5 - 1."""
    return tf.cast(images_uint8, tf.float32) / 127.5 - 1.0


def to_uint8(images):
    """Float images in [-1, 1] -> uint8 via clip(x * 127.5 + 127.5, 0, 255), truncated as the official code saves them."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(images * 127.5 + 127.5, 0, 255).astype(np.uint8)
