"""Precision, recall, density and coverage of generated against real features.

Precision and recall as Kynkäänniemi et al. 2019 (k-nearest-neighbour manifolds, k = 3),
density and coverage as Naeem et al. 2020 ("Reliable fidelity and diversity metrics for
generative models"), on the same 2048-d Inception pool features as FID:

    real radius r_i  = distance of real i to its k-th nearest other real
    fake radius s_j  = distance of fake j to its k-th nearest other fake
    precision = mean_j [ exists i: |f_j - r_i| < r_i ]       fakes inside the real manifold
    recall    = mean_i [ exists j: |r_i - f_j| < s_j ]       reals inside the fake manifold
    density   = mean_j  #{ i: |f_j - r_i| < r_i } / k
    coverage  = mean_i [ min_j |r_i - f_j| < r_i ]           reals with a fake close by

Distances are exact (float64), computed a block of rows at a time, so 50,000 x 50,000 needs a
few GB of memory, not the 20 GB of a full distance matrix.
"""
import numpy as np

from config import UserError

NEAREST_K = 3
BLOCK_ROWS = 1024


def _squared_norms(features):
    return np.einsum('ij,ij->i', features, features)


def _distance_blocks(rows, columns, column_norms=None):
    """Yield (start, (block, len(columns)) Euclidean distances) for blocks of `rows`."""
    column_norms = _squared_norms(columns) if column_norms is None else column_norms
    for start in range(0, len(rows), BLOCK_ROWS):
        block = rows[start:start + BLOCK_ROWS]
        squared = _squared_norms(block)[:, None] + column_norms[None, :] - 2.0 * block @ columns.T
        yield start, np.sqrt(np.maximum(squared, 0.0))


def nearest_neighbour_radii(features, k=NEAREST_K):
    """(N,) distance of each row to its k-th nearest other row (itself excluded)."""
    radii = np.empty(len(features))
    norms = _squared_norms(features)
    for start, distances in _distance_blocks(features, features, norms):
        rows = np.arange(len(distances))
        distances[rows, start + rows] = np.inf  # a point is not its own neighbour
        radii[start:start + len(distances)] = np.partition(distances, k - 1, axis=1)[:, k - 1]
    return radii


def prdc(real_features, fake_features, k=NEAREST_K):
    """{'precision', 'recall', 'density', 'coverage'} of fakes (M, d) against reals (N, d)."""
    real = np.asarray(real_features, dtype=np.float64)
    fake = np.asarray(fake_features, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f'PRDC needs two feature arrays (N, d) with the same d, got '
                         f'{real.shape} and {fake.shape}')
    if min(len(real), len(fake)) <= k:  # the user's image count, so one sentence, exit code 2
        raise UserError(f'PRDC with k={k} needs more than {k} real and fake feature vectors, '
                         f'got {len(real)} and {len(fake)}')
    real_radii = nearest_neighbour_radii(real, k)
    fake_radii = nearest_neighbour_radii(fake, k)
    fake_hits = np.zeros(len(fake), np.int64)         # reals whose ball holds each fake
    recalled = np.zeros(len(real), bool)             # reals inside some fake's ball
    covered = np.zeros(len(real), bool)              # reals whose nearest fake is in their ball
    for start, distances in _distance_blocks(real, fake):  # (block of reals, fakes)
        radii = real_radii[start:start + len(distances), None]
        inside = distances < radii
        fake_hits += inside.sum(axis=0)
        recalled[start:start + len(distances)] = (distances < fake_radii[None, :]).any(axis=1)
        covered[start:start + len(distances)] = distances.min(axis=1) < radii[:, 0]
    return {'precision': float((fake_hits > 0).mean()), 'recall': float(recalled.mean()),
            'density': float(fake_hits.mean() / k), 'coverage': float(covered.mean())}


def nearest_neighbours(queries, references, k):
    """(indices (Q, k), distances (Q, k)) of the k nearest references of each query, nearest
    first: exact Euclidean distances in float64, a block of queries at a time."""
    queries = np.asarray(queries, dtype=np.float64)
    references = np.asarray(references, dtype=np.float64)
    k = min(k, len(references))
    indices = np.empty((len(queries), k), np.int64)
    distances = np.empty((len(queries), k))
    for start, block in _distance_blocks(queries, references):
        nearest = np.argsort(block, axis=1, kind='stable')[:, :k]  # (block, k)
        indices[start:start + len(block)] = nearest
        distances[start:start + len(block)] = np.take_along_axis(block, nearest, axis=1)
    return indices, distances
