"""Time to FID: how fast each training mode reaches a given FID, in images and in seconds.

Trains the `demo` model on the built-in OpenMoji set at 32 px once per mode and seed, with
`train.py` itself (each run a subprocess, so nothing but the mode differs), and reads FID and
training seconds (steps only, not evaluations) from each run's metrics.jsonl. FID is the
standard network's, 500 generated images against a fixed 500-image subset of the demo set
(--n_fid). Writes into --out:

    results.json     every evaluation of every run
    time_to_fid.png  FID against training seconds (one line per mode, the mean over seeds)
    time_to_fid.md   the table the README shows

    python3 experiments/time_to_fid.py                    # about an hour on 2 CPU cores
    python3 experiments/time_to_fid.py --modes official,fast --seeds 0,1,2 \\
        --total_iter 20000 --fid_inter 2000 --out runs/time_to_fid_gpu      # longer, on a GPU

Modes run in turn for each seed (seed 0 of every mode, then seed 1, ...), so a machine whose
speed drifts over the hour affects every mode alike.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import cli  # noqa: E402  (the CPU model each result names)
import config  # noqa: E402
from experiments import common  # noqa: E402

# Mode name -> train.py arguments on top of the demo preset; 'official' is the authors' recipe.
# 'bfloat16' keeps the float32 islands (config.FLOAT32_ISLANDS), 'bfloat16_all' none of them
# (the policy of earlier versions), 'bfloat16_no_X' all but X.
MODES = {
    'official': [],
    'bfloat16': ['--set', 'precision=mixed_bfloat16'],
    'bfloat16_all': ['--set', 'precision=mixed_bfloat16', '--set', 'float32_islands=[]'],
    **{f'bfloat16_no_{island}': ['--set', 'precision=mixed_bfloat16', '--set', 'float32_islands='
                                 + ','.join(name for name in config.FLOAT32_ISLANDS
                                            if name != island)]
       for island in config.FLOAT32_ISLANDS},
    'r1_every_4': ['--set', 'r1_interval=4'],
    'r1_every_16': ['--set', 'r1_interval=16'],
    'bfloat16_r1_every_4': ['--set', 'precision=mixed_bfloat16', '--set', 'r1_interval=4'],
    'bfloat16_r1_every_16': ['--set', 'precision=mixed_bfloat16', '--set', 'r1_interval=16'],
    'fast': ['--fast'],  # the switch the README recommends
}
DEFAULT_MODES = ('official', 'bfloat16', 'r1_every_4', 'r1_every_16', 'bfloat16_r1_every_16')


def run_once(mode, seed, args):
    """Train one mode and seed (resuming a finished or interrupted run folder) and return its
    FID records [(images seen, training seconds, FID)]."""
    # Absolute: train.py runs from the repository, the caller may not.
    run_dir = os.path.abspath(os.path.join(args.runs or os.path.join(args.out, 'runs'),
                                           f'{mode}_seed{seed}'))
    arguments = ['--preset', 'demo', '--seed', str(seed), '--total_iter', str(args.total_iter),
                 '--fid_inter', str(args.fid_inter), '--metrics_inter', str(args.fid_inter),
                 '--set', f'n_fid_real={args.n_fid}', '--set', f'n_fid_gen={args.n_fid}']
    started = time.perf_counter()
    fids = common.train(run_dir, arguments + MODES[mode], f'{mode} seed {seed}')
    # A run folder trained further by an earlier, longer call counts up to this horizon only.
    horizon = args.total_iter * config.make_config('demo').batch_size
    fids = [record for record in fids if record[0] <= horizon]
    print(f'{mode:>22} seed {seed}: FID ' + ', '.join(f'{fid:.1f}' for _, _, fid in fids)
          + f' at {fids[-1][1]:.0f} s of training ({time.perf_counter() - started:.0f} s '
          'with evaluations)', flush=True)
    return fids


def seconds_to_reach(curve, target):
    """Training seconds at which a (seconds, FID) curve first reaches `target`, linearly
    interpolated between evaluations; None if it never does."""
    for (s0, f0), (s1, f1) in zip([(0.0, np.inf)] + curve[:-1], curve):
        if f1 <= target:
            if not np.isfinite(f0):
                return s1
            return s0 + (s1 - s0) * (f0 - target) / (f0 - f1)
    return None


def summarise(results, modes):
    """Per mode: images, mean seconds and mean FID at each evaluation (over seeds), final FID
    spread, and the speed-up over 'official' to official's final FID."""
    summary = {}
    for mode in modes:
        runs = [np.asarray(fids, dtype=np.float64) for (m, _), fids in results.items()
                if m == mode]
        count = min(len(run) for run in runs)
        stacked = np.stack([run[:count] for run in runs])  # (seeds, evaluations, 3)
        summary[mode] = {'images': stacked[0, :, 0], 'seconds': stacked[:, :, 1].mean(0),
                         'fid': stacked[:, :, 2].mean(0), 'final_fids': stacked[:, -1, 2]}
    target = summary['official']['fid'][-1] if 'official' in summary else None
    _paired_differences(results, summary)
    for mode, row in summary.items():
        curve = list(zip(row['seconds'], row['fid']))
        row['seconds_to_target'] = None if target is None else seconds_to_reach(curve, target)
        row['images_per_sec'] = row['images'][-1] / row['seconds'][-1]
    if target is not None:
        official = summary['official']['seconds_to_target']
        for row in summary.values():
            row['speedup'] = (official / row['seconds_to_target']
                              if row['seconds_to_target'] else None)
    return summary, target


def _paired_differences(results, summary):
    """Per mode, the final FID minus official's FID of the same seed (the same initial weights,
    noise and data order) at the same images, over the seeds both ran: 'paired' (list),
    'paired_mean', 'paired_std'; official's 'seed_std' is the spread between its seeds."""
    if 'official' not in summary:
        return
    official = {seed: {images: fid for images, _, fid in fids}
                for (mode, seed), fids in results.items() if mode == 'official'}
    finals = [fids[-1][2] for (mode, _), fids in results.items() if mode == 'official']
    summary['official']['seed_std'] = float(np.std(finals, ddof=1) if len(finals) > 1
                                            else np.nan)
    for mode, row in summary.items():
        paired = [fids[-1][2] - official[seed][fids[-1][0]]
                  for (m, seed), fids in sorted(results.items())
                  if m == mode and fids[-1][0] in official.get(seed, {})]
        row['paired'] = paired
        row['paired_mean'] = float(np.mean(paired)) if paired else np.nan
        row['paired_std'] = float(np.std(paired, ddof=1)) if len(paired) > 1 else np.nan


def write_plot(summary, path):
    figure = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    by_seconds, by_images = figure.subplots(1, 2)
    for mode, row in summary.items():
        line, = by_seconds.plot(row['seconds'], row['fid'], marker='o', markersize=3, label=mode)
        by_images.plot(row['images'], row['fid'], marker='o', markersize=3, color=line.get_color(),
                       label=mode)
    for axis, label in ((by_seconds, 'training seconds (steps only, mean over seeds)'),
                        (by_images, 'images seen')):
        axis.set_xlabel(label)
        axis.set_ylabel('FID (standard network)')
        axis.grid(alpha=0.3)
    by_seconds.legend(fontsize=8)
    by_seconds.set_title('FID against wall-clock training time')
    by_images.set_title('FID against images seen')
    figure.tight_layout()
    figure.savefig(path)


def write_table(summary, target, seeds, path):
    lines = ['| mode | images/s | training s (all images) | FID at each evaluation (mean) | '
             f'final FID per seed | s to FID {target:.1f} | speed-up |',
             '| --- | --- | --- | --- | --- | --- | --- |']
    for mode, row in summary.items():
        reach = row['seconds_to_target']
        speedup = row.get('speedup')
        lines.append(
            f'| `{mode}` | {row["images_per_sec"]:.1f} | {row["seconds"][-1]:.0f} | '
            + ', '.join(f'{fid:.1f}' for fid in row['fid']) + ' | '
            + ', '.join(f'{fid:.1f}' for fid in row['final_fids']) + ' | '
            + (f'{reach:.0f}' if reach else 'not reached') + ' | '
            + (f'{speedup:.2f}x' if speedup else '-') + ' |')
    lines.append('')
    lines.append(f'Seeds {", ".join(map(str, seeds))}; evaluations at '
                 + ', '.join(f'{int(images):,}' for images in next(iter(summary.values()))['images'])
                 + ' images. Target: the official mode\'s final mean FID.')
    seed_std = summary['official'].get('seed_std', np.nan)
    lines += ['', '| mode | final FID minus official\'s, per seed (paired) | mean | std |',
              '| --- | --- | --- | --- |']
    for mode, row in summary.items():
        if mode != 'official' and row.get('paired'):
            lines.append(f'| `{mode}` | ' + ', '.join(f'{d:+.1f}' for d in row['paired'])
                         + f' | {row["paired_mean"]:+.1f} | {row["paired_std"]:.1f} |')
    lines += ['', f'Spread between seeds of official (std of its final FIDs): {seed_std:.1f}.']
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    common.add_arguments(parser, 'mode', MODES, DEFAULT_MODES)
    parser.add_argument('--total_iter', type=int, default=720,
                        help='iterations per run, batch 32 (default 720: 23,040 images)')
    parser.add_argument('--fid_inter', type=int, default=240,
                        help='iterations between FID evaluations (default 240)')
    parser.add_argument('--n_fid', type=int, default=500,
                        help='real and generated images per FID (default 500, as the demo)')
    parser.add_argument('--out', default=os.path.join('runs', 'time_to_fid'),
                        help='output folder (run folders go to OUT/runs; existing ones resume)')
    parser.add_argument('--runs', default=None,
                        help='folder of the run folders instead of OUT/runs: a shorter call '
                             'with other modes reads the longer runs of the modes both have')
    return common.check_arguments(parser, parser.parse_args(argv), 'mode', MODES)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    machine = cli.cpu_model()
    print(f'CPU: {machine}', flush=True)
    results = {}
    for seed in args.seeds:
        for mode in args.modes:
            results[(mode, seed)] = run_once(mode, seed, args)
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
        json.dump([{'mode': mode, 'seed': seed, 'train_args': MODES[mode], 'cpu': machine,
                    'evaluations': [{'n_images': images, 'train_seconds': seconds, 'fid': fid}
                                    for images, seconds, fid in fids]}
                   for (mode, seed), fids in results.items()], f, indent=2)
    summary, target = summarise(results, args.modes)
    write_plot(summary, os.path.join(args.out, 'time_to_fid.png'))
    if target is not None:
        write_table(summary, target, args.seeds, os.path.join(args.out, 'time_to_fid.md'))
        with open(os.path.join(args.out, 'time_to_fid.md')) as f:
            print(f.read())
    print(f'Wrote {args.out}/results.json, time_to_fid.png' + (', time_to_fid.md' if target else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
