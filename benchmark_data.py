"""benchmark.py --only data: what the training data costs at the paper's sizes (128 px).

- prepare: prepare.py's images/s from 1,024 px PNGs to 128 px with Lanczos (--dataset
  ffhq_128 from FFHQ's images1024x1024), on synthetic photo-like PNGs of FFHQ's file size;
- start-up: a fresh process, TensorFlow's import included, to the first batch of a 70,000-image
  set at 128 px (FFHQ's size), its pixels read cold: from a prepared set, and from a folder of
  70,000 PNGs whose image cache exists (listing and fingerprinting 70,000 files included); and
  train.py itself to its first batch with the ffhq_128 preset (building its networks included,
  compiling its step not). The images are synthetic: start-up reads names, sizes and the first
  window of pixels, never what they show. The first use of a PNG folder decodes it into the
  cache: that time is the decoding rate of 128 px PNGs times 70,000;
- streaming: the input pipeline's images/s over the same 70,000 images read cold (evicted from
  the page cache with posix_fadvise), in the run's order, beside the disk's own sequential rate
  over the same chunk files.

--quick uses 1,000 images (the suite's check), not 70,000.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.abspath(__file__))
SIZE = 128


def _photo(size, seed):
    """A smooth random picture with mild noise: PNG-compresses about as photographs do."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (9, 9, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), np.int16)
    return np.clip(base + rng.normal(0, 2.5, (size, size, 3)), 0, 255).astype(np.uint8)


def evict(paths):
    """Drop the files' pages from the page cache (written back first), as a set larger than
    memory would find them."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _prepare_rate(folder, count):
    """prepare.py's images/s from `count` 1,024 px PNGs to 128 px (Lanczos), and their mean size."""
    import contextlib
    import io
    from PIL import Image
    import prepare
    import sources
    source_dir = os.path.join(folder, 'images1024x1024')
    os.makedirs(source_dir)
    for index in range(count):
        Image.fromarray(_photo(1024, index)).save(os.path.join(source_dir, f'{index:05d}.png'))
    megabytes = np.mean([os.path.getsize(os.path.join(source_dir, name))
                         for name in os.listdir(source_dir)]) / 1e6
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        prepare.write_prepared(sources.open_source(source_dir), os.path.join(folder, 'ffhq_128'),
                               SIZE, 'squash', 'lanczos')
    return count / (time.perf_counter() - start), megabytes


def _decode_rate(folder, count):
    """Images/s of decoding 128 px PNGs into the image cache's form (data.decode_image)."""
    from PIL import Image
    import data
    os.makedirs(folder)
    files = []
    for index in range(count):
        files.append(os.path.join(folder, f'{index:05d}.png'))
        Image.fromarray(_photo(SIZE, index)).save(files[-1])
    start = time.perf_counter()
    for _ in data.decoded_images(files, SIZE, show_progress=False):
        pass
    return count / (time.perf_counter() - start)


def _png_folder_and_cache(folder, count):
    """`count` small PNG files (their content does not matter to start-up: only names, sizes,
    times and the cached pixels are read) and their image cache at 128 px."""
    import contextlib
    import io
    from PIL import Image
    import data
    import store
    png = io.BytesIO()
    Image.new('RGB', (8, 8), (90, 120, 150)).save(png, 'PNG')
    for index in range(count):
        subfolder = os.path.join(folder, f'{index // 1000:05d}')
        os.makedirs(subfolder, exist_ok=True)
        with open(os.path.join(subfolder, f'img{index:08d}.png'), 'wb') as f:
            f.write(png.getvalue())
    with contextlib.redirect_stdout(io.StringIO()):
        return store.cached_store(data.list_image_files(folder), SIZE, show_progress=False)


def _fake_prepared_set(folder, pixel_store):
    """A prepared set whose pixels are `pixel_store`'s (training reads only prepare.json and the
    pixels)."""
    import store
    os.makedirs(folder)
    os.symlink(pixel_store.folder, os.path.join(folder, store.PREPARED_PIXELS))
    with open(os.path.join(folder, store.PREPARED_META), 'w') as f:
        json.dump({'format': 'ladagan-prepared', 'img_size': SIZE, 'transform': 'squash',
                   'count': pixel_store.count}, f)


STARTUP = '''
import time
started = time.perf_counter()
import json, sys
sys.path.insert(0, {root!r})
import cli
cli.import_tensorflow_quietly()
imported = time.perf_counter()
import batches
images = batches.TrainingImages({path!r}, {size}, 64, seed=0)
next(iter(images.dataset(0)))
print(json.dumps(dict(imported=imported - started, first_batch=time.perf_counter() - started)))
'''


def _startup(path, cache_dir, chunk_paths):
    """(seconds to the first batch, of which importing TensorFlow) in a fresh process, the
    pixels evicted from the page cache first."""
    evict(chunk_paths)
    env = dict(os.environ, LADAGAN_CACHE_DIR=cache_dir, TF_CPP_MIN_LOG_LEVEL='3')
    result = subprocess.run([sys.executable, '-c', STARTUP.format(root=ROOT, path=path, size=SIZE)],
                            capture_output=True, text=True, env=env, timeout=900)
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report['first_batch'], report['imported']


def _train_py_startup(path, cache_dir, model_dir, chunk_paths):
    """Seconds from the start of `train.py --preset ffhq_128` to its first batch (its line
    'First batch ready'), the pixels read cold; the process is stopped there."""
    evict(chunk_paths)
    env = dict(os.environ, LADAGAN_CACHE_DIR=cache_dir, TF_CPP_MIN_LOG_LEVEL='3')
    command = [sys.executable, os.path.join(ROOT, 'train.py'), '--preset', 'ffhq_128',
               '--file_pattern', path, '--fid_inter', '0', '--total_iter', '1',
               '--model_dir', model_dir]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=env, cwd=ROOT)
    try:
        for line in process.stdout:
            if 'First batch ready' in line:
                return float(line.split('First batch ready')[1].split()[0])
        raise RuntimeError(f'train.py ended (code {process.wait()}) before its first batch')
    finally:
        process.kill()
        process.wait()


def _stream_cold(path, chunk_paths, count):
    """(pipeline images/s, disk MB/s): `count` images of the run's order, read cold through
    TrainingImages, then the same files read cold in sequence."""
    import contextlib
    import io
    import batches
    with contextlib.redirect_stdout(io.StringIO()):
        images = batches.TrainingImages(path, SIZE, 64, seed=0)
    evict(chunk_paths)
    iterator = iter(images.dataset(0))
    start, drawn = time.perf_counter(), 0
    while drawn + 64 <= min(count, images.num_images):
        next(iterator)
        drawn += 64
    pipeline = drawn / (time.perf_counter() - start)
    evict(chunk_paths)
    start, read = time.perf_counter(), 0
    for chunk_path in chunk_paths:
        with open(chunk_path, 'rb', buffering=0) as f:
            read += len(f.read())
    return pipeline, read / (time.perf_counter() - start) / 1e6


def run(args, row):
    """The rows of the data section (see the module's docstring)."""
    count = 1000 if args.quick else 70000
    work = tempfile.mkdtemp(prefix='ladagan-bench-data-')
    cache = os.path.join(work, 'cache')  # the image cache of this section's PNGs, not the user's
    saved_cache = os.environ.get('LADAGAN_CACHE_DIR')
    os.environ['LADAGAN_CACHE_DIR'] = cache
    rows = []
    try:
        prepare_count = 4 if args.quick else 48
        rate, megabytes = _prepare_rate(work, prepare_count)
        rows.append(row('prepare, 1,024 -> 128 px (lanczos), PNG in and out', rate, 'img/s',
                        f'{prepare_count} synthetic PNGs of {megabytes:.1f} MB; FFHQ\'s 70,000: '
                        f'about {70000 / rate / 60:.0f} min'))
        decode_rate = _decode_rate(os.path.join(work, 'png128'), 100 if args.quick else 1000)
        pixels = _png_folder_and_cache(os.path.join(work, 'pngs'), count)
        prepared = os.path.join(work, 'prepared')
        _fake_prepared_set(prepared, pixels)
        size_note = f'{count:,} images at {SIZE} px, {pixels.nbytes / 1e9:.2f} GB, read cold'
        for label, path in (('prepared set', prepared), ('PNG folder, image cache built',
                                                          os.path.join(work, 'pngs'))):
            seconds, imported = _startup(path, cache, pixels.chunk_paths)
            rows.append(row(f'start-up to the first batch, {label}', seconds, 's',
                            f'{size_note}; a fresh process, {imported:.1f} s of it importing '
                            'TensorFlow'))
        rows.append(row(f'first use of {count:,} PNGs: decoding into the image cache',
                        count / decode_rate, 's',
                        f'{decode_rate:.0f} img/s decoding 128 px PNGs, times {count:,}'))
        if not args.quick:
            seconds = _train_py_startup(prepared, cache, os.path.join(work, 'run'),
                                        pixels.chunk_paths)
            rows.append(row('train.py --preset ffhq_128 to its first batch, prepared set',
                            seconds, 's', f'{size_note}; networks built, step not compiled'))
        pipeline, disk = _stream_cold(prepared, pixels.chunk_paths, count)
        rows.append(row(f'input pipeline, {SIZE} px, streamed cold', pipeline, 'img/s',
                        f'{size_note}, batch 64, the run\'s order; the disk reads the same '
                        f'files in sequence at {disk:,.0f} MB/s = '
                        f'{disk * 1e6 / (SIZE * SIZE * 3):,.0f} img/s'))
    finally:
        if saved_cache is None:
            os.environ.pop('LADAGAN_CACHE_DIR', None)
        else:
            os.environ['LADAGAN_CACHE_DIR'] = saved_cache
        shutil.rmtree(work, ignore_errors=True)
    return rows
