"""Train LadaGAN.

    python train.py                                   # demo: OpenMoji emoji, 32 px, CPU minutes
    python train.py --preset cifar10 --file_pattern data/cifar10 --model_dir runs/cifar10  # prepared
    python train.py --preset ffhq_128 --file_pattern data/ffhq --set batch_size=32 --model_dir runs/ffhq
    python train.py --model_dir runs/cifar10          # resume: config, data, counters, RNG, best FID
    python train.py --preset tiny --dry_run           # print the resolved config and exit
    python train.py --preset cifar10 --file_pattern data/cifar10 --fast   # lazy R1
    python train.py --model_dir runs/demo --report    # write runs/demo/report.html

--file_pattern takes a set prepared by prepare.py, or any image folder, which the first run
decodes into the image cache (store.py). The loop itself is trainer.py's Trainer.

A run folder holds config.json, run.json (its data and schedule), training-checkpoints/ (latest),
best-training-checkpoints/ (best FID; the official layout, loadable by the authors' code and by
generate.py), log-dir/ (TensorBoard), samples/ (fixed-seed grids and attention maps),
metrics.jsonl, events.jsonl (the guard's decisions), loss_curves.png and report.html.
"""
import time

STARTED = time.perf_counter()  # the start-up line counts imports too

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402

import cli  # noqa: E402  (first: see cli.py)

if __name__ == '__main__':
    cli.import_tensorflow_quietly()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # imported, e.g. in a notebook

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

import batches  # noqa: E402
import checkpoints  # noqa: E402
import config as config_lib  # noqa: E402
import distribute  # noqa: E402
import fid as fid_lib  # noqa: E402
import gan  # noqa: E402
import report  # noqa: E402
from config import UserError  # noqa: E402
from trainer import TrainingDivergedError, Trainer  # noqa: E402

# `python train.py` with no dataset trains the demo preset for this many iterations
# (48,000 images: about 10 minutes on an idle 2-core CPU, FID included).
DEMO_TOTAL_ITER = 1500
DEMO_FID_INTER = 1500
DEMO_CKPT_INTER = 500


def option_defaults(known):
    """Defaults of the options a run records, from those given or recorded (`known`, None where
    neither): `python train.py` with no data trains the short demo schedule, and checkpoints
    follow the FID interval unless the demo's own schedule applies."""
    demo = known['file_pattern'] is None
    fid_inter = DEMO_FID_INTER if demo else 5000
    if known['fid_inter'] is None:
        ckpt_inter = DEMO_CKPT_INTER if demo else fid_inter
    else:
        ckpt_inter = known['fid_inter'] or 5000  # 0: FID off
    return {'file_pattern': None, 'eval_dir': None,
            'total_iter': DEMO_TOTAL_ITER if demo else None,  # None: until stopped
            'fid_inter': fid_inter, 'ckpt_inter': ckpt_inter,
            'metrics_inter': 100, 'max_ckpt_to_keep': 2}


def make_fid_evaluator(conf, eval_source, class_counts=None, class_names=None):
    """A callable generator -> FID, or None (with one printed line) when FID cannot run."""
    try:
        return fid_lib.training_evaluator(conf, eval_source, class_counts, class_names)
    except (UserError, OSError, RuntimeError) as err:
        tqdm.write(f'FID disabled: {err}')
        return None


def train(conf, model_dir, options, record, strategy=None, init=None, data_cache=True,
          started=None, class_counts=None):
    """Train (or resume) the run in `model_dir` with the resolved `options` (see
    checkpoints.resolve_options); `record` is the run.json the chief writes before the first
    step; `init`: the weights a run with no checkpoint starts from (checkpoints.init_weights);
    data_cache=False decodes image folders into memory instead of the image cache (store.py);
    `started`: the time.perf_counter() the command started at, for the start-up line;
    `class_counts`: a conditional run's images of each class (resolve_classes).
    Returns the Trainer."""
    strategy = strategy or tf.distribute.get_strategy()
    trainer = Trainer(conf, model_dir, options, strategy, init, class_counts)
    if init and not trainer.ckpts.resume_from:
        print(f'G, its EMA and D start from {record["init_from"]["checkpoint"]}; the optimizers, '
              'counters, RNG and FID history start fresh')
    os.makedirs(trainer.write_dir, exist_ok=True)
    make_dataset = distribute.make_distributed_dataset(
        strategy, checkpoints.training_images_of(options, conf.img_size), conf, data_cache)
    if trainer.chief:
        # Written whole or not at all; an older config.json gains the keys added since.
        checkpoints.write_json_atomic(os.path.join(model_dir, 'config.json'), conf.to_dict())
        checkpoints.write_json_atomic(os.path.join(model_dir, checkpoints.RUN_RECORD), record)
    print(conf.to_json())
    trainer.restore()
    if options['fid_inter'] and trainer.chief:
        # The real statistics are computed (or loaded) now, not in the middle of the run.
        trainer.fid_evaluator = make_fid_evaluator(
            conf, checkpoints.fid_reference_of(options, conf.img_size), class_counts,
            record.get('classes'))
    trainer.finish_pending_evaluation()
    trainer.started = started
    trainer.run(make_dataset)
    if not trainer.chief:
        shutil.rmtree(trainer.write_dir, ignore_errors=True)
    print(f'Done: {trainer.step * trainer.batch:,} images seen; run folder {model_dir}')
    return trainer


# ---------------------------------------------------------------------- command line

def _seconds(text):
    """--collective_timeout's value: seconds, 0 or more."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float('inf'):
        raise argparse.ArgumentTypeError(f'{text!r} is not allowed: give 0 (no timeout) or a '
                                         'number of seconds')
    return seconds


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train LadaGAN.', formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('--file_pattern', help='training images: a folder or a glob '
                        '(default: the built-in OpenMoji demo set)')
    parser.add_argument('--eval_dir', help='FID reference images (default: the training set)')
    parser.add_argument('--model_dir', default=None,
                        help='run folder; an existing run is resumed (default: runs/demo or '
                             'runs/<preset>)')
    parser.add_argument('--metrics_inter', type=int, default=None,
                        help='log losses every this many iterations (default 100)')
    parser.add_argument('--fid_inter', type=int, default=None,
                        help='evaluate FID and save checkpoints every this many iterations; '
                             f'0 turns FID off (default 5000, demo {DEMO_FID_INTER})')
    parser.add_argument('--ckpt_inter', type=int, default=None,
                        help='save the latest checkpoint every this many iterations '
                             f'(default: fid_inter, or 5000 with FID off; demo {DEMO_CKPT_INTER})')
    parser.add_argument('--total_iter', type=int, default=None,
                        help='stop after this many iterations in all (default: until stopped; '
                             f'demo {DEMO_TOTAL_ITER})')
    parser.add_argument('--max_ckpt_to_keep', type=int, default=None,
                        help='latest checkpoints to keep (default 2)')
    parser.add_argument('--preset', help='config preset: ' + ', '.join(config_lib.presets))
    parser.add_argument('--init_from', metavar='SOURCE',
                        help='start a new run from pretrained weights (G, its EMA, D): a run '
                             "folder, a folder in the authors' layout or official:NAME; without "
                             "--preset the source's config, with --set changes")
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='override a config key (repeatable), e.g. --set batch_size=64')
    parser.add_argument('--seed', type=int, default=None, help='shortcut for --set seed=N')
    parser.add_argument('--fast', action='store_true',
                        help='train faster than the official recipe: '
                             + ', '.join(f'{key}={value}' for key, value in gan.FAST_SETTINGS.items())
                             + ' (lazy R1; docs/faster-training.md)')
    parser.add_argument('--report', action='store_true',
                        help='write RUN/report.html (config, FID and loss curves, samples, '
                             'attention maps, the guard\'s events) for --model_dir and exit')
    parser.add_argument('--dry_run', action='store_true',
                        help='print the resolved config and exit')
    parser.add_argument('--no_data_cache', action='store_true',
                        help='decode an image folder into memory at every start instead of into '
                             'the image cache (~/.cache/ladagan/image-cache; a prepared set needs '
                             'neither)')
    parser.add_argument('--strategy', default='auto', choices=distribute.STRATEGIES,
                        help='tf.distribute strategy (default auto: TF_CONFIG -> multiworker, '
                             'TPU -> tpu, several GPUs -> mirrored, else one device)')
    parser.add_argument('--collective_timeout', type=_seconds,
                        default=distribute.COLLECTIVE_TIMEOUT, metavar='SECONDS',
                        help='multi-worker runs: a collective of the training step that waits '
                             'longer for the other workers fails the run instead of hanging '
                             '(default 0: wait for ever; TensorFlow holds a thread per timed '
                             'collective for this long: docs/distributed.md)')
    args = parser.parse_args(argv)
    for name in ('metrics_inter', 'total_iter', 'max_ckpt_to_keep', 'ckpt_inter'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name}={value} must be a positive integer')
    if args.fid_inter is not None and args.fid_inter < 0:
        parser.error(f'--fid_inter={args.fid_inter} must be 0 (off) or a positive integer')
    if args.model_dir is None:
        args.model_dir = os.path.join('runs', args.preset or ('demo' if args.file_pattern is None
                                                              else 'default'))
    return args


def resolve_classes(conf, options, record):
    """(conf, images of each class) of a conditional run: its classes are its training set's
    labels (batches.class_counts), recorded in run.json; a resumed run's must be its data's."""
    images = checkpoints.training_images_of(options, conf.img_size)
    names, counts = batches.class_counts(images)
    if conf.num_classes and conf.num_classes != len(names):
        raise UserError(f'the run has num_classes={conf.num_classes} but its training set {images} '
                        f'has {len(names)} classes: train on the data it was trained on, or use a '
                        'new --model_dir')
    record['classes'] = list(names)
    print(f'Classes: {len(names)} ({", ".join(names[:10])}{", ..." if len(names) > 10 else ""}); '
          f'images of each: {counts.min():,} to {counts.max():,}')
    return conf.replace(num_classes=len(names)), counts


def check_data(options, conf, args):
    """Refuse missing, empty or too small training and FID image sets (UserError), saying when
    a path came from the run's record; the built-in demo set (file_pattern None) is enough."""
    file_pattern, eval_dir = options['file_pattern'], options['eval_dir']
    try:
        if file_pattern is not None:
            batches.check_train_images(file_pattern, conf.img_size, conf.batch_size,
                                       conf.center_crop)
        fid_source = eval_dir or file_pattern
        if options['fid_inter'] and fid_source is not None:
            fid_lib.check_fid_images(fid_source, conf.n_fid_real,
                                  '--eval_dir' if eval_dir else '--file_pattern')
    except UserError as err:
        recorded = [f'--{name}' for name in checkpoints.RECORDED_PATHS
                    if options[name] is not None and getattr(args, name) is None]
        if not recorded:
            raise
        raise UserError(f'{err} ({" and ".join(recorded)} as recorded in '
                        f'{os.path.join(args.model_dir, checkpoints.RUN_RECORD)}: give the '
                        "data's new place on the command line)") from None


def _collective_failure_sentence(err, collective_timeout):
    """The sentence for a multi-worker run whose collectives failed with `err`."""
    if isinstance(err, tf.errors.DeadlineExceededError):
        return (f'a collective of the training step waited {collective_timeout:g} s for the other '
                'workers (--collective_timeout): one of them fell that far behind, or the workers '
                'took different paths through the step (a bug: please report it) or opened its '
                'data more slowly (raise the timeout); the same commands resume from the latest '
                'checkpoint')
    return ('this worker lost another worker of the run (stopped: its output says why, or '
            'unreachable); the same commands on every worker resume from the latest checkpoint')


def main(argv=None, started=None):
    """The command line; `started`: when the command started (time.perf_counter), by default
    when main was called."""
    started = time.perf_counter() if started is None else started
    args = parse_args(argv)
    strategy = None
    try:
        if args.report:
            if not os.path.isfile(os.path.join(args.model_dir, 'config.json')):
                raise UserError(f'--model_dir {args.model_dir} holds no run (no config.json) to '
                                'report on')
            print(f'Wrote {report.write_report(args.model_dir)}')
            return 0
        overrides = dict(config_lib.parse_override(item) for item in args.set)
        if args.seed is not None:
            overrides['seed'] = args.seed
        if args.fast:  # --set still overrides it
            overrides = {**gan.FAST_SETTINGS, **overrides}
        # `python train.py` with no data and no config changes starts the demo.
        demo = args.file_pattern is None and not args.set
        conf, resumed, notices = checkpoints.resolve_config(
            args.model_dir, args.preset, overrides, new_run_preset='demo' if demo else None,
            from_source=bool(args.init_from))
        source, conf, started_from = checkpoints.starting_point(
            args.model_dir, args.init_from, args.preset, conf, overrides, resumed)
        if args.dry_run:
            print(conf.to_json())
            return 0
        given = {name: getattr(args, name) for name in checkpoints.RECORDED_OPTIONS}
        options, record, option_notices = checkpoints.resolve_options(
            args.model_dir, given, option_defaults, resumed)
        if started_from:
            record['init_from'] = started_from
        for notice in notices + option_notices:
            print(f'notice: {notice}')
        # Bad input is refused here, before anything in --model_dir is created or changed.
        check_data(options, conf, args)
        class_counts = None
        if conf.conditional:
            conf, class_counts = resolve_classes(conf, options, record)
        # Multi-worker strategies must exist before any other TensorFlow op runs.
        strategy = distribute.make_strategy(args.strategy, args.collective_timeout)
        if resumed:
            checkpoints.check_run_checkpoints(args.model_dir, conf)
        init = source and checkpoints.init_weights(source, conf, f'--preset {args.preset}' if
                                                   args.preset else "the source's config")
        # Weights are drawn from Keras' global seed, so --seed must set it for runs to repeat.
        keras.utils.set_random_seed(conf.seed)
        train(conf, args.model_dir, options, record, strategy, init,
              data_cache=not args.no_data_cache, started=started, class_counts=class_counts)
    except UserError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except TrainingDivergedError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError,
            tf.errors.AbortedError) as err:
        if strategy is None or distribute.one_worker(strategy):
            raise
        print(f'error: {_collective_failure_sentence(err, args.collective_timeout)}',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(started=STARTED))
