"""Fine-tuning: does a run started from a pretrained LadaGAN beat one trained from scratch on a
small set of another style, and which settings suit it?

The source is the `demo` model trained on the built-in OpenMoji set (outlined, flat emoji):
`python3 train.py`'s own run, --source_iter steps of seed 0, or --source RUN. The target is
--n_train images of EmojiOne (filled and shaded emoji: 1,794 PNGs at 64 px that Debian's
`ruby-gemojione` ships, unpacked here with `apt-get download` and `dpkg-deb -x`, no Ruby; or
--data DIR). Each arm trains with `train.py` itself (a subprocess per run; the fine-tuned arms
take the source's config, so an arm differs from `finetune` only in what it names), for each
seed. FID: the standard network, --n_fid_gen images of the run's EMA generator against every
image of the target style (--n_train of them trained on, the rest never seen), at 32 px.
Writes into --out:

    results.json     every evaluation of every run, and the source's FID before fine-tuning
    finetune.png     FID against images seen (mean over seeds, the seeds' range shaded)
    finetune.md      the table docs/finetuning.md shows

    python3 experiments/finetune.py                      # about 80 minutes on 2 CPU cores
    python3 experiments/finetune.py --arms scratch,finetune --seeds 0 --total_iter 200

Arms run in turn for each seed (seed 0 of every arm, then seed 1), so a machine whose speed
drifts affects every arm alike.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import cli  # noqa: E402  (the CPU model each result names)
from experiments import common  # noqa: E402

SOURCE, FRESH_EMA_SOURCE = 'SOURCE', 'FRESH_EMA_SOURCE'  # stand-ins for the source folders
# Arm -> train.py arguments on top of the target data, the seed and the schedule.
ARMS = {
    'scratch': ['--preset', 'demo'],
    'finetune': ['--init_from', SOURCE],
    'finetune_freeze_d2': ['--init_from', SOURCE, '--set', 'freeze_d=2'],
    'finetune_mirror': ['--init_from', SOURCE, '--set', 'mirror=True'],
    'finetune_half_lr': ['--init_from', SOURCE, '--set', 'g_lr=0.0001', '--set', 'd_lr=0.0001'],
    'finetune_r1_x10': ['--init_from', SOURCE, '--set', 'gp_weight=0.001'],
    # The EMA generator starts as the source's G (a fresh EMA ramp), not the source's EMA.
    'finetune_fresh_ema': ['--init_from', FRESH_EMA_SOURCE],
}
GEMOJIONE_PNGS = 'usr/share/rubygems-integration/all/gems/gemojione-*/assets/png'


def emojione_folder(cache):
    """The EmojiOne PNGs of Debian's ruby-gemojione, unpacked into `cache` once."""
    folder = os.path.join(cache, 'emojione')
    if os.path.isdir(folder) and os.listdir(folder):
        return folder
    with tempfile.TemporaryDirectory() as scratch:
        try:
            subprocess.run(['apt-get', 'download', 'ruby-gemojione'], cwd=scratch, check=True,
                           capture_output=True, text=True)
            package = glob.glob(os.path.join(scratch, 'ruby-gemojione_*.deb'))[0]
            subprocess.run(['dpkg-deb', '-x', package, os.path.join(scratch, 'x')], check=True,
                           capture_output=True, text=True)
        except (OSError, IndexError, subprocess.CalledProcessError) as err:
            detail = ((getattr(err, 'stderr', '') or str(err)).strip().splitlines() or [''])[-1]
            raise SystemExit(f'error: apt-get download ruby-gemojione failed ({detail}); give '
                             'the target images with --data DIR instead')
        pngs = glob.glob(os.path.join(scratch, 'x', GEMOJIONE_PNGS, '*.png'))
        os.makedirs(folder + '.partial', exist_ok=True)
        for path in pngs:
            shutil.copy(path, folder + '.partial')
        os.replace(folder + '.partial', folder)
    return folder


def target_sets(data_dir, n_train, out):
    """(training folder of n_train images, all images): a fixed random subset, linked."""
    import data
    files = data.list_image_files(data_dir)
    if n_train >= len(files):
        raise SystemExit(f'error: --n_train {n_train} must be below the {len(files)} images of '
                         f'{data_dir}: the rest measure what the run never saw')
    train_dir = os.path.join(out, f'train_{n_train}')
    if not os.path.isdir(train_dir):
        os.makedirs(train_dir + '.partial', exist_ok=True)
        for path in data.select_files(files, n_train, seed=0):
            os.symlink(os.path.abspath(path), os.path.join(train_dir + '.partial',
                                                           os.path.basename(path)))
        os.replace(train_dir + '.partial', train_dir)
    return train_dir, len(files)


def fresh_ema_source(source, out):
    """A copy of the source run whose EMA generator is its G: the arm that ramps a new EMA."""
    folder = os.path.join(out, 'source_fresh_ema')
    if os.path.isdir(folder):
        return folder
    import checkpoints
    import tensorflow as tf
    info = checkpoints.init_source(source)
    nets = checkpoints.init_weights(info, info['conf'], 'the source')
    built = checkpoints.networks(info['conf'])
    for name in nets:
        checkpoints.assign_weights(built[name], nets[name])
    # G's weights into the EMA generator.
    checkpoints.assign_weights(built['ema_generator'], nets['generator'],
                               rename=('generator/', 'ema_generator/'))
    os.makedirs(folder + '.partial')
    shutil.copy(os.path.join(source, 'config.json'), folder + '.partial')
    tf.train.CheckpointManager(tf.train.Checkpoint(**built), os.path.join(
        folder + '.partial', checkpoints.BEST_DIR), 1).save(0)
    os.replace(folder + '.partial', folder)
    return folder


def source_fid(source, all_images, n_fid_gen, out):
    """FID of the source's EMA generator against the target style, before any fine-tuning."""
    samples = os.path.join(out, 'source_samples')
    for script, arguments in (('generate.py', ['--model_dir', source, '--num', str(n_fid_gen),
                                               '--outdir', samples]),
                              ('fid.py', [all_images, samples, '--img_size', '32'])):
        result = subprocess.run([sys.executable, os.path.join(ROOT, script)] + arguments,
                                cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f'{script} failed:\n' + result.stderr[-3000:])
    return float(result.stdout.split('FID:')[1].split()[0])


def summarise(results, arms):
    """Per arm: images, the mean FID at each evaluation over seeds, its min and max, the
    final and best FID per seed."""
    summary = {}
    for arm in arms:
        runs = [np.asarray(fids, np.float64) for (a, _), fids in results.items() if a == arm]
        count = min(len(run) for run in runs)
        stacked = np.stack([run[:count] for run in runs])  # (seeds, evaluations, 3)
        fid = stacked[:, :, 2]
        summary[arm] = dict(images=stacked[0, :, 0], fid=fid.mean(0), low=fid.min(0),
                            high=fid.max(0), final=fid[:, -1], best=fid.min(1))
    return summary


def write_plot(summary, start_fid, path):
    figure = Figure(figsize=(7.5, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    for arm, row in summary.items():
        images, fid = row['images'], row['fid']
        if arm != 'scratch' and start_fid is not None:  # the source before any step
            images, fid = np.r_[0, images], np.r_[start_fid, fid]
        line, = axis.plot(images, fid, marker='o', markersize=3, label=arm)
        axis.fill_between(row['images'], row['low'], row['high'], color=line.get_color(),
                          alpha=0.15)
    axis.set_xlabel('images seen while fine-tuning (batch 32)')
    axis.set_ylabel('FID against all EmojiOne images')
    axis.set_title('Demo model: from scratch or from the OpenMoji run')
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def write_table(summary, start_fid, seeds, path):
    lines = ['| arm | FID at each evaluation (mean over seeds) | final FID per seed | '
             'best FID per seed |', '| --- | --- | --- | --- |']
    for arm, row in summary.items():
        lines.append(f'| `{arm}` | ' + ', '.join(f'{fid:.1f}' for fid in row['fid']) + ' | '
                     + ', '.join(f'{fid:.1f}' for fid in row['final']) + ' | '
                     + ', '.join(f'{fid:.1f}' for fid in row['best']) + ' |')
    lines.append('')
    lines.append(f'Seeds {", ".join(map(str, seeds))}; evaluations at '
                 + ', '.join(f'{int(n):,}' for n in next(iter(summary.values()))['images'])
                 + ' images.' + (f' The source before fine-tuning: FID {start_fid:.1f}.'
                                 if start_fid is not None else ''))
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    common.add_arguments(parser, 'arm', ARMS, tuple(ARMS))
    parser.add_argument('--source', default=None, metavar='RUN',
                        help='the pretrained run (default: train the demo into OUT/source)')
    parser.add_argument('--source_iter', type=int, default=1500,
                        help='steps of the source demo run (default 1500, as `train.py`)')
    parser.add_argument('--data', default=None, metavar='DIR',
                        help="the target style's images (default: ruby-gemojione's EmojiOne)")
    parser.add_argument('--n_train', type=int, default=800,
                        help='target images trained on (default 800)')
    parser.add_argument('--total_iter', type=int, default=600,
                        help='fine-tuning steps per run, batch 32 (default 600: 19,200 images)')
    parser.add_argument('--fid_inter', type=int, default=100,
                        help='steps between FID evaluations (default 100)')
    parser.add_argument('--n_fid_gen', type=int, default=500,
                        help='generated images per FID (default 500, as the demo)')
    parser.add_argument('--out', default=os.path.join('runs', 'finetune'),
                        help='output folder (run folders go to OUT/runs; existing ones resume)')
    return common.check_arguments(parser, parser.parse_args(argv), 'arm', ARMS)


def main(argv=None):
    args = parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    machine = cli.cpu_model()
    print(f'CPU: {machine}', flush=True)
    all_images = os.path.abspath(args.data) if args.data else emojione_folder(out)
    train_dir, n_all = target_sets(all_images, args.n_train, out)
    source = os.path.abspath(args.source) if args.source else os.path.join(out, 'source')
    if not args.source:  # the demo command's run: OpenMoji, 32 px, seed 0
        common.train(source, ['--total_iter', str(args.source_iter)], 'the source run')
    sources = {SOURCE: source}
    if any(FRESH_EMA_SOURCE in ARMS[arm] for arm in args.arms):
        sources[FRESH_EMA_SOURCE] = fresh_ema_source(source, out)
    start_fid = source_fid(source, all_images, args.n_fid_gen, out)
    print(f'The source before fine-tuning: FID {start_fid:.1f}', flush=True)
    results = {}
    for seed in args.seeds:
        for arm in args.arms:
            arguments = [sources.get(word, word) for word in ARMS[arm]] + [
                '--file_pattern', train_dir, '--eval_dir', all_images, '--seed', str(seed),
                '--total_iter', str(args.total_iter), '--fid_inter', str(args.fid_inter),
                '--metrics_inter', str(args.fid_inter), '--set', f'n_fid_real={n_all}',
                '--set', f'n_fid_gen={args.n_fid_gen}']
            started = time.perf_counter()
            fids = common.train(os.path.join(out, 'runs', f'{arm}_seed{seed}'), arguments,
                                f'{arm} seed {seed}')
            results[(arm, seed)] = fids
            print(f'{arm:>20} seed {seed}: FID ' + ', '.join(f'{fid:.1f}' for *_, fid in fids)
                  + f' ({time.perf_counter() - started:.0f} s)', flush=True)
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump({'cpu': machine, 'source': source, 'source_fid': start_fid,
                   'runs': [{'arm': arm, 'seed': seed, 'train_args': ARMS[arm],
                             'evaluations': [{'n_images': n, 'train_seconds': s, 'fid': fid}
                                             for n, s, fid in fids]}
                            for (arm, seed), fids in results.items()]}, f, indent=2)
    summary = summarise(results, args.arms)
    write_plot(summary, start_fid, os.path.join(out, 'finetune.png'))
    write_table(summary, start_fid, args.seeds, os.path.join(out, 'finetune.md'))
    with open(os.path.join(out, 'finetune.md')) as f:
        print(f.read())
    print(f'Wrote {out}/results.json, finetune.png, finetune.md')
    return 0


if __name__ == '__main__':
    sys.exit(main())
