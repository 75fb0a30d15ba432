"""What a class-conditional generator is judged by, on the Inception features FID computes:

- FID over the label distribution: generated classes drawn as often as the real set holds them;
- per-class FID (intra-FID) and per-class KID (unbiased, so that a class of a few hundred images
  still gives a fair number; each class's counts are reported beside it);
- class accuracy: a k-nearest-neighbour classifier on the real images' features (k = 5,
  majority vote, exact distances) applied to the images generated for each class; its
  leave-one-out accuracy on the real images themselves is the ceiling it is read against;
- the Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) over 10 splits, from
  the 1,008 logits of the same 2015 Inception network (its classifier layer on the pool
  features; fid_weights.classifier_layer), for conditional and unconditional runs alike.

    scores = class_metrics.conditional_scores(real, real_labels, fake, fake_labels, num_classes)
"""
import numpy as np

import distances
import knn_metrics
from config import UserError

NEIGHBOURS = 5
IS_SPLITS = 10


def draw_labels(class_counts, num, seed):
    """int32 (num,): classes in proportion to `class_counts`, from a seeded generator: the same
    for every evaluation of a run, so that its scores move only with the generator."""
    frequencies = np.asarray(class_counts, np.float64)
    return np.random.default_rng(seed).choice(len(frequencies), size=num,
                                              p=frequencies / frequencies.sum()).astype(np.int32)


def inception_score(logits, splits=IS_SPLITS):
    """(mean, std) over `splits` equal parts of exp(E_x KL(p(y|x) || p(y))), p(y|x) the softmax
    of each row of `logits` (N, classes), p(y) its mean over the part, as Salimans et al.'s
    code computes it (the softmax over all 1,008 outputs of the 2015 network)."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or len(logits) < splits:
        raise UserError(f'The Inception Score over {splits} splits needs at least {splits} '
                        f'images, got {len(logits)}')
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, classes)
    scores = []
    for part in np.array_split(log_p, splits):
        log_marginal = np.log(np.exp(part).mean(axis=0))                    # (classes,)
        kl = (np.exp(part) * (part - log_marginal)).sum(axis=1)             # (n,)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def knn_predict(reference_features, reference_labels, queries, k=NEIGHBOURS,
                leave_one_out=False):
    """The majority class of each query's k nearest reference rows (ties: the nearer class).
    With leave_one_out the queries are the references, each left out of its own vote."""
    reference_labels = np.asarray(reference_labels)
    indices, _ = knn_metrics.nearest_neighbours(queries, reference_features,
                                                k + int(leave_one_out))
    if leave_one_out:  # drop each row itself (one column), wherever duplicates put it
        own = indices == np.arange(len(indices))[:, None]
        own[own.sum(axis=1) == 0, -1] = True
        indices = indices[~own].reshape(len(indices), k)
    votes = reference_labels[indices]                                       # (Q, k), nearest first
    predictions = np.empty(len(votes), reference_labels.dtype)
    for row, labels in enumerate(votes):
        counts = np.bincount(labels)
        best = np.flatnonzero(counts == counts.max())
        predictions[row] = next(label for label in labels if label in best)  # nearest of ties
    return predictions


def conditional_scores(real_features, real_labels, fake_features, fake_labels, num_classes,
                       class_names=None, per_class=True):
    """{'class_accuracy', 'class_accuracy_ceiling', 'classes': [{'name', 'real', 'generated',
    'fid', 'kid_mean', 'kid_std', 'accuracy'}, ...]} of generated features whose classes are
    `fake_labels` against real features labelled `real_labels` (FID over the label distribution
    is fid.scores' of all of them). per_class=False leaves out the per-class FID and KID (the
    in-training evaluation logs accuracy only)."""
    real_labels, fake_labels = np.asarray(real_labels), np.asarray(fake_labels)
    result = {}
    predicted = knn_predict(real_features, real_labels, fake_features)
    result['class_accuracy'] = float((predicted == fake_labels).mean())
    ceiling = knn_predict(real_features, real_labels, real_features, leave_one_out=True)
    result['class_accuracy_ceiling'] = float((ceiling == real_labels).mean())
    classes = []
    for label in range(num_classes):
        real, fake = real_features[real_labels == label], fake_features[fake_labels == label]
        entry = {'name': class_names[label] if class_names else str(label), 'real': len(real),
                 'generated': len(fake), 'accuracy': float((predicted[fake_labels == label] ==
                                                            label).mean()) if len(fake) else
                 float('nan')}
        if per_class and min(len(real), len(fake)) >= 2:
            entry['fid'] = distances.frechet_distance(*distances.activation_statistics(real),
                                                      *distances.activation_statistics(fake))
            entry['kid_mean'], entry['kid_std'] = distances.kernel_inception_distance(real, fake)
        classes.append(entry)
    result['classes'] = classes
    return result
