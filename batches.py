"""Training batches: the run's data order, x-flips, sharding, and the tf.data pipeline that reads
them, uint8, from a pixel store (store.py) or from images decoded into memory.

    images = batches.TrainingImages('data/ffhq_128', 128, 64, seed=0)   # a prepared set
    dataset = images.dataset(start_batch=1000)   # uint8 (64, 128, 128, 3): step 1000 on

The order is a function of (seed, epoch, position) alone (DataOrder), so a resumed run draws,
from its step on, what the uninterrupted run would have, whichever way the images are read: from
a prepared set, the image cache, or decoded into memory. Batches stay uint8 until the training
step scales them on the device (gan.as_float_images): a quarter of float32's bytes per copy.
"""
import os

import numpy as np
import tensorflow as tf

import data
import sources
import store
from config import UserError


# The images shuffled together: the chunks of a window are read whole and their images
# permuted. A set of at most this many bytes is one window: a uniform permutation every epoch.
WINDOW_BYTES = 256 << 20
# Chunk reads wait on the disk, not on a core: keep this many in flight (16 MiB).
READS_IN_FLIGHT = 16
_ENDLESS = np.iinfo(np.int64).max


class DataOrder:
    """The order a run draws its images in (version 2; trainer.DATA_ORDER). Epoch e of a shard of
    chunks (store.py: runs of consecutive images, about 1 MiB each):

    1. the shard's chunks in the permutation drawn from the key (seed, shard, e, 0);
    2. cut into windows of `window_chunks` consecutive chunks of that permutation (the chunks
       of WINDOW_BYTES of images; the whole shard when it is that small);
    3. each window's images (its chunks', in that order) in the permutation drawn from
       (seed, shard, e, 1, window), and x-flipped (mirror=True) where a uniform draw from
       (seed, shard, e, 2, window) falls below 1/2, position by position;
    4. the windows one after the other; batches of B, the last N % B images of the epoch left
       out. The run's batch k is batch k mod (N // B) of epoch k // (N // B).

    The draws are TensorFlow's stateless ones (integer maths), the same on every CPU. What
    windows cost in randomness: images of one chunk are always drawn in the same window, and a
    batch comes from one window (sometimes two) of about WINDOW_BYTES rather than from the
    whole set; sets of at most WINDOW_BYTES (CIFAR-10 at 32 px) are not windowed at all."""

    def __init__(self, chunk_sizes, chunk_images, img_size, batch_size, seed, shard=0,
                 chunk_ids=None, window_bytes=WINDOW_BYTES):
        self.chunk_sizes = np.asarray(chunk_sizes, np.int64)  # this shard's chunks, in order
        self.chunk_ids = np.arange(len(chunk_sizes)) if chunk_ids is None else np.asarray(
            chunk_ids, np.int64)  # their indices in the store
        self.chunk_images, self.batch_size = chunk_images, batch_size
        self.num_images = int(self.chunk_sizes.sum())
        self.batches_per_epoch = self.num_images // batch_size
        # At most the shard's chunks: the same windows, and tf.data's ragged_batch sized to them.
        self.window_chunks = max(1, min(len(self.chunk_sizes), window_bytes // (
            chunk_images * img_size * img_size * 3)))
        # No seed: a fresh one, so that unseeded runs still differ.
        seed = np.random.SeedSequence().entropy if seed is None else seed
        self.seed, self.shard = int(seed) % 2 ** 63, int(shard)
        self._items = {}  # epoch -> its items, for the last two epochs asked (tests, start)

    # -------------------------------------------------------------- the draws (TensorFlow ops)
    def key(self, *parts):
        """The stateless seed (2,) int64 of (seed, shard, *parts)."""
        key = tf.constant([self.seed, self.shard], tf.int64)
        for part in parts:
            key = tf.random.experimental.stateless_fold_in(key, tf.cast(part, tf.int64))
        return key

    def chunk_permutation(self, epoch):
        """int64 (C,): this shard's chunks (0 .. C - 1) in the order epoch `epoch` reads them."""
        return tf.random.experimental.stateless_shuffle(
            tf.range(len(self.chunk_sizes), dtype=tf.int64), self.key(epoch, 0))

    def window_permutation(self, epoch, window, size):
        """int64 (size,): the order of a window's `size` images."""
        return tf.random.experimental.stateless_shuffle(tf.range(size, dtype=tf.int64),
                                                        self.key(epoch, 1, window))

    def window_flips(self, epoch, window, size):
        """bool (size,): which images of a window, in its drawn order, are x-flipped."""
        return tf.random.stateless_uniform([size], self.key(epoch, 2, window)) < 0.5

    # -------------------------------------------------------------- the order, in numpy
    def windows(self, epoch):
        """This shard's chunk indices of each window of `epoch`, window by window."""
        permutation = self.chunk_permutation(epoch).numpy()
        step = self.window_chunks
        return [permutation[start:start + step] for start in range(0, len(permutation), step)]

    def epoch_items(self, epoch):
        """int64 (N,): store indices of the images `epoch` draws, in order, and bool (N,): which
        are flipped (mirror=True). What TrainingImages.dataset yields, computed another way."""
        if epoch in self._items:
            self._items[epoch] = self._items.pop(epoch)  # the newest last
        else:
            starts = self.chunk_ids * self.chunk_images
            items, flips = [], []
            for window, chunks in enumerate(self.windows(epoch)):
                members = np.concatenate([np.arange(starts[chunk], starts[chunk] +
                                                    self.chunk_sizes[chunk]) for chunk in chunks])
                items.append(members[self.window_permutation(epoch, window, len(members)).numpy()])
                flips.append(self.window_flips(epoch, window, len(members)).numpy())
            self._items[epoch] = (np.concatenate(items), np.concatenate(flips))
            while len(self._items) > 2:
                del self._items[next(iter(self._items))]
        return self._items[epoch]

    def batch(self, step):
        """(store indices (B,), flips (B,)) of the run's batch `step`."""
        epoch, index = divmod(int(step), self.batches_per_epoch)
        items, flips = self.epoch_items(epoch)
        span = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return items[span], flips[span]

    def start(self, step):
        """Where the run's batch `step` starts: (epoch, its window, images of that window before
        it, images the epoch still draws from there)."""
        epoch, index = divmod(int(step), self.batches_per_epoch)
        offset = index * self.batch_size
        window_sizes = [int(self.chunk_sizes[chunks].sum()) for chunks in self.windows(epoch)]
        ends = np.cumsum(window_sizes)
        window = int(np.searchsorted(ends, offset, side='right'))
        before = int(ends[window - 1]) if window else 0
        return epoch, window, offset - before, self.batches_per_epoch * self.batch_size - offset


class _StoreChunks:
    """Chunks read from a pixel store's files by TensorFlow: no Python per chunk or image.
    `labels`: the class of each of its images (int32), or None."""

    def __init__(self, pixel_store, labels=None):
        self.img_size, self.chunk_images = pixel_store.img_size, pixel_store.chunk_images
        self.chunk_sizes, self.labels = pixel_store.chunk_sizes, labels
        self._paths = tf.constant(pixel_store.chunk_paths)

    def read(self, index):
        size = self.img_size
        raw = tf.io.decode_raw(tf.io.read_file(tf.gather(self._paths, index)), tf.uint8)
        return tf.reshape(raw, [-1, size, size, 3])


class _ArrayChunks:
    """Chunks of images decoded into memory, cut as a store of the same files would be (one
    Python call per chunk, which slices the array)."""

    def __init__(self, images, chunk_images, labels=None):
        self.images, self.img_size, self.chunk_images = images, images.shape[1], chunk_images
        self.chunk_sizes = [min(chunk_images, len(images) - start)
                            for start in range(0, len(images), chunk_images)]
        self.labels = labels

    def read(self, index):
        def chunk(i):
            return self.images[i * self.chunk_images:(i + 1) * self.chunk_images]
        images = tf.numpy_function(chunk, [index], tf.uint8, stateful=False)
        images.set_shape([None, self.img_size, self.img_size, 3])
        return images


def _no_labels(file_pattern):
    return UserError(f'{file_pattern} has no class labels, which conditional=True needs: prepare '
                     'it with them (prepare.py: CIFAR-10\'s, --labels folders, or a source\'s '
                     'dataset.json) or give a folder of class subfolders')


def _folder_labels(file_pattern, files):
    """(label of each file, class names) from the class subfolders of the folder file_pattern."""
    if not isinstance(file_pattern, (str, os.PathLike)) or not os.path.isdir(file_pattern):
        raise _no_labels(file_pattern)
    names = [os.path.relpath(path, file_pattern) for path in files]
    if all(sources.class_of(name) is None for name in names):
        raise _no_labels(file_pattern)
    return sources.labels_from_folders(names, file_pattern)


def labels_of_files(file_pattern, files, class_names=None):
    """int32: the class of each of `files`, images of the labelled training set file_pattern
    (a prepared set's, by their index in its layout; a folder's, by their class subfolder).
    UserError when the set's classes are not `class_names` (a run's, when it records them):
    its class indices would name other classes than the run's."""
    names, _ = class_counts(file_pattern)
    if class_names is not None and list(names) != list(class_names):
        shown = ', '.join(names[:10]) + (', ...' if len(names) > 10 else '')
        raise UserError(f'{file_pattern} has the classes {shown} ({len(names)}), not the '
                        f'{len(class_names)} the run was trained on: score a conditional run '
                        'against a labelled set of its own classes')
    if store.is_prepared(file_pattern):
        labels = store.prepared_store_labels(file_pattern)
        if labels is None:
            raise _no_labels(file_pattern)
        return labels[[int(os.path.basename(path)[3:-4]) for path in files]]
    index = {name: position for position, name in enumerate(names)}
    return np.asarray([index[sources.class_of(os.path.relpath(path, file_pattern))]
                       for path in files], np.int32)


def class_counts(file_pattern):
    """(class names, images of each class) of a training set with labels: a prepared set's, or
    a folder's class subfolders (counted over its files); UserError in one sentence without."""
    if store.is_prepared(file_pattern):
        labels = store.prepared_store_labels(file_pattern)
        if labels is None:
            raise _no_labels(file_pattern)
        names = store.read_prepared(file_pattern)['labels']['class_names']
        return names, np.bincount(labels, minlength=len(names))
    labels, names = _folder_labels(file_pattern, data.list_image_files(file_pattern))
    return names, np.bincount(labels, minlength=len(names))


def open_images(file_pattern, img_size, center_crop=False, cache=True, labels=False):
    """(chunks, what they are) of a run's training images: a prepared set's pixel store; for
    image files, the image cache's store of them (decoded on first use), or with cache=False
    the files decoded into memory now. With labels, the chunks carry each image's class."""
    if store.is_prepared(file_pattern):
        pixels = store.prepared_store(file_pattern, img_size, center_crop)
        if labels and pixels.labels is None:
            raise _no_labels(file_pattern)
        return (_StoreChunks(pixels, pixels.labels if labels else None),
                f'read from the prepared set {file_pattern}')
    files = data.list_image_files(file_pattern)
    file_labels = np.asarray(_folder_labels(file_pattern, files)[0], np.int32) if labels else None
    if cache:
        pixels = store.cached_store(files, img_size, center_crop)
        skipped = pixels.meta.get('skipped_count', 0)
        kept = np.ones(len(files), bool)
        kept[pixels.meta.get('skipped_indices', [])] = False
        if file_labels is not None and kept.sum() != pixels.count:  # a cache from 109cfb6
            raise UserError(f'the image cache {pixels.folder} does not record which of its files '
                            'did not decode, so their labels cannot follow them: delete it (it '
                            'is made again on the next start)')
        note = f'; {skipped} of {len(files)} files did not decode' if skipped else ''
        return (_StoreChunks(pixels, None if file_labels is None else file_labels[kept]),
                f'read from the image cache {pixels.folder} ({pixels.nbytes / 1e6:,.1f} MB{note})')
    need = len(files) * img_size * img_size * 3
    if need > data.available_memory_bytes() // 2:
        raise UserError(f'{len(files):,} images at {img_size} px take {need / 1e9:.1f} GB, more '
                        'than half the memory available: leave the image cache on (it streams '
                        'from disk) or prepare the set with prepare.py')
    images, kept_files = data.load_image_array(files, img_size, center_crop, return_files=True)
    kept_labels = None
    if file_labels is not None:
        index = {path: position for position, path in enumerate(files)}
        kept_labels = file_labels[[index[path] for path in kept_files]]
    return (_ArrayChunks(images, store.chunk_length(len(files), img_size), kept_labels),
            'decoded into memory (--no_data_cache)')


class TrainingImages:
    """A run's training images and their order (DataOrder). `dataset(start_batch)` is the
    endless stream of uint8 batches (batch_size, S, S, 3) from the run's batch `start_batch` on
    (with labels=True, pairs of them and their int32 classes): a resumed run asks for its step.
    num_shards / shard_index keep every num_shards-th chunk (a multi-worker run: each worker
    reads its own chunks, in its own order, step by step).
    mirror=True flips each drawn image horizontally with probability 1/2. `window_bytes` is
    the order's (DataOrder; runs take the default, small sets are one window). `replicas`: how
    many replicas the stream feeds, one batch each a step (only said in the summary line)."""

    def __init__(self, file_pattern, img_size, batch_size, center_crop=False, seed=None,
                 num_shards=1, shard_index=0, mirror=False, cache=True, window_bytes=WINDOW_BYTES,
                 labels=False, replicas=1):
        self.img_size = data.check_positive_int(img_size, 'img_size')
        self.batch_size = data.check_positive_int(batch_size, 'batch_size')
        num_shards = data.check_positive_int(num_shards, 'num_shards')
        if isinstance(shard_index, bool) or not isinstance(shard_index, (int, np.integer)) or not (
                0 <= shard_index < num_shards):
            raise UserError(f'shard_index={shard_index!r} is not allowed; it must be an integer in '
                            f'[0, {num_shards - 1}] for num_shards={num_shards}.')
        self.mirror = mirror
        self.chunks, source = open_images(file_pattern, img_size, center_crop, cache, labels)
        self.labels = None if self.chunks.labels is None else tf.constant(self.chunks.labels,
                                                                           tf.int32)
        chunk_ids = np.arange(len(self.chunks.chunk_sizes))[shard_index::num_shards]
        if not len(chunk_ids):
            raise UserError(f'{file_pattern} has {len(self.chunks.chunk_sizes)} chunks of images, '
                            f'fewer than the {num_shards} input pipelines of this run')
        self.order = DataOrder(np.asarray(self.chunks.chunk_sizes)[chunk_ids],
                               self.chunks.chunk_images, img_size, batch_size, seed,
                               shard_index, chunk_ids, window_bytes)
        self.num_images = self.order.num_images
        _check_enough_images(self.num_images, batch_size, file_pattern)
        self._chunk_ids = tf.constant(chunk_ids, tf.int64)
        order = self.order
        window_images = min(order.window_chunks * order.chunk_images, self.num_images)
        shard_note = f' (shard {shard_index} of {num_shards})' if num_shards > 1 else ''
        replica_note = f' (one per replica, {replicas} a step)' if replicas > 1 else ''
        print(f'Train dataset: {self.num_images:,} images{shard_note}, '
              f'{order.batches_per_epoch:,} batches of {batch_size} per epoch{replica_note}, '
              'shuffled '
              + ('as one window' if window_images == self.num_images else
                 f'in windows of {window_images:,}') + f'; {source}.')

    def _epoch(self, epoch, first_window=0, skip=0, take=None):
        """The images of `epoch` in the run's order from window `first_window` on, the first
        `skip` of it left out, `take` of them (default: all the epoch draws)."""
        order = self.order
        per_window = order.window_chunks
        chunk_ids = tf.gather(self._chunk_ids, order.chunk_permutation(epoch))
        chunks = tf.data.Dataset.from_tensor_slices(chunk_ids[first_window * per_window:]).map(
            self._read, num_parallel_calls=READS_IN_FLIGHT, deterministic=True)
        windows = tf.data.Dataset.zip(tf.data.Dataset.range(first_window, _ENDLESS),
                                      chunks.ragged_batch(per_window))

        def shuffle(window, ragged):
            # (n, S, S, 3) and (n,): the window's chunks, one after the other.
            window_items = {name: value.values for name, value in ragged.items()}
            size = tf.shape(window_items['images'], out_type=tf.int64)[0]
            permutation = order.window_permutation(epoch, window, size)
            window_items = {name: tf.gather(value, permutation)
                            for name, value in window_items.items()}  # labels travel along
            if self.mirror:
                flips = order.window_flips(epoch, window, size)[:, None, None, None]
                window_items['images'] = tf.where(flips, tf.reverse(window_items['images'], [2]),
                                                  window_items['images'])
            return window_items
        take = order.batches_per_epoch * self.batch_size if take is None else take
        return windows.map(shuffle, num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=True).unbatch().skip(skip).take(take)

    def _read(self, chunk):
        """{'images': uint8 (n, S, S, 3)[, 'labels': int32 (n,)]} of one chunk of the store."""
        items = {'images': self.chunks.read(chunk)}
        if self.labels is not None:
            first = chunk * self.chunks.chunk_images
            items['labels'] = self.labels[first:first + tf.shape(items['images'],
                                                                  out_type=tf.int64)[0]]
        return items

    def dataset(self, start_batch=0):
        """uint8 batches start_batch, start_batch + 1, ... of the run (with their labels),
        prefetched."""
        epoch, window, skip, take = self.order.start(start_batch)
        later = tf.data.Dataset.range(epoch + 1, _ENDLESS).flat_map(self._epoch)
        dataset = self._epoch(epoch, window, skip, take).concatenate(later)
        dataset = dataset.batch(self.batch_size, drop_remainder=True).map(
            lambda items: (items['images'], items['labels']) if 'labels' in items
            else items['images']).prefetch(tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.deterministic = True
        # Sharding is done above by chunk (num_shards / shard_index), not by tf.distribute.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options)


def _check_enough_images(num_images, batch_size, file_pattern):
    if num_images < batch_size:
        raise UserError(f'The dataset {str(file_pattern)!r} has {num_images} usable images, fewer '
                        f'than batch_size={batch_size}; use a smaller batch size or more images.')


def check_train_images(file_pattern, img_size, batch_size, center_crop=False):
    """Cheap up-front check of a training set (exists, fits the config, a sample decodes,
    enough images), so a CLI can refuse bad input before it creates anything; raises UserError."""
    if store.is_prepared(file_pattern):
        count = store.prepared_store(file_pattern, img_size, center_crop).count
    else:
        files = data.list_image_files(file_pattern)
        # Decodable first: a folder of 9 corrupt files has no usable image, not "9, too few".
        data.check_some_decodable(files, img_size, center_crop)
        count = len(files)
    if count < batch_size:
        raise UserError(f'The dataset {str(file_pattern)!r} has {count} images, fewer than '
                        f'batch_size={batch_size}; use a smaller batch size or more images.')
