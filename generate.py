"""Generate images with a trained LadaGAN: one PNG per seed, a grid, an interpolation GIF, the
attention maps of every generator stage and head, a memorisation check, and an exported model.

Each seed is its own image: its noise is np.random.RandomState(seed).randn(noise_dim), so a seed
gives the same picture on every run, whatever other seeds are asked for (see
generate_seed_batches). The EMA generator of the best-FID checkpoint is used unless --no_ema /
--ckpt latest say otherwise. --model_dir takes a run folder of ours or an official model folder
(config.json + best-training-checkpoints/).

    # 64 images from a run of ours: out/cifar10/seed0000.png ... seed0063.png
    python generate.py --model_dir runs/cifar10 --outdir out/cifar10 --seeds 0-63

    # the authors' FFHQ 128 model (downloaded once from the Hugging Face Hub): one 4x4 grid only
    python generate.py --pretrained ffhq_128 --outdir out/ffhq --seeds 0-15 --grid_only

    # 50,000 images for FID (seeds 0..49999), batched by the config's gen_batch_size
    python generate.py --model_dir runs/cifar10 --outdir out/cifar10_50k --num 50000

    # a looping GIF through 4 seeds, 24 frames from each to the next: out/celeba/interpolation.gif
    python generate.py --pretrained celeba_64 --outdir out/celeba --seeds 10,20,30,40 --interpolate 4 --frames 24

    # attention maps per stage and head beside the images (first 8 seeds)
    python generate.py --model_dir runs/demo --outdir out/demo --seeds 0-7 --grid --attn_maps

    # an already-downloaded official folder, raw (non-EMA) generator, latest checkpoint
    python generate.py --model_dir ffhq_128 --outdir out/ffhq_raw --seeds 0-3,10,20-22 --no_ema --ckpt latest

    # memorisation check: each image beside its 5 nearest training images (runs/demo/generated/nearest.png)
    python generate.py --model_dir runs/demo --seeds 0-15 --nearest 5

    # the generator as a SavedModel (noise -> uint8 images) and, with tf2onnx, ONNX
    python generate.py --model_dir runs/demo --export exported/demo

    # a class-conditional run: seeds 0-7 of two classes (OUT/cat/, OUT/dog/), one grid row each
    python generate.py --model_dir runs/pets --class cat,dog --seeds 0-7 --grid --outdir out/pets

A conditional run's images are of the classes --class names (names as the run recorded them,
or indices; `all`, the default, is every class), each in a folder of its own, from the same
noise per seed: seed S of every class starts from the same z.
"""
import argparse
import os
import re
import sys

import cli  # noqa: E402  (first: see cli.py)

if __name__ == '__main__':
    cli.import_tensorflow_quietly()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # imported, e.g. in a notebook

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

import checkpoints  # noqa: E402
import official  # noqa: E402
import data  # noqa: E402
import export  # noqa: E402
import fid  # noqa: E402
import inception  # noqa: E402
import plots  # noqa: E402
import knn_metrics  # noqa: E402
from config import UserError  # noqa: E402

DEFAULT_SEEDS = '0-63'
MAX_SEED = 2 ** 32 - 1  # the range np.random.RandomState accepts
GIF_FRAME_MS = 50  # 20 frames per second
ATTENTION_IMAGES = 8  # rows of the attention-map figures (as the training samples)

_SEED_ITEM = re.compile(r'^(\d+)(?:-(\d+))?$')


def parse_seeds(text):
    """'0-3,10,20-22' -> [0, 1, 2, 3, 10, 20, 21, 22]; ranges include both ends; order kept."""
    seeds = []
    for item in str(text).split(','):
        match = _SEED_ITEM.match(item.strip())
        if match is None:
            raise UserError(
                f'--seeds {text!r} is not valid: use non-negative integers and ranges such as '
                '0-63 or 0-3,10,20-22')
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        if end < start:
            raise UserError(f'--seeds {text!r} has the range {item.strip()} whose end is '
                                  'below its start: write ranges as START-END with START <= END')
        if end > MAX_SEED:
            raise UserError(f'--seeds {text!r} goes above the largest seed {MAX_SEED}')
        seeds.extend(range(start, end + 1))
    return seeds


def seed_noise(seeds, noise_dim):
    """(len(seeds), noise_dim) float32: row i from its own RNG, RandomState(seeds[i])."""
    noise = np.empty((len(seeds), noise_dim), np.float32)
    for row, seed in enumerate(seeds):
        noise[row] = np.random.RandomState(seed).randn(noise_dim)
    return noise


def slerp(start, end, fractions):
    """Spherical interpolation from vector `start` (D,) to `end` (D,) at each fraction (T,) in
    [0, 1] -> (T, D). Gaussian noise lives near a sphere; a straight line would pass through
    its low-norm interior, which the generator rarely saw in training."""
    fractions = np.asarray(fractions, np.float64)[:, None]  # (T, 1)
    start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
    cos_angle = np.dot(start, end) / (np.linalg.norm(start) * np.linalg.norm(end))
    angle = np.arccos(np.clip(cos_angle, -1.0, 1.0))
    if np.sin(angle) < 1e-6:  # (nearly) parallel: the straight line is the arc
        return ((1 - fractions) * start + fractions * end).astype(np.float32)
    return ((np.sin((1 - fractions) * angle) * start + np.sin(fractions * angle) * end)
            / np.sin(angle)).astype(np.float32)


def interpolation_noise(key_noise, frames_per_segment):
    """(K, D) key noise -> (K * frames_per_segment, D): slerp from each key to the next and from
    the last back to the first, so the GIF loops without a jump; each segment starts on its key."""
    fractions = np.arange(frames_per_segment) / frames_per_segment
    segments = [slerp(key_noise[index], key_noise[(index + 1) % len(key_noise)], fractions)
                for index in range(len(key_noise))]
    return np.concatenate(segments, axis=0)


def _class_inputs(label, batch_size):
    """The sampler's extra input: a conditional generator's class, for every row."""
    return [] if label is None else [tf.fill([batch_size], tf.constant(label, tf.int32))]


def generate_batches(sampler, noise, batch_size, desc, label=None):
    """Yield (uint8 images (B, S, S, 3), [attention maps (B, heads, tokens)]) for consecutive
    batches of `noise` (of class `label` for a conditional generator), with a progress bar
    counting images. `sampler` is an export.ImageGenerator: the images are those the exported
    model gives."""
    with tqdm(total=len(noise), unit='img', desc=desc, dynamic_ncols=True) as bar:
        for start in range(0, len(noise), batch_size):
            batch = tf.constant(noise[start:start + batch_size])
            images, attn_maps = sampler.generate_with_attention(
                batch, *_class_inputs(label, int(batch.shape[0])))
            bar.update(int(batch.shape[0]))
            yield images.numpy(), [maps.numpy() for maps in attn_maps]


def save_gif(frames_uint8, path, frame_ms=GIF_FRAME_MS):
    """(T, S, S, 3) uint8 -> a looping GIF. Pillow merges consecutive identical frames."""
    frames = [Image.fromarray(frame) for frame in frames_uint8]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return path


def load_generator(args):
    """(config, generator, model folder) from --model_dir or --pretrained."""
    model_dir = args.model_dir
    if args.pretrained:
        model_dir = official.download_official_checkpoint(args.pretrained,
                                                             dest_dir=args.cache_dir)
    conf, generator = checkpoints.load_run_generator(model_dir, ckpt=args.ckpt,
                                                     ema=not args.no_ema)
    return conf, generator, model_dir


def generate_seed_batches(sampler, seeds, noise_dim, batch_size, label=None):
    """Yield (seeds, uint8 images (len(seeds), S, S, 3), [attention maps (len(seeds), heads,
    tokens)]) per batch, the seeds in the order asked. Seed s is always computed at row
    s % batch_size of a batch of batch_size rows, whatever else is asked: CPU matrix kernels
    round a row by its position and by the batch's size (one 8-bit level in a few pixels, seen
    on an AVX2 AMD EPYC), never by the other rows' values, which are zeros where unused."""
    seeds_of_block = {}  # block index -> its seeds, blocks in the order of their first seed
    for seed in seeds:
        seeds_of_block.setdefault(seed // batch_size, []).append(seed)
    with tqdm(total=len(seeds), unit='img', desc='generate', dynamic_ncols=True) as bar:
        for block_seeds in seeds_of_block.values():
            rows = [seed % batch_size for seed in block_seeds]
            noise = np.zeros((batch_size, noise_dim), np.float32)
            noise[rows] = seed_noise(block_seeds, noise_dim)
            images, attn_maps = sampler.generate_with_attention(
                tf.constant(noise), *_class_inputs(label, batch_size))
            bar.update(len(block_seeds))
            yield block_seeds, images.numpy()[rows], [maps.numpy()[rows] for maps in attn_maps]


def write_images(args, seeds, conf, sampler, outdir, label=None):
    """Seed PNGs, grid.png and attention maps, as asked. Each batch's PNGs are written as it is
    made and the images are let go, so `--num 50000` holds one batch, not 50,000 images; only
    what a later picture needs is kept (the grid: every image; --nearest: every image, returned
    in the order of `seeds`, else None; the attention maps: their first seeds). Returns
    (images or None, the names written)."""
    keep_all = args.grid or args.grid_only or bool(args.nearest)
    image_of, maps_of = {}, {}  # seed -> uint8 (S, S, 3); seed -> [(heads, tokens) per stage]
    map_seeds = list(dict.fromkeys(seeds))[:ATTENTION_IMAGES] if args.attn_maps else []
    for block_seeds, images_uint8, maps in generate_seed_batches(
            sampler, seeds, conf.noise_dim, conf.gen_batch_size, label):
        for row, seed in enumerate(block_seeds):
            if not args.grid_only:
                Image.fromarray(images_uint8[row]).save(
                    os.path.join(outdir, f'seed{seed:04d}.png'))
            if keep_all or seed in map_seeds:
                image_of[seed] = images_uint8[row].copy()  # not a view that holds the batch
            if seed in map_seeds:
                maps_of[seed] = [stage_maps[row].copy() for stage_maps in maps]
    all_images = np.stack([image_of[seed] for seed in seeds]) if keep_all else None
    written = []
    if not args.grid_only:
        names = [f'seed{seed:04d}.png' for seed in (seeds[0], seeds[-1])]
        written.append(names[0] if len(seeds) == 1 else f'{len(seeds)} images {names[0]} .. '
                       + names[1])
    if args.grid or args.grid_only:
        plots.save_image_grid(all_images, os.path.join(outdir, 'grid.png'))
        written.append('grid.png')
    if args.attn_maps:
        # (images, heads, tokens) per stage, the first seeds asked
        stage_maps = [np.stack(per_stage) for per_stage in zip(*(maps_of[s] for s in map_seeds))]
        paths = plots.save_attention_maps(np.stack([image_of[s] for s in map_seeds]), stage_maps,
                                          outdir + os.sep,
                                          heads=conf.g_heads, plot_size=conf.plot_size,
                                          max_images=ATTENTION_IMAGES)
        written.extend(os.path.basename(path) for path in paths)
    return all_images, written


def write_interpolation(args, seeds, conf, sampler, outdir, label=None):
    key_noise = seed_noise(seeds[:args.interpolate], conf.noise_dim)
    path_noise = interpolation_noise(key_noise, args.frames)
    frames = [images for images, _ in generate_batches(sampler, path_noise,
                                                       conf.gen_batch_size, 'interpolate', label)]
    save_gif(np.concatenate(frames, axis=0), os.path.join(outdir, 'interpolation.gif'))
    return (f'interpolation.gif ({len(path_noise)} frames through seeds '
            + ','.join(map(str, seeds[:args.interpolate])) + ')')


def training_images(args, conf, model_dir):
    """The files a run trained on: --train_images, else the run's recorded --file_pattern, else
    the built-in demo set (a run trained on it records none)."""
    if args.train_images:
        return data.list_image_files(args.train_images)
    options = checkpoints.recorded_options(model_dir, 'pass them with --train_images PATH')
    return data.list_image_files(checkpoints.training_images_of(options, conf.img_size))


NEAREST_ROWS = 32  # rows of nearest.png at most: the generated images closest to a training one


def write_nearest(args, seeds, images, conf, model_dir, outdir):
    """The memorisation check: each generated image beside its --nearest nearest training images
    in Inception feature space (the FID network), as nearest.png; prints the closest pair. With
    more than NEAREST_ROWS images, the picture shows those closest to the training set."""
    files = training_images(args, conf, model_dir)
    extractor = inception.get_feature_extractor('standard')
    # Features of every training image, decoded as training decodes them: cached once.
    train = fid.reference_statistics(files, extractor, conf.img_size, conf.center_crop,
                                     need_features=True)
    generated = np.concatenate([extractor(images[start:start + conf.fid_batch_size])
                                for start in range(0, len(images), conf.fid_batch_size)])
    indices, distances = knn_metrics.nearest_neighbours(generated, train['features'],
                                                        args.nearest)
    rows = np.arange(len(images))
    if len(rows) > NEAREST_ROWS:
        rows = np.sort(np.argsort(distances[:, 0], kind='stable')[:NEAREST_ROWS])
    neighbours = np.stack([np.stack([data.decode_image(train['files'][index], conf.img_size,
                                                       conf.center_crop)
                                     for index in indices[row]]) for row in rows])
    plots.save_nearest_neighbours(images[rows], neighbours, distances[rows],
                                  os.path.join(outdir, 'nearest.png'),
                                  labels=[f'seed {seeds[row]}' for row in rows])
    closest = int(np.argmin(distances[:, 0]))
    print(f'Smallest distance to a training image: {distances[closest, 0]:.3f} (seed '
          f'{seeds[closest]} and {train["files"][indices[closest, 0]]}; {len(train["files"]):,} '
          'training images)')
    return 'nearest.png'


def chosen_classes(text, conf, names, model_dir):
    """[(index, name)] of the classes --class names (all by default); [(None, None)] for an
    unconditional generator, which --class does not apply to."""
    if not conf.num_classes:
        if text is not None:
            raise UserError(f'--class {text}: {model_dir} is not class-conditional (it was not '
                            'trained with conditional=True); leave --class out')
        return [(None, None)]
    if text is None or text == 'all':
        return list(enumerate(names))
    chosen = []
    for item in (part.strip() for part in text.split(',')):
        if item in names:
            chosen.append((names.index(item), item))
        elif item.isdigit() and int(item) < len(names):
            chosen.append((int(item), names[int(item)]))
        else:
            shown = ', '.join(names[:20]) + (', ...' if len(names) > 20 else '')
            raise UserError(f'--class {item!r} is not a class of {model_dir}: give one of '
                            f'{shown} (or 0 to {len(names) - 1}), a list of them, or all')
    return chosen


def _folder_name(class_name):
    return re.sub(r'[^\w.-]+', '_', class_name)


def run(args, seeds):
    conf, generator, model_dir = load_generator(args)
    names = checkpoints.class_names(model_dir, conf)
    classes = chosen_classes(args.class_names, conf, names, model_dir)
    print(f'{"Raw" if args.no_ema else "EMA"} generator of {model_dir}: '
          f'{conf.img_size}x{conf.img_size} px'
          + (f', {conf.num_classes} classes' if conf.num_classes else ''))
    if args.export:
        export.export_generator(generator, conf, args.export, source=model_dir,
                                ema=not args.no_ema, class_names=names)
        if seeds is None:  # only the export was asked for
            return
    outdir = args.outdir or (os.path.join(model_dir, 'generated') if args.model_dir
                             else os.path.join('generated', args.pretrained))
    os.makedirs(outdir, exist_ok=True)
    # The images the export gives.
    sampler = export.ImageGenerator(generator, conf.noise_dim, conf.num_classes)
    rows, written = [], []
    for label, name in classes:  # a conditional generator: a folder per class
        folder = outdir if label is None else os.path.join(outdir, _folder_name(name))
        os.makedirs(folder, exist_ok=True)
        images, class_written = write_images(args, seeds, conf, sampler, folder, label)
        prefix = '' if label is None else f'{_folder_name(name)}/'
        written.extend(prefix + item for item in class_written)
        rows.append(images)
        if args.interpolate:
            written.append(prefix + write_interpolation(args, seeds, conf, sampler, folder,
                                                        label))
        if args.nearest:
            written.append(prefix + write_nearest(args, seeds, images, conf, model_dir,
                                                  folder))
    if conf.num_classes and (args.grid or args.grid_only):  # one row of the seeds per class
        plots.save_image_grid(np.concatenate(rows), os.path.join(outdir, 'grid.png'),
                              nrow=len(seeds))
        written.append(f'grid.png (a row per class: {", ".join(name for _, name in classes)})')
    print(f'Wrote to {outdir}: ' + ', '.join(written))


class _OneLineErrorParser(argparse.ArgumentParser):
    """Usage mistakes print one line and exit with code 2 (argparse would print usage first)."""

    def error(self, message):
        self.exit(2, f'error: {message}\n')


def parse_args(argv=None):
    parser = _OneLineErrorParser(
        description='Generate images with a trained LadaGAN.',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 2)[2])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--model_dir', help='run folder of ours, or an official model folder')
    source.add_argument('--pretrained', choices=list(official.OFFICIAL_CHECKPOINT_STEPS),
                        help='download this official model from the Hugging Face Hub (once) '
                             'and use it')
    parser.add_argument('--cache_dir', default=None,
                        help='where --pretrained models are kept (default: the pretrained/ '
                             'folder of $LADAGAN_CACHE_DIR or ~/.cache/ladagan)')
    parser.add_argument('--outdir', help='output folder, created if needed (default: '
                        'RUN/generated, or generated/NAME for --pretrained NAME)')
    parser.add_argument('--seeds', help='seeds as ranges and lists, e.g. 0-63 or 0-3,10,20-22 '
                                        f'(default {DEFAULT_SEEDS})')
    parser.add_argument('--num', type=int, help='generate N images with seeds 0..N-1')
    parser.add_argument('--grid', action='store_true', help='also save all images as grid.png')
    parser.add_argument('--grid_only', action='store_true',
                        help='save grid.png instead of one PNG per seed')
    parser.add_argument('--interpolate', type=int, metavar='K',
                        help='also save interpolation.gif: slerp through the first K seeds and '
                             'back to the first')
    parser.add_argument('--frames', type=int, default=16,
                        help='GIF frames from one seed to the next (default %(default)s)')
    parser.add_argument('--attn_maps', action='store_true',
                        help='also save the attention maps of each stage and head (first '
                             f'{ATTENTION_IMAGES} seeds)')
    parser.add_argument('--nearest', type=int, metavar='K',
                        help='memorisation check: nearest.png puts each image beside its K '
                             'nearest training images in Inception feature space, with the '
                             'distances, and the smallest distance is printed')
    parser.add_argument('--train_images', metavar='PATH',
                        help='training images for --nearest (default: those the run records)')
    parser.add_argument('--export', metavar='DIR',
                        help='write the generator as a TensorFlow SavedModel (noise -> uint8 '
                             'images) to DIR, and as DIR/generator.onnx when tf2onnx is '
                             'installed; with no image option, only export')
    parser.add_argument('--class', dest='class_names', metavar='NAME_OR_INDEX',
                        help="a conditional run's classes: names or indices, comma-separated, "
                             'or all (the default); each in a folder of its own, and the grid '
                             'a row per class')
    parser.add_argument('--no_ema', action='store_true',
                        help='use the raw generator instead of its EMA')
    parser.add_argument('--ckpt', choices=('best', 'latest'), default='best',
                        help='best-FID or latest checkpoint (default %(default)s; best falls '
                             'back to latest when no FID was computed)')
    return parser.parse_args(argv)


def resolve_seeds(args):
    """The seed list asked for (None when only --export is), or UserError; checks every option
    before anything is loaded."""
    if args.seeds is not None and args.num is not None:
        raise UserError('--seeds and --num both choose the seeds: give only one')
    if args.num is not None and args.num < 1:
        raise UserError(f'--num {args.num} is not allowed: it must be a positive integer')
    if args.interpolate is not None and args.interpolate < 2:
        raise UserError(f'--interpolate {args.interpolate} is not allowed: it needs at '
                              'least 2 seeds to move between')
    if args.frames < 1:
        raise UserError(f'--frames {args.frames} is not allowed: it must be a positive '
                              'integer')
    if args.grid and args.grid_only:
        raise UserError('--grid and --grid_only both choose the grid: give only one')
    if args.nearest is not None and args.nearest < 1:
        raise UserError(f'--nearest {args.nearest} is not allowed: it must be a positive integer')
    if args.export and os.path.exists(args.export) and (not os.path.isdir(args.export)
                                                        or os.listdir(args.export)):
        raise UserError(f'--export {args.export} already exists and is not an empty folder: '
                        'give a new folder')
    images_asked = (args.seeds, args.num, args.interpolate, args.nearest, args.outdir)
    if args.export and all(option is None for option in images_asked) and not (
            args.grid or args.grid_only or args.attn_maps):
        return None
    if args.num is not None:
        seeds = list(range(args.num))
    elif args.seeds is not None:
        seeds = parse_seeds(args.seeds)
    elif args.interpolate:
        seeds = list(range(args.interpolate))
    else:
        seeds = parse_seeds(DEFAULT_SEEDS)
    if args.interpolate and len(seeds) < args.interpolate:
        raise UserError(f'--interpolate {args.interpolate} needs at least '
                              f'{args.interpolate} seeds but only {len(seeds)} were given')
    if args.model_dir is not None and not os.path.isdir(os.path.expanduser(args.model_dir)):
        raise UserError(f'--model_dir {args.model_dir} does not exist: give a run folder '
                              'or an official model folder (config.json + '
                              'best-training-checkpoints/)')
    return seeds


def main(argv=None):
    args = parse_args(argv)
    try:
        seeds = resolve_seeds(args)
        run(args, seeds)
    except UserError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
