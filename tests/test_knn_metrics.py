"""knn_metrics.py: precision, recall, density and coverage agree with the reference `prdc`
package, behave as the papers say on real image sets, and nearest neighbours are exact."""
import numpy as np
import prdc as reference  # the authors' package (Naeem et al.), a test-only dependency
import pytest

import config
import inception
import knn_metrics
from conftest import render_emoji_images, render_shape_images


def test_a_set_against_itself_is_fully_precise_recalled_and_covered():
    features = np.random.default_rng(0).standard_normal((200, 16))
    result = knn_metrics.prdc(features, features)
    assert result['precision'] == result['recall'] == result['coverage'] == 1.0
    assert result['density'] > 0.9


@pytest.mark.parametrize('block_rows', [37, 1024])  # blocks smaller than a set, and one block
def test_agrees_with_the_prdc_package_to_1e_6(block_rows, monkeypatch):
    monkeypatch.setattr(knn_metrics, 'BLOCK_ROWS', block_rows)
    rng = np.random.default_rng(1)
    real = rng.standard_normal((300, 64))
    for fake in (rng.standard_normal((250, 64)) * 1.2 + 0.1, rng.standard_normal((300, 64))):
        ours = knn_metrics.prdc(real, fake)
        theirs = reference.compute_prdc(real, fake, nearest_k=3)
        for key, value in theirs.items():
            assert abs(ours[key] - float(value)) < 1e-6, (key, ours[key], value)
        assert 0.05 < ours['precision'] < 1  # not a degenerate case


def test_halves_of_one_dataset_score_near_one_and_unrelated_sets_low(standard_extractor,
                                                                      tmp_path):
    render_emoji_images(str(tmp_path / 'emoji'), 96)
    render_shape_images(str(tmp_path / 'shapes'), 48)
    features = {name: inception.extract_file_features(
        sorted(str(path) for path in (tmp_path / name).iterdir()), standard_extractor,
        progress=False) for name in ('emoji', 'shapes')}
    # Interleaved halves: two samples of one set of emoji.
    same = knn_metrics.prdc(features['emoji'][0::2], features['emoji'][1::2])
    unrelated = knn_metrics.prdc(features['emoji'][0::2], features['shapes'])
    for key in ('precision', 'recall', 'coverage'):
        assert same[key] > 0.7, same
        assert unrelated[key] < 0.2, unrelated
    assert same['density'] > 0.5 and unrelated['density'] < 0.1


def test_nearest_neighbours_are_exact_and_nearest_first(monkeypatch):
    monkeypatch.setattr(knn_metrics, 'BLOCK_ROWS', 5)
    rng = np.random.default_rng(2)
    queries, references = rng.standard_normal((12, 8)), rng.standard_normal((40, 8))
    indices, distances = knn_metrics.nearest_neighbours(queries, references, 4)
    brute = np.linalg.norm(queries[:, None] - references[None], axis=-1)  # (12, 40)
    np.testing.assert_array_equal(indices, np.argsort(brute, axis=1)[:, :4])
    np.testing.assert_allclose(distances, np.sort(brute, axis=1)[:, :4], atol=1e-9)


def test_too_few_images_is_one_sentence_for_the_user():
    rng = np.random.default_rng(3)
    with pytest.raises(config.UserError, match=r'PRDC with k=3 needs more than 3 real and fake '
                                               r'feature vectors, got 3 and 10'):
        knn_metrics.prdc(rng.standard_normal((3, 4)), rng.standard_normal((10, 4)))
