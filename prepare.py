"""Prepare a data set once: images at the training size, in NVIDIA's layout, with their labels,
the uint8 pixels training reads without decoding, and optionally the FID reference statistics.

    python3 prepare.py --dataset cifar10 --dest data/cifar10 --stats      # downloads the archive
    python3 prepare.py --dataset celeba_64 --source img_align_celeba --dest data/celeba_64 --stats
    python3 prepare.py --dataset ffhq_128 --source images1024x1024 --dest data/ffhq_128 --stats
    python3 prepare.py --dataset bedroom_128 --source bedroom_train_lmdb --dest data/bedroom_128
    python3 prepare.py --source my_images --img_size 64 --transform center-crop --filter lanczos \\
        --labels folders --dest data/my_images

DEST holds 00000/img00000000.png, ... (the layout of NVIDIA's dataset_tool.py, which
pytorch-fid, clean-fid and NVIDIA's tools read), dataset.json ({"labels": [[file, class], ...]}
or null, and "class_names"), pixels/ (store.py), prepare.json (what was done, from what) and,
with --stats, fid-stats.npz. It is written into a temporary folder beside DEST and renamed at
the end: an interrupted or failed prepare leaves nothing. docs/datasets.md says where each
download comes from and why each --dataset does what it does.
"""
import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import numpy as np
from PIL import Image
from tqdm import tqdm

import cli
import config
import data
import sources
import store
from config import UserError

VERSION = 1
TRANSFORMS = ('squash', 'center-crop', 'celeba-ddim', 'center-crop-dhariwal')
FILTERS = ('bilinear', 'box', 'lanczos')
# The 128x128 face box of DDIM's (and NCSN's) CelebA 64: rows 57-184, columns 25-152 of the
# 178x218 aligned images (centre x 89, y 121), then resized to 64.
CELEBA_DDIM_BOX = (57, 25, 128)  # top, left, side
CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
CIFAR10_MD5 = 'c58f30108f718f92721af3b95e74349a'

# What the paper did, as far as the paper and the authors' code show it (docs/datasets.md):
# their loader squashes each image to a square with tf.image.resize's bilinear (no crop, no
# antialiasing); FFHQ's 128 px thumbnails need no resize, and from 1,024 px Lanczos comes
# closest to them.
DATASETS = {
    'cifar10': dict(img_size=32, transform='squash', filter='bilinear',
                    source='cifar-10-python.tar.gz (downloaded when --source is left out) or its '
                           'cifar-10-batches-py folder'),
    'celeba_64': dict(img_size=64, transform='squash', filter='bilinear',
                      source="CelebA's img_align_celeba folder (202,599 aligned 178x218 JPEGs) or "
                             'img_align_celeba.zip'),
    'ffhq_128': dict(img_size=128, transform='squash', filter='lanczos',
                     source="FFHQ's images1024x1024 or thumbnails128x128 folder (or zip)"),
    'bedroom_128': dict(img_size=128, transform='squash', filter='bilinear',
                        source="LSUN's bedroom_train_lmdb folder"),
}


# ---------------------------------------------------------------- transforms and filters

def resize(pixels, size, resize_filter):
    """(H, W, 3) uint8 -> (size, size, 3) uint8. 'bilinear': the authors' tf.image.resize
    (no antialias, data.resize_bilinear); 'box': the area average (Pillow's BOX in float, rounded
    once: a whole-number reduction gives each block's mean); 'lanczos': Pillow's LANCZOS on the
    8-bit image, as NVIDIA's dataset tool resizes."""
    if pixels.shape[:2] == (size, size):
        return pixels  # every filter keeps an image of the size as it is
    if resize_filter == 'bilinear':
        return np.clip(np.rint(data.resize_bilinear(pixels, size)), 0, 255).astype(np.uint8)
    if resize_filter == 'lanczos':
        return np.asarray(Image.fromarray(pixels).resize((size, size), Image.LANCZOS))
    channels = [np.asarray(Image.fromarray(pixels[:, :, channel].astype(np.float32), 'F').resize(
        (size, size), Image.BOX)) for channel in range(3)]
    return np.clip(np.rint(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)


def center_crop_dhariwal(pixels, size):
    """ADM's centre crop (guided-diffusion's center_crop_arr; center-crop-dhariwal of NVIDIA's
    EDM2 dataset tool): halve with Pillow's BOX while the short side is at least twice `size`,
    scale the short side to `size` with BICUBIC, then crop the centre."""
    image = Image.fromarray(pixels)
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(side // 2 for side in image.size), Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(side * scale) for side in image.size), Image.BICUBIC)
    resized = np.asarray(image)
    top, left = (resized.shape[0] - size) // 2, (resized.shape[1] - size) // 2
    return resized[top:top + size, left:left + size]


def transform_image(pixels, size, transform, resize_filter):
    """One decoded image (H, W, 3) uint8 -> (size, size, 3) uint8: cropped as `transform` says
    (squash: not at all), then resized with `resize_filter`."""
    if transform == 'center-crop-dhariwal':
        return center_crop_dhariwal(pixels, size)
    if transform == 'center-crop':
        pixels = data.center_square(pixels)
    elif transform == 'celeba-ddim':
        top, left, side = CELEBA_DDIM_BOX
        if pixels.shape[:2] != (218, 178):
            raise ValueError(f'celeba-ddim crops the 178x218 images of img_align_celeba, not '
                             f'{pixels.shape[1]}x{pixels.shape[0]}')
        pixels = pixels[top:top + side, left:left + side]
    return resize(pixels, size, resize_filter)


def _prepare_one(item, size, transform, resize_filter):
    """(pixels, PNG bytes, None) of one source item, or (None, None, why) when it fails."""
    try:
        pixels = transform_image(sources.decode(item), size, transform, resize_filter)
        png = BytesIO()
        Image.fromarray(pixels).save(png, 'PNG')
        return pixels, png.getvalue(), None
    except Exception as err:  # noqa: BLE001 - corrupt images raise many different types
        return None, None, f'{type(err).__name__}: {err}'


def _in_order(function, items, workers):
    """function(item) for each item, in order, on `workers` threads, a bounded number of items
    in flight (Pillow decodes, resizes and encodes without holding the GIL)."""
    pending = []
    with ThreadPoolExecutor(workers) as executor:
        for item in items:
            pending.append((item, executor.submit(function, item)))
            if len(pending) >= 4 * workers:
                first, future = pending.pop(0)
                yield first, future.result()
        for item, future in pending:
            yield item, future.result()


# ---------------------------------------------------------------- the prepared folder

def _estimate_bytes(count, size):
    """Disk a prepared set of `count` images takes at most: the pixels, and PNGs no larger."""
    return 2 * count * size * size * 3


def _check_destination(dest):
    if os.path.isfile(dest) or (os.path.isdir(dest) and os.listdir(dest)):
        raise UserError(f'--dest {dest} is not empty: give a new or empty folder (a prepared set '
                        'is never written over)')


def _remove_stale_partials(dest):
    """Remove what a prepare of `dest` killed outright (no chance to clean up) left behind."""
    parent, base = os.path.dirname(os.path.abspath(dest)), os.path.basename(os.path.abspath(dest))
    if not os.path.isdir(parent):
        return
    for name in os.listdir(parent):
        if name.startswith(f'.{base}.partial-'):
            pid = name.rsplit('-', 2)[-2]
            try:
                os.kill(int(pid), 0)
                continue  # its prepare is still running
            except (ValueError, ProcessLookupError):
                pass
            except PermissionError:
                continue
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            print(f'notice: removed {os.path.join(parent, name)}, left by a prepare that was killed')


def write_prepared(source, dest, size, transform, resize_filter, dataset=None, workers=None,
                   stats_num=None, max_images=None):
    """Prepare `source` (sources.Source) into `dest`; returns prepare.json's contents.
    stats_num: with a number, also the FID statistics of the first that many images (0: all)."""
    count = source.count if max_images is None else min(source.count, max_images)
    need = _estimate_bytes(count, size)
    parent = os.path.dirname(os.path.abspath(dest))
    print(f'Preparing {count:,} images of {source.path} at {size} px ({transform}, '
          f'{resize_filter}) into {dest}: at most {need / 1e9:.2f} GB on disk')
    free = store.free_bytes(parent)
    if free < need:
        raise UserError(f'{dest} would take up to {need / 1e9:.2f} GB but its disk has '
                        f'{free / 1e9:.2f} GB free: free some room or give another --dest')
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f'.{os.path.basename(os.path.abspath(dest))}.partial-'
                                        f'{os.getpid()}-', dir=parent)
    try:
        meta = _write(source, temporary, count, size, transform, resize_filter, dataset,
                      workers or data.default_workers(), stats_num)
        if os.path.isdir(dest):
            os.rmdir(dest)  # empty (checked): replaced by the prepared set
        os.rename(temporary, dest)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return meta


def check_sample(source, size, transform, resize_filter, sample_size=8):
    """Refuse, before anything is written, a source whose first images all fail to decode or
    to take the transform (celeba-ddim on images that are not CelebA's)."""
    errors = []
    for _, item in zip(range(sample_size), source.items()):
        pixels, _, error = _prepare_one(item, size, transform, resize_filter)
        if pixels is not None:
            return
        errors.append((item.name, error))
    raise UserError(f'None of the first {len(errors)} images of {source.path} can be prepared '
                    f'(e.g. {errors[0][0]!r}: {errors[0][1]})')


def _write(source, folder, count, size, transform, resize_filter, dataset, workers, stats_num):
    has_labels = source.class_names is not None
    writer = store.StoreWriter(os.path.join(folder, store.PREPARED_PIXELS), size, count,
                               with_labels=has_labels)
    labels, skipped = [], []
    items = (item for _, item in zip(range(count), source.items()))
    with tqdm(total=count, unit='img', desc='Preparing', dynamic_ncols=True) as bar:
        for item, (pixels, png, error) in _in_order(
                lambda item: _prepare_one(item, size, transform, resize_filter), items, workers):
            bar.update(1)
            if pixels is None:
                skipped.append((item.name, error))
                continue
            name = store.layout_name(writer.count)
            os.makedirs(os.path.join(folder, os.path.dirname(name)), exist_ok=True)
            with open(os.path.join(folder, name), 'wb') as f:
                f.write(png)
            if has_labels:
                labels.append([name, item.label])
            writer.add(pixels, item.label)
    if writer.count == 0:
        raise UserError(f'None of the {count:,} images of {source.path} could be prepared '
                        f'(e.g. {skipped[0][0]!r}: {skipped[0][1]})')
    if skipped:
        print(f'warning: {len(skipped)} of {count:,} images could not be prepared and were left '
              f'out (e.g. {skipped[0][0]!r}: {skipped[0][1]})')
    writer.close()
    with open(os.path.join(folder, 'dataset.json'), 'w') as f:
        json.dump({'labels': labels if has_labels else None,
                   **({'class_names': source.class_names} if has_labels else {})}, f)
    meta = dict(
        format='ladagan-prepared', version=VERSION, dataset=dataset,
        source=dict(path=os.path.abspath(source.path), kind=source.kind,
                    split=getattr(source, 'split', None), sha256=source.checksum(),
                    count=source.count),
        img_size=size, transform=transform, filter=resize_filter, count=writer.count,
        skipped=len(skipped), skipped_examples=[name for name, _ in skipped[:20]],
        labels=(dict(kind=source.label_kind, classes=len(source.class_names),
                     class_names=source.class_names) if has_labels else None),
        images="PNG, NVIDIA's dataset_tool.py layout (00000/img00000000.png, ...)",
        pixels=f'{store.PREPARED_PIXELS}/ (store.py)', stats=None)
    if stats_num is not None:
        meta['stats'] = write_statistics(folder, stats_num)
    with open(os.path.join(folder, store.PREPARED_META), 'w') as f:
        json.dump(meta, f, indent=1)
        f.write('\n')
    return meta


STATS_FILE = store.PREPARED_STATS


def write_statistics(folder, num=0):
    """FID reference statistics (standard Inception network) of the prepared set in `folder`,
    of its first `num` images (0: all), as fid.py --save_stats writes them; returns what
    prepare.json records of them."""
    cli.import_tensorflow_quietly()
    import distances
    import fid
    import inception
    pixels = store.open_store(os.path.join(folder, store.PREPARED_PIXELS))
    total = pixels.count if not num else min(num, pixels.count)
    if total < 2:
        raise UserError(f'FID statistics need at least 2 images; the set has {pixels.count}')
    extractor = inception.get_feature_extractor('standard')
    features = np.empty((total, inception.FEATURE_DIM), np.float32)
    step = 250
    with tqdm(total=total, unit='img', desc='FID statistics') as bar:
        for start in range(0, total, step):
            batch = pixels.read(start, min(start + step, total))
            for offset in range(0, len(batch), 50):
                part = batch[offset:offset + 50]
                features[start + offset:start + offset + len(part)] = extractor(part)
            bar.update(len(batch))
    mu, sigma = distances.activation_statistics(features)
    fid.save_statistics(os.path.join(folder, STATS_FILE), mu, sigma, backbone='standard',
                        n_images=total, reference='prepare.py', img_size=pixels.img_size)
    return dict(file=STATS_FILE, images=total, backbone='standard')


# ---------------------------------------------------------------- command line

def download_cifar10():
    """cifar-10-python.tar.gz from its home page into the cache (once), or UserError saying
    where to put it when there is no network."""
    cli.import_tensorflow_quietly()
    import keras
    folder = config.cache_dir('downloads')
    try:
        return keras.utils.get_file('cifar-10-python.tar.gz', CIFAR10_URL, file_hash=CIFAR10_MD5,
                                    cache_dir=os.path.dirname(folder),
                                    cache_subdir=os.path.basename(folder))
    except Exception as err:  # noqa: BLE001 - offline, refused, a proxy: keras raises Exception
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f'cifar-10-python.tar.gz could not be downloaded from {CIFAR10_URL} '
                        f'({reason}): download it where there is a network and pass --source '
                        f'PATH, or put it at {os.path.join(folder, "cifar-10-python.tar.gz")}') \
            from None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Prepare a data set for training (and FID) once.',
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n')[1])
    parser.add_argument('--dataset', choices=DATASETS,
                        help="the paper's data sets: img_size, transform and filter as the paper "
                             'did, as far as it and the authors\' code show (docs/datasets.md)')
    parser.add_argument('--source', help='an image folder (searched recursively), a .zip, '
                        "CIFAR-10's cifar-10-python.tar.gz or folder, or an LSUN lmdb folder")
    parser.add_argument('--dest', required=True, help='the prepared set\'s folder (new or empty)')
    parser.add_argument('--img_size', type=int, help='training resolution (32, 64, 128 or 256)')
    parser.add_argument('--transform', choices=TRANSFORMS,
                        help='squash (the authors\' code), center-crop, celeba-ddim (DDIM\'s '
                             'CelebA face box), center-crop-dhariwal (ADM\'s); default squash')
    parser.add_argument('--filter', dest='resize_filter', choices=FILTERS,
                        help="bilinear (the authors' tf.image.resize, no antialias), box, or "
                             'lanczos (NVIDIA\'s tool); default bilinear')
    parser.add_argument('--labels', default='auto', choices=sources.LABEL_KINDS,
                        help="auto: CIFAR-10's, or the source's dataset.json (NVIDIA's format) "
                             'where it has labels; folders: class subfolders; none')
    parser.add_argument('--split', default='train', choices=sources.CIFAR10_SPLITS,
                        help='CIFAR-10: train (50,000) or test (10,000)')
    parser.add_argument('--max_images', type=int, help='prepare only the first N images')
    parser.add_argument('--stats', action='store_true',
                        help=f'also write {STATS_FILE}: FID reference statistics of the set '
                             '(fid.py --model_dir RUN uses them)')
    parser.add_argument('--stats_num', type=int, default=0,
                        help='statistics of the first N images only (default 0: all)')
    parser.add_argument('--workers', type=int, help='decoding threads (default 2 per core)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        preset = DATASETS.get(args.dataset, {})
        size = args.img_size or preset.get('img_size')
        transform = args.transform or preset.get('transform', 'squash')
        resize_filter = args.resize_filter or preset.get('filter', 'bilinear')
        if size not in config.IMG_SIZES:
            raise UserError(f'--img_size {size} is not allowed: give one of '
                            f'{", ".join(map(str, config.IMG_SIZES))} (or a --dataset)')
        if args.resize_filter and transform == 'center-crop-dhariwal':
            raise UserError('--filter does not apply to --transform center-crop-dhariwal, which '
                            'resizes as ADM does (box halvings, then bicubic); leave it out')
        for name in ('max_images', 'workers'):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise UserError(f'--{name} {value} is not allowed: give a positive number')
        if args.stats_num < 0:
            raise UserError(f'--stats_num {args.stats_num} is not allowed: 0 (all) or more')
        _check_destination(args.dest)
        source_path = args.source
        if source_path is None:
            if args.dataset != 'cifar10':
                where = preset.get('source', 'an image folder, a .zip or an lmdb folder')
                raise UserError(f'--source is needed: {where}')
            source_path = download_cifar10()
        if args.stats:
            cli.import_tensorflow_quietly()
            import fid_weights
            fid_weights.resolve_inception_weights(download=True)  # before the work, not after
        source = sources.open_source(source_path, args.split, args.labels)
        check_sample(source, size, transform, resize_filter)
        _remove_stale_partials(args.dest)
        previous = {sig: signal.signal(sig, _interrupted) for sig in (signal.SIGTERM,)}
        try:
            meta = write_prepared(source, args.dest, size, transform, resize_filter,
                                  args.dataset, args.workers,
                                  args.stats_num if args.stats else None, args.max_images)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    except UserError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'Interrupted: nothing was written to {args.dest}', file=sys.stderr)
        return 130
    labels = meta['labels']
    print(f'Prepared {meta["count"]:,} images into {args.dest}'
          + (f' with {labels["classes"]} classes' if labels else '')
          + (f'; FID statistics of {meta["stats"]["images"]:,} in '
             f'{os.path.join(args.dest, STATS_FILE)}' if meta['stats'] else ''))
    return 0


def _interrupted(signum, frame):
    raise KeyboardInterrupt


if __name__ == '__main__':
    sys.exit(main())
