"""Distances between two sets of Inception features: the Fréchet distance (FID), computed exactly
from eigenvalues rather than a matrix square root, the unbiased Kernel Inception Distance, and
the scores fid.py reports (with precision, recall, density and coverage from knn_metrics.py).

    mu, sigma = distances.activation_statistics(features)          # (N, 2048) -> (2048,), (2048, 2048)
    fid_value = distances.frechet_distance(mu1, sigma1, mu2, sigma2)
"""
import warnings

import numpy as np
import scipy.linalg

import knn_metrics
from config import UserError


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
