"""batches.py: the run's data order (windows of chunks), x-flips, sharding, and the uint8
pipeline that reads them from the image cache, from memory or from a prepared set."""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import batches  # noqa: E402
import store  # noqa: E402
from config import UserError  # noqa: E402

SIZE = 16
# Windows of 13 chunks of 3 images (39 images) on the 151-file sets below: several a epoch.
SMALL_WINDOW = 40 * SIZE * SIZE * 3


def id_folder(root, count, bad=0):
    """`count` images whose index is written in their pixels (red + 256 * green / 16), the left
    half's blue 10 and the right half's 250 (a flip shows), and `bad` files that do not decode,
    sorted among them."""
    os.makedirs(root, exist_ok=True)
    for index in range(count):
        pixels = np.zeros((SIZE, SIZE + 3, 3), np.uint8)
        pixels[..., 0], pixels[..., 1] = index % 256, index // 256 * 16
        pixels[:, :(SIZE + 3) // 2, 2], pixels[:, (SIZE + 3) // 2:, 2] = 10, 250
        Image.fromarray(pixels).save(os.path.join(root, f'{index:04d}.png'))
    for index in range(bad):
        with open(os.path.join(root, f'{index * 37 + 5:04d}b.png'), 'w') as f:
            f.write('not an image')
    return root


def ids_and_flips(batch):
    """(ids, flipped) of a uint8 batch (B, S, S, 3) of id_folder's images."""
    batch = np.asarray(batch)
    ids = batch[:, SIZE // 2, SIZE // 2, 0].astype(int) + 16 * batch[:, SIZE // 2, SIZE // 2, 1]
    return list(ids), list(batch[:, SIZE // 2, 1, 2] > 128)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('LADAGAN_CACHE_DIR', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


@pytest.mark.filterwarnings('ignore:Skipped 2 of 153')
@pytest.mark.parametrize('data_cache', [True, False], ids=['image_cache', 'in_memory'])
def test_batches_follow_the_order_in_windows_and_resume_from_any_step(tmp_path, cache, data_cache):
    root = id_folder(str(tmp_path / 'ids'), 151, bad=2)  # undecodable files are left out
    images = batches.TrainingImages(root, SIZE, 8, seed=3, mirror=True, cache=data_cache,
                                    window_bytes=SMALL_WINDOW)
    order = images.order
    assert images.num_images == 151 and order.batches_per_epoch == 18
    assert order.chunk_images == 3 and order.window_chunks == 13 and len(order.windows(0)) == 4
    drawn = [batch.numpy() for batch in images.dataset().take(3 * 18 + 5)]
    assert all(batch.dtype == np.uint8 and batch.shape == (8, SIZE, SIZE, 3) for batch in drawn)
    for step, batch in enumerate(drawn):
        ids, flips = ids_and_flips(batch)
        items, expected_flips = order.batch(step)
        assert ids == list(items) and flips == list(expected_flips), step
    for epoch in range(3):
        items, flips = order.epoch_items(epoch)
        assert sorted(items) == list(range(151))  # a permutation; batches leave out the last 7
        position = 0
        for window in order.windows(epoch):  # each window draws exactly its chunks' images
            members = {int(chunk) * 3 + offset for chunk in window
                       for offset in range(3)} & set(range(151))
            assert set(items[position:position + len(members)]) == members
            position += len(members)
        assert 0.3 < flips.mean() < 0.7
    assert not np.array_equal(order.epoch_items(0)[0], order.epoch_items(1)[0])
    # A resumed run asks for its step: the uninterrupted run's batches, across window and epoch
    # ends, with nothing but the step to go on.
    for start in (1, 4, 5, 17, 18, 19, 40):
        resumed = batches.TrainingImages(root, SIZE, 8, seed=3, mirror=True, cache=data_cache,
                                         window_bytes=SMALL_WINDOW)
        again = [batch.numpy() for batch in resumed.dataset(start).take(len(drawn) - start)]
        assert all(np.array_equal(a, b) for a, b in zip(again, drawn[start:])), start
    other = batches.TrainingImages(root, SIZE, 8, seed=4, cache=data_cache,
                                   window_bytes=SMALL_WINDOW)
    assert ids_and_flips(next(iter(other.dataset())))[0] != ids_and_flips(drawn[0])[0]


@pytest.mark.filterwarnings('ignore:Skipped 1 of 25')
def test_the_cache_and_memory_draw_the_same_batches_on_a_set_with_undecodable_files(tmp_path,
                                                                                    cache):
    """The way a run reads its images never changes what it draws: a resume may read them
    otherwise (tests/test_robustness.py resumes a real run across the two)."""
    root = id_folder(str(tmp_path / 'ids'), 24, bad=1)
    runs = [batches.TrainingImages(root, SIZE, 4, seed=0, mirror=True, cache=data_cache)
            for data_cache in (True, False)]
    cached, in_memory = ([batch.numpy() for batch in run.dataset(3).take(20)] for run in runs)
    assert all(np.array_equal(a, b) for a, b in zip(cached, in_memory))
    # Small sets are one window: a uniform permutation every epoch.
    assert runs[0].order.window_chunks >= len(runs[0].order.chunk_sizes)


def test_mirror_is_off_by_default_and_leaves_the_order_alone(tmp_path, cache):
    root = id_folder(str(tmp_path / 'ids'), 20)
    plain = batches.TrainingImages(root, SIZE, 4, seed=5)
    mirrored = batches.TrainingImages(root, SIZE, 4, seed=5, mirror=True)
    plain_batches = [ids_and_flips(b) for b in plain.dataset().take(10)]
    mirrored_batches = [ids_and_flips(b) for b in mirrored.dataset().take(10)]
    assert not any(any(flips) for _, flips in plain_batches)  # the official recipe: no flips
    assert [ids for ids, _ in plain_batches] == [ids for ids, _ in mirrored_batches]
    assert 8 <= sum(sum(flips) for _, flips in mirrored_batches) <= 32  # 40 draws at 1/2


def test_the_pipeline_from_a_store_runs_no_python(tmp_path, cache):
    """A store is read by TensorFlow's own ops (no Python per image, so a TPU host could run
    it); images decoded into memory are sliced in one Python call per chunk."""
    root = id_folder(str(tmp_path / 'ids'), 20)

    def python_ops(data_cache):
        dataset = batches.TrainingImages(root, SIZE, 4, seed=0, cache=data_cache).dataset()
        graph = dataset._as_serialized_graph().numpy()  # the whole pipeline, functions included
        return graph.count(b'PyFunc')
    assert python_ops(True) == 0 and python_ops(False) > 0


def test_shards_read_their_own_chunks(tmp_path, cache):
    root = id_folder(str(tmp_path / 'ids'), 150)
    shards = [batches.TrainingImages(root, SIZE, 5, seed=0, num_shards=3, shard_index=index)
              for index in range(3)]
    assert [list(shard.order.chunk_ids) for shard in shards] == [
        list(range(index, 50, 3)) for index in range(3)]  # chunk_length(150, 16) = 3: 50 chunks
    seen = [set(shard.order.epoch_items(0)[0]) for shard in shards]
    assert set.union(*seen) == set(range(150)) and sum(map(len, seen)) == 150
    for shard, items in zip(shards, seen):
        ids = {i for batch in shard.dataset().take(shard.order.batches_per_epoch)
               for i in ids_and_flips(batch)[0]}
        assert ids <= items and all(i // 3 % 3 == shard.order.shard for i in ids)
    with pytest.raises(UserError, match='shard_index=3'):
        batches.TrainingImages(root, SIZE, 3, num_shards=3, shard_index=3)


def test_too_few_images_and_bad_arguments_are_refused(tmp_path, cache):
    root = id_folder(str(tmp_path / 'ids'), 3)
    with pytest.raises(UserError, match='fewer than batch_size=4'):
        batches.TrainingImages(root, SIZE, 4)
    with pytest.raises(UserError, match='fewer than batch_size=4'):
        batches.check_train_images(root, SIZE, 4)
    with pytest.raises(UserError, match='img_size=0'):
        batches.TrainingImages(root, 0, 2)
    bad = str(tmp_path / 'bad')
    os.makedirs(bad)
    for index in range(3):
        with open(os.path.join(bad, f'{index}.png'), 'w') as f:
            f.write('x')
    with pytest.raises(UserError, match='None of the 3 image files could be decoded'):
        batches.TrainingImages(bad, SIZE, 2)
    with pytest.raises(UserError, match='None of the 3 image files could be decoded'):
        batches.TrainingImages(bad, SIZE, 2, cache=False)
    # No cache of the undecodable folder, and nothing half-made.
    assert [name.split('-')[0] for name in os.listdir(os.path.join(cache, 'image-cache'))] == [
        'ids']


def test_a_prepared_set_is_read_from_its_store_at_its_size_and_crop(tmp_path, cache):
    prepared = str(tmp_path / 'prepared')
    writer = store.StoreWriter(os.path.join(prepared, store.PREPARED_PIXELS), SIZE, 12)
    for index in range(12):
        writer.add(np.full((SIZE, SIZE, 3), index, np.uint8))
    writer.close()
    with open(os.path.join(prepared, store.PREPARED_META), 'w') as f:
        f.write(f'{{"img_size": {SIZE}, "transform": "squash"}}')
    images = batches.TrainingImages(prepared, SIZE, 4, seed=1)
    drawn = [int(v) for b in images.dataset().take(3) for v in b.numpy()[:, 0, 0, 0]]
    assert sorted(drawn) == list(range(12))
    with pytest.raises(UserError, match=f'prepared at {SIZE} px but the run trains at img_size 32'):
        batches.check_train_images(prepared, 32, 4)
    with pytest.raises(UserError, match='center_crop=True asks to crop images, but .* '
                                        'was prepared with --transform squash'):
        batches.check_train_images(prepared, SIZE, 4, center_crop=True)
    assert not os.path.exists(cache)  # a prepared set needs no cache


def test_the_order_uses_integer_draws_and_does_not_depend_on_the_shard_list():
    order = batches.DataOrder([3] * 10, 3, SIZE, 4, seed=7)
    again = batches.DataOrder([3] * 10, 3, SIZE, 4, seed=7)
    for epoch in (0, 3):
        np.testing.assert_array_equal(order.epoch_items(epoch)[0], again.epoch_items(epoch)[0])
    assert order.chunk_permutation(tf.constant(2, tf.int64)).dtype == tf.int64
    assert not np.array_equal(batches.DataOrder([3] * 10, 3, SIZE, 4, seed=8).epoch_items(0)[0],
                              order.epoch_items(0)[0])


def test_a_reference_set_of_other_classes_than_the_runs_is_refused(tmp_path):
    # Class indices are positions in the sorted class names: a set without 'bird' would score
    # the run's class 1 ('cat') against its dogs.
    for name in ('bird', 'cat', 'dog'):
        os.makedirs(tmp_path / name)
        Image.new('RGB', (8, 8)).save(tmp_path / name / 'a.png')
    files = [str(tmp_path / name / 'a.png') for name in ('dog', 'bird')]
    assert list(batches.labels_of_files(str(tmp_path), files, ['bird', 'cat', 'dog'])) == [2, 0]
    with pytest.raises(UserError, match=r'has the classes bird, cat, dog \(3\), not the 2 the run '
                                        'was trained on'):
        batches.labels_of_files(str(tmp_path), files, ['cat', 'dog'])


@pytest.mark.filterwarnings('ignore:Skipped 1 of 7')
def test_labels_skip_the_files_that_did_not_decode_and_an_older_cache_is_refused(tmp_path, cache):
    import json
    for name, count in (('a', 3), ('b', 3)):
        os.makedirs(tmp_path / 'set' / name)
        for index in range(count):
            Image.new('RGB', (8, 8), (10 * index, 0, 0)).save(
                tmp_path / 'set' / name / f'{index}.png')
    (tmp_path / 'set' / 'a' / '9.png').write_bytes(b'not a png')  # sorted last in class a
    chunks, _ = batches.open_images(str(tmp_path / 'set'), 8, labels=True)
    assert list(chunks.labels) == [0, 0, 0, 1, 1, 1]
    # An image cache written before caches recorded which files they left out (109cfb6).
    import glob
    [meta_path] = glob.glob(os.path.join(cache, '**', store.META), recursive=True)
    with open(meta_path) as f:
        meta = json.load(f)
    del meta['skipped_indices']
    with open(meta_path, 'w') as f:
        json.dump(meta, f)
    with pytest.raises(UserError, match='does not record which of its files did not decode'):
        batches.open_images(str(tmp_path / 'set'), 8, labels=True)
