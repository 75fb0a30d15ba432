"""The pixel store: a set's uint8 images on disk, in chunks that training reads without decoding.

    store.open_store('data/ffhq_128/pixels')                 # a prepared set's (prepare.py)
    store.cached_store(files, 64)                            # an image folder's, built on first use

A store is a folder: `store.json` and `chunk-000000.u8`, `chunk-000001.u8`, ...: the images in
order, `chunk_images` to a chunk (the last one may hold fewer), each image S*S*3 bytes (rows,
columns, RGB). A chunk holds about 1 MiB of pixels: read whole, in an order drawn afresh every
epoch (batches.py), chunks stream at the disk's sequential speed rather than its speed for small
random reads, and a worker of a multi-worker run reads only its own chunks. `labels.npy` (int32,
one per image) is there when the set has class labels.

prepare.py writes a store into every prepared set (DEST/pixels/, described by DEST/prepare.json,
which `prepared_store` checks against the run's config). For any other image folder, the first
run decodes it into the image cache (`cached_store`: config.cache_dir('image-cache'), one store
per file list, image size and crop), so that later runs and resumes start without decoding.
"""
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

import data
from config import UserError
from config import cache_dir as ladagan_cache_dir


FORMAT, VERSION = 'ladagan-pixels', 1
META = 'store.json'
CHUNK_BYTES = 1 << 20
# Sets this small or smaller still get this many chunks, so that as many workers get one each.
MIN_CHUNKS = 64
PREPARED_META = 'prepare.json'  # a prepared set's description (prepare.py), beside pixels/
PREPARED_PIXELS = 'pixels'
PREPARED_STATS = 'fid-stats.npz'  # its FID reference statistics (prepare.py --stats)
# Bump when the cache's decoding changes: a cache of the old decoding is then not read.
CACHE_VERSION = 1


def chunk_length(num_images, img_size):
    """Images per chunk of a store of `num_images` at `img_size`: about CHUNK_BYTES of pixels,
    and few enough that the set has MIN_CHUNKS chunks where it has that many images. A function
    of the two alone: images decoded into memory are chunked as a store of them would be."""
    image_bytes = img_size * img_size * 3
    return max(1, min(CHUNK_BYTES // image_bytes, -(-num_images // MIN_CHUNKS)))


def chunk_name(index):
    return f'chunk-{index:06d}.u8'


class StoreWriter:
    """Writes images one at a time into `folder` (new or empty; callers write into a temporary
    folder and rename it, so that a store is whole or absent), a chunk file each time one
    fills. `expected` is the number of images the source holds, which fixes the chunk length;
    fewer may come (files that do not decode)."""

    def __init__(self, folder, img_size, expected, with_labels=False):
        os.makedirs(folder, exist_ok=True)
        self.folder, self.img_size = folder, img_size
        self.chunk_images = chunk_length(expected, img_size)
        self.pending = []  # images of the chunk being filled
        self.count = self.chunks = 0
        self.labels = [] if with_labels else None

    def add(self, pixels, label=None):
        """Append one (S, S, 3) uint8 image (and its class when the store has labels)."""
        if pixels.shape != (self.img_size, self.img_size, 3) or pixels.dtype != np.uint8:
            raise ValueError(f'a store of {self.img_size} px images got {pixels.dtype} '
                             f'{pixels.shape}')
        self.pending.append(pixels)
        if self.labels is not None:
            self.labels.append(label)
        self.count += 1
        if len(self.pending) == self.chunk_images:
            self._write_chunk()

    def _write_chunk(self):
        with open(os.path.join(self.folder, chunk_name(self.chunks)), 'wb') as f:
            f.write(np.stack(self.pending).tobytes())
        self.pending = []
        self.chunks += 1

    def close(self, **extra):
        """Write the last chunk and store.json (with `extra` keys); returns the store's meta."""
        if self.pending:
            self._write_chunk()
        if self.count == 0:
            raise UserError('No image could be written to the store: none decoded.')
        if self.labels is not None:
            np.save(os.path.join(self.folder, 'labels.npy'), np.asarray(self.labels, np.int32))
        meta = dict(format=FORMAT, version=VERSION, img_size=self.img_size, count=self.count,
                    chunk_images=self.chunk_images, chunks=self.chunks,
                    labels=self.labels is not None, **extra)
        with open(os.path.join(self.folder, META), 'w') as f:
            json.dump(meta, f, indent=1)
            f.write('\n')
        return meta


class Store:
    """A pixel store on disk, checked whole when opened: its description, every chunk file at
    its size. `chunk_paths` and `chunk_sizes` are what the input pipeline reads."""

    def __init__(self, folder):
        self.folder = folder
        path = os.path.join(folder, META)
        try:
            with open(path) as f:
                meta = json.load(f)
            if not isinstance(meta, dict) or meta.get('format') != FORMAT:
                raise ValueError(f'not a {FORMAT} description')
            if meta.get('version') != VERSION:
                raise ValueError(f'version {meta.get("version")}; this code reads {VERSION}')
            self.img_size, self.count = int(meta['img_size']), int(meta['count'])
            self.chunk_images, chunks = int(meta['chunk_images']), int(meta['chunks'])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f'{path} does not describe a pixel store ({err}); prepare the set '
                            'again (prepare.py) or delete the folder') from None
        self.meta = meta
        image_bytes = self.img_size * self.img_size * 3
        self.chunk_sizes = [min(self.chunk_images, self.count - index * self.chunk_images)
                            for index in range(chunks)]
        self.chunk_paths = [os.path.join(folder, chunk_name(index)) for index in range(chunks)]
        if chunks != -(-self.count // self.chunk_images):
            raise UserError(f'{path} says {chunks} chunks of {self.chunk_images} hold '
                            f'{self.count} images, which does not add up; prepare the set again')
        for chunk_path, size in zip(self.chunk_paths, self.chunk_sizes):
            try:
                found = os.path.getsize(chunk_path)
            except OSError:
                found = None
            if found != size * image_bytes:
                what = 'is missing' if found is None else f'holds {found} bytes, not {size * image_bytes}'
                raise UserError(f'The pixel store {folder} is damaged: {chunk_path} {what}; '
                                'prepare the set again (or delete the folder)')
        labels_path = os.path.join(folder, 'labels.npy')
        self.labels = np.load(labels_path) if meta.get('labels') else None
        if self.labels is not None and self.labels.shape != (self.count,):
            raise UserError(f'{labels_path} holds {self.labels.shape} labels for {self.count} '
                            'images; prepare the set again')

    @property
    def nbytes(self):
        return self.count * self.img_size * self.img_size * 3

    def read(self, start=0, stop=None):
        """uint8 (n, S, S, 3): images start .. stop - 1, read from their chunks."""
        stop = self.count if stop is None else min(stop, self.count)
        size, parts = self.img_size, []
        for index in range(start // self.chunk_images, -(-stop // self.chunk_images)):
            first = index * self.chunk_images
            chunk = np.fromfile(self.chunk_paths[index], np.uint8).reshape(-1, size, size, 3)
            parts.append(chunk[max(start - first, 0):stop - first])
        return np.concatenate(parts) if parts else np.empty((0, size, size, 3), np.uint8)


def open_store(folder):
    """The Store in `folder`; UserError in one sentence when it is not a whole one."""
    return Store(folder)


# ---------------------------------------------------------------- prepared sets

def is_prepared(path):
    """Whether `path` is a folder written by prepare.py."""
    return os.path.isfile(os.path.join(str(path), PREPARED_META))


def read_prepared(folder):
    """A prepared set's prepare.json, or UserError in one sentence."""
    path = os.path.join(folder, PREPARED_META)
    try:
        with open(path) as f:
            meta = json.load(f)
        if not isinstance(meta, dict) or not isinstance(meta.get('img_size'), int):
            raise ValueError('no img_size')
    except (OSError, ValueError) as err:
        raise UserError(f'{path} is not a readable description of a prepared set ({err}); '
                        'prepare the set again') from None
    return meta


def prepared_store(folder, img_size, center_crop):
    """The pixel store of the prepared set in `folder`, checked against the run's config: a set
    is used at the size it was prepared at, and `center_crop=True` (crop, then resize) only
    with a set prepared with that crop."""
    meta = read_prepared(folder)
    if meta['img_size'] != img_size:
        raise UserError(f'{folder} was prepared at {meta["img_size"]} px but the run trains at '
                        f'img_size {img_size}: prepare the set again with --img_size {img_size} '
                        'into another folder, or train at its size')
    if center_crop and meta.get('transform') != 'center-crop':
        raise UserError(f'center_crop=True asks to crop images, but {folder} was prepared with '
                        f'--transform {meta.get("transform")}: its images are used as prepared; '
                        'leave center_crop out, or prepare the set with --transform center-crop')
    return open_store(os.path.join(folder, PREPARED_PIXELS))


def prepared_store_labels(folder):
    """The class of each image of a prepared set (int32), or None when it has no labels."""
    path = os.path.join(folder, PREPARED_PIXELS, 'labels.npy')
    return np.load(path) if os.path.isfile(path) else None


def layout_name(index):
    """A prepared set's PNG of image `index`: NVIDIA's dataset_tool.py layout, 1,000 a folder."""
    name = f'{index:08d}'
    return f'{name[:5]}/img{name}.png'


def image_files(source):
    """The image files of `source` in order: a prepared set's PNGs named from its prepare.json
    (no walk over what may be millions of files), else data.list_image_files(source)."""
    if is_prepared(source):
        return [os.path.join(source, layout_name(index))
                for index in range(read_prepared(source)['count'])]
    return data.list_image_files(source)


def prepared_statistics(path):
    """(statistics file, images it covers) of a prepared set written with --stats, else None."""
    if not is_prepared(path):
        return None
    stats = read_prepared(path).get('stats')
    stats_path = os.path.join(path, PREPARED_STATS)
    if not stats or not os.path.isfile(stats_path):
        return None
    return stats_path, stats.get('images')


# ---------------------------------------------------------------- the image cache

def cache_key(files, img_size, center_crop):
    """What a cached store depends on: the files' names, sizes and modification times
    (data.dataset_fingerprint), the size, the crop and the decoding's version."""
    description = dict(version=CACHE_VERSION, files=data.dataset_fingerprint(files),
                       count=len(files), img_size=img_size, center_crop=bool(center_crop))
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


def cache_folder(files, img_size, center_crop):
    """Where the image cache keeps the store of these files at this size and crop."""
    common = os.path.commonpath([os.path.abspath(path) for path in files])
    name = os.path.basename(common if os.path.isdir(common) else os.path.dirname(common)) or 'images'
    crop = '-crop' if center_crop else ''
    return ladagan_cache_dir('image-cache', f'{name}-{img_size}px{crop}-'
                                            f'{cache_key(files, img_size, center_crop)}')


def free_bytes(folder):
    """Free bytes on the file system that holds `folder` (or would hold it)."""
    while not os.path.exists(folder):
        folder = os.path.dirname(folder) or '.'
    return shutil.disk_usage(folder).free


def cached_store(files, img_size, center_crop=False, show_progress=True):
    """The store of image `files` decoded at `img_size` (data.decode_image), from the image
    cache; the first call decodes them into it (about S*S*3 bytes an image; refused, before
    anything is written, where the disk lacks the room). Files that do not decode are left out,
    as they are when decoded into memory, with one warning when the cache is made."""
    folder = cache_folder(files, img_size, center_crop)
    if os.path.isfile(os.path.join(folder, META)):
        try:
            return open_store(folder)
        except UserError as err:  # a damaged cache is rebuilt
            print(f'notice: rebuilding the image cache: {err}')
            shutil.rmtree(folder, ignore_errors=True)
    need = len(files) * img_size * img_size * 3
    parent = os.path.dirname(folder)
    if free_bytes(parent) < need:
        raise UserError(f'The image cache needs {need / 1e9:.2f} GB in {parent} for these '
                        f'{len(files):,} images at {img_size} px, more than the disk has free: '
                        'point LADAGAN_CACHE_DIR at a larger disk, or train with --no_data_cache')
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix='.building-', dir=parent)
    try:
        writer = StoreWriter(temporary, img_size, len(files))
        skipped = []
        for path, pixels, error in data.decoded_images(
                files, img_size, center_crop, show_progress=show_progress,
                desc=f'Decoding images at {img_size}px into the image cache'):
            if pixels is None:
                skipped.append((path, error))
            else:
                writer.add(pixels)
        if writer.count == 0:
            raise UserError(f'None of the {len(files)} image files could be decoded '
                            f'(e.g. {skipped[0][0]!r}: {skipped[0][1]}).')
        data.warn_skipped(skipped, len(files))
        skipped_paths = {path for path, _ in skipped}
        writer.close(files=len(files), skipped=[path for path, _ in skipped[:20]],
                     skipped_count=len(skipped),
                     skipped_indices=[i for i, path in enumerate(files) if path in skipped_paths])
        try:
            os.rename(temporary, folder)
        except OSError:  # another process (a worker of the same run) made it first
            if not os.path.isfile(os.path.join(folder, META)):
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return open_store(folder)
