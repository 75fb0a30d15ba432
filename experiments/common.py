"""What the experiments share: train.py runs in subprocesses and their FID records, and the
command line's lists of arms and seeds."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(run_dir, arguments, label):
    """Run train.py with `arguments` into `run_dir` (a finished or stopped run resumes, so an
    experiment started again goes on where it stopped); its FID records [(images seen, training
    seconds, FID)]. A failed run ends the experiment with its error."""
    command = [sys.executable, os.path.join(ROOT, 'train.py'), '--model_dir', run_dir] + arguments
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f'{label} failed (exit {result.returncode}):\n' + result.stderr[-3000:])
    with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
        records = [json.loads(line) for line in f]
    return [(r['n_images'], r['train_seconds'], r['fid']) for r in records if 'fid' in r]


def add_arguments(parser, kind, names, default, seeds='0,1'):
    """The options both experiments take: --`kind`s (comma-separated, of `names`), --seeds."""
    parser.add_argument(f'--{kind}s', default=','.join(default),
                        help=f'comma-separated {kind}s, of ' + ', '.join(names) + ' (default: '
                             + ', '.join(default) + ')')
    parser.add_argument('--seeds', default=seeds, help=f'comma-separated seeds (default {seeds})')


def check_arguments(parser, args, kind, names):
    """Parse --`kind`s and --seeds into lists, and check the FID schedule (parser.error)."""
    chosen = [name.strip() for name in getattr(args, kind + 's').split(',') if name.strip()]
    unknown = [name for name in chosen if name not in names]
    if unknown or not chosen:
        parser.error(f'--{kind}s {",".join(unknown)} is not known: use some of {", ".join(names)}')
    setattr(args, kind + 's', chosen)
    try:
        args.seeds = [int(seed) for seed in args.seeds.split(',')]
    except ValueError:
        parser.error(f'--seeds {args.seeds} is not a comma-separated list of integers')
    if args.total_iter < args.fid_inter or args.fid_inter < 1:
        parser.error('--fid_inter must be positive and at most --total_iter')
    return args
