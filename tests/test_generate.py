"""generate.py: seeds, grids, interpolation GIFs, attention maps and its errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import checkpoints
import config
import data
import gan
import generate
import model
import official
from conftest import assert_same_8bit_images

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_TINY32 = os.path.join(REPO_ROOT, 'tests', 'fixtures', 'official', 'tiny32')
PADDING = 2  # plots.save_image_grid's grey border between tiles


@pytest.fixture(scope='session')
def our_run(tmp_path_factory):
    """A run folder of ours (tiny preset) with a best and a different latest checkpoint.

    Written with gan.LadaGAN.checkpoint() and the run layout of train.train, but without
    train steps: tracing one costs ~40 s on a shared 2-core CPU. The raw generator is then
    nudged so that it differs from its EMA, as after training."""
    import tensorflow as tf

    run_dir = tmp_path_factory.mktemp('our_run')
    conf = config.make_config('tiny')
    with open(run_dir / 'config.json', 'w') as f:
        f.write(conf.to_json())
    ladagan = gan.LadaGAN(model.build_generator(conf), model.build_discriminator(conf),
                        conf)
    ckpt = ladagan.checkpoint(fid=tf.Variable(1.0), best_fid=tf.Variable(1.0))
    rng = np.random.default_rng(0)
    for folder, n_images in (('best-training-checkpoints', 16), ('training-checkpoints', 32)):
        for weight in ladagan.generator.trainable_weights + ladagan.ema_generator.trainable_weights:
            weight.assign(weight + 0.05 * rng.standard_normal(weight.shape).astype('float32'))
        tf.train.CheckpointManager(ckpt, str(run_dir / folder), 1).save(n_images)
    return str(run_dir)


def run_generate(*argv):
    assert generate.main([str(arg) for arg in argv]) == 0


def read_png(path):
    return np.asarray(Image.open(path).convert('RGB'))


# ---------------------------------------------------------------- seeds and noise

def test_parse_seeds_ranges_and_lists():
    assert generate.parse_seeds('0-3,10,20-22') == [0, 1, 2, 3, 10, 20, 21, 22]
    assert generate.parse_seeds('7') == [7]
    assert generate.parse_seeds(' 5 , 2-2') == [5, 2]


@pytest.mark.parametrize('text', ['5-2', 'a-b', '', '1,,2', '-1', '0-3-5', '1.5',
                                  str(2 ** 32)])
def test_parse_seeds_rejects_bad_syntax(text):
    with pytest.raises(config.UserError, match='--seeds'):
        generate.parse_seeds(text)


def test_seed_noise_is_one_rng_per_seed():
    noise = generate.seed_noise([4, 9], 16)
    assert noise.dtype == np.float32
    np.testing.assert_array_equal(noise[1], np.random.RandomState(9).randn(16).astype('float32'))
    np.testing.assert_array_equal(generate.seed_noise([9], 16)[0], noise[1])


def test_slerp_endpoints_and_loop():
    key_noise = generate.seed_noise([0, 1, 2], 32)
    path = generate.interpolation_noise(key_noise, 4)
    assert path.shape == (12, 32)
    np.testing.assert_allclose(path[[0, 4, 8]], key_noise, atol=1e-5)
    np.testing.assert_allclose(generate.slerp(key_noise[0], key_noise[1], [1.0])[0],
                               key_noise[1], atol=1e-5)
    # Halfway along the arc between two unit vectors stays on the unit sphere.
    start, end = np.eye(2)
    assert np.linalg.norm(generate.slerp(start, end, [0.5])[0]) == pytest.approx(1.0)


# ---------------------------------------------------------------- images

class _RecordingSampler:
    """Stands in for export.ImageGenerator: each 'image' is its noise row, and every batch's
    noise is kept, to see where each seed was computed."""

    def __init__(self):
        self.batches = []

    def generate_with_attention(self, noise):
        self.batches.append(noise.numpy())
        return noise, [noise[:, None, :]]


def test_each_seed_is_computed_at_its_own_row_of_a_full_batch():
    sampler = _RecordingSampler()
    seeds = [53, 3, 5, 51, 3]
    batches = list(generate.generate_seed_batches(sampler, seeds, noise_dim=4, batch_size=50))
    # Batches in the order of their first seed; seeds within a batch in the order asked.
    assert [block_seeds for block_seeds, _, _ in batches] == [[53, 51], [3, 5, 3]]
    noise = generate.seed_noise(range(60), 4)
    first, second = sampler.batches
    assert first.shape == second.shape == (50, 4)
    np.testing.assert_array_equal(first[[3, 1]], noise[[53, 51]])
    np.testing.assert_array_equal(second[[3, 5]], noise[[3, 5]])
    assert not first[[0, 2, 4]].any() and not second[[0, 1, 2, 4]].any()  # unused rows: zeros
    np.testing.assert_array_equal(batches[1][1], noise[[3, 5, 3]])
    np.testing.assert_array_equal(batches[1][2][0][:, 0], noise[[3, 5, 3]])


@pytest.mark.parametrize('model', ['official', 'ours'])
def test_same_seed_same_pixels_across_runs_and_batches(model, our_run, tmp_path):
    model_dir = OFFICIAL_TINY32 if model == 'official' else our_run
    run_generate('--model_dir', model_dir, '--outdir', tmp_path / 'a', '--seeds', '0-5')
    run_generate('--model_dir', model_dir, '--outdir', tmp_path / 'b', '--seeds', '5,3')
    assert sorted(os.listdir(tmp_path / 'b')) == ['seed0003.png', 'seed0005.png']
    for name in ('seed0003.png', 'seed0005.png'):
        image = read_png(tmp_path / 'a' / name)
        assert image.shape == (32, 32, 3)
        np.testing.assert_array_equal(image, read_png(tmp_path / 'b' / name))
    assert not np.array_equal(read_png(tmp_path / 'a' / 'seed0003.png'),
                              read_png(tmp_path / 'a' / 'seed0005.png'))



def test_a_seed_keeps_its_pixels_on_the_demo_model():
    """The demo model's shapes, through the graph generate.py draws with: seeds 0-49 asked at
    once and in six requests of 2 to 16 seeds, each in reverse order, give the same pixels.
    Packed densely instead (seed i at row i of a batch of the request's size), 2 values of
    these 50 images differed on an AVX2 AMD EPYC."""
    import keras

    import export
    conf = config.make_config('demo')
    keras.utils.set_random_seed(0)
    sampler = export.ImageGenerator(model.build_generator(conf), conf.noise_dim)

    def images_of(seeds):
        return {seed: image for block_seeds, images, _ in generate.generate_seed_batches(
                    sampler, seeds, conf.noise_dim, conf.gen_batch_size)
                for seed, image in zip(block_seeds, images)}

    at_once = images_of(list(range(50)))
    edges = [0, 2, 5, 11, 19, 35, 50]
    for low, high in zip(edges, edges[1:]):
        for seed, image in images_of(list(range(high - 1, low - 1, -1))).items():
            np.testing.assert_array_equal(image, at_once[seed], err_msg=f'seed {seed}')
    assert not np.array_equal(at_once[3], at_once[5])

def test_images_use_the_training_quantisation(tmp_path):
    import tensorflow as tf

    import export
    conf, generator = checkpoints.load_run_generator(OFFICIAL_TINY32)
    # The generator as one graph, as generate.py runs it (eager calls round differently in the
    # last bit, which can move one pixel across a quantisation step).
    graph = tf.function(lambda noise: generator(noise, training=False)[0], autograph=False)
    noise = tf.constant(generate.seed_noise([2], conf.noise_dim))
    images = graph(noise)
    run_generate('--model_dir', OFFICIAL_TINY32, '--outdir', tmp_path, '--seeds', '2')
    assert_same_8bit_images(read_png(tmp_path / 'seed0002.png'), images.numpy()[0])
    # The graph an export saves (noise to uint8 images) draws the same pixels.
    exported = export.ImageGenerator(generator, conf.noise_dim).generate(noise)['images']
    assert exported.dtype == tf.uint8
    assert_same_8bit_images(exported.numpy()[0], images.numpy()[0])


@pytest.mark.parametrize('model', ['official', 'ours'])
def test_ema_is_the_default_and_differs_from_raw(model, our_run, tmp_path):
    model_dir = OFFICIAL_TINY32 if model == 'official' else our_run
    run_generate('--model_dir', model_dir, '--outdir', tmp_path / 'ema', '--seeds', '1')
    run_generate('--model_dir', model_dir, '--outdir', tmp_path / 'raw', '--seeds', '1',
                 '--no_ema')
    assert not np.array_equal(read_png(tmp_path / 'ema' / 'seed0001.png'),
                              read_png(tmp_path / 'raw' / 'seed0001.png'))


def test_best_and_latest_checkpoints(our_run, tmp_path):
    run_generate('--model_dir', our_run, '--outdir', tmp_path / 'best', '--seeds', '1')
    run_generate('--model_dir', our_run, '--outdir', tmp_path / 'latest', '--seeds', '1',
                 '--ckpt', 'latest')
    assert not np.array_equal(read_png(tmp_path / 'best' / 'seed0001.png'),
                              read_png(tmp_path / 'latest' / 'seed0001.png'))


def test_grid_only_writes_one_png_of_the_right_size(tmp_path):
    run_generate('--model_dir', OFFICIAL_TINY32, '--outdir', tmp_path, '--num', '6',
                 '--grid_only')
    assert os.listdir(tmp_path) == ['grid.png']
    side = 32 + PADDING
    # 6 images: ceil(sqrt(6)) = 3 per row, 2 rows
    assert Image.open(tmp_path / 'grid.png').size == (3 * side + PADDING, 2 * side + PADDING)


def test_grid_also_keeps_the_single_images(tmp_path):
    run_generate('--model_dir', OFFICIAL_TINY32, '--outdir', tmp_path, '--num', '4', '--grid')
    assert sorted(os.listdir(tmp_path)) == ['grid.png'] + [f'seed000{i}.png' for i in range(4)]


class _MeasuringSampler:
    """The real export sampler of a run; before each batch it collects garbage and records what
    Python and NumPy still hold (tracemalloc) and how many PNGs are on disk. A peak would count
    uncollected garbage, whose amount depends on when the collector last ran (2 MB of noise
    in one CI run), so what is measured is what is held."""

    def __init__(self, sampler, outdir):
        self.sampler, self.outdir, self.held, self.on_disk = sampler, outdir, [], []

    def generate_with_attention(self, noise):
        import gc
        import tracemalloc
        gc.collect()
        self.held.append(tracemalloc.get_traced_memory()[0])
        self.on_disk.append(len(os.listdir(self.outdir)))
        return self.sampler.generate_with_attention(noise)


def test_num_writes_as_it_generates_so_its_memory_does_not_grow_with_n(tmp_path):
    """--num N holds one batch of images, not N (2.4 GB for 50,000 at 128 px before): each
    batch's PNGs are on disk before the next batch is made, and what is held before the 20th
    batch is what was held before the 2nd, where keeping the images would add 18 x 50 x 3,072
    bytes = 2.8 MB."""
    import gc
    import tracemalloc
    import export
    args = generate.parse_args(['--model_dir', OFFICIAL_TINY32, '--num', '1000'])
    conf, generator, _ = generate.load_generator(args)
    assert conf.gen_batch_size == 50
    sampler = _MeasuringSampler(export.ImageGenerator(generator, conf.noise_dim), str(tmp_path))
    # What earlier tests of this process left is moved out of the collector's sight (gc.freeze):
    # each collection then scans what this test made, in milliseconds, not a heap of gigabytes.
    gc.collect()
    gc.freeze()
    tracemalloc.start()
    try:
        generate.write_images(args, generate.resolve_seeds(args), conf, sampler, str(tmp_path))
    finally:
        tracemalloc.stop()
        gc.unfreeze()
    assert len(os.listdir(tmp_path)) == 1000
    assert sampler.on_disk == [50 * batch for batch in range(20)]
    # the 1st batch also traces the sampler; from the 2nd on, only the images could accumulate
    assert sampler.held[19] - sampler.held[1] < 0.1 * 18 * 50 * 32 * 32 * 3, sampler.held


def test_interpolation_gif_has_frames_per_segment_for_each_seed(tmp_path):
    run_generate('--model_dir', OFFICIAL_TINY32, '--outdir', tmp_path, '--seeds', '3,8,13',
                 '--interpolate', '3', '--frames', '5')
    with Image.open(tmp_path / 'interpolation.gif') as gif:
        assert gif.n_frames == 3 * 5
        assert gif.size == (32, 32)
        assert gif.info.get('loop') == 0


def test_attention_maps_one_png_per_stage(our_run, tmp_path):
    run_generate('--model_dir', our_run, '--outdir', tmp_path, '--seeds', '0-2', '--attn_maps')
    attention = sorted(name for name in os.listdir(tmp_path) if name.startswith('attention'))
    assert attention == ['attention_stage0_8x8.png', 'attention_stage1_16x16.png',
                         'attention_stage2_32x32.png']


def test_pretrained_downloads_into_the_cache_dir(monkeypatch, tmp_path):
    calls = []

    def fake_download(name, dest_dir='.', repo_id=official.OFFICIAL_HUB_REPO):
        calls.append((name, dest_dir))
        return OFFICIAL_TINY32

    monkeypatch.setattr(official, 'download_official_checkpoint', fake_download)
    run_generate('--pretrained', 'cifar10', '--cache_dir', tmp_path / 'cache',
                 '--outdir', tmp_path / 'out', '--seeds', '0')
    assert calls == [('cifar10', str(tmp_path / 'cache'))]
    assert os.listdir(tmp_path / 'out') == ['seed0000.png']


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize('extra', [
    ['--seeds', '5-2'], ['--seeds', 'a-b'], ['--interpolate', '1'], ['--num', '0'],
    ['--frames', '0', '--interpolate', '2'], ['--seeds', '0-3', '--num', '4'],
    ['--seeds', '0-2', '--interpolate', '5'], ['--grid', '--grid_only'],
    ['--ckpt', 'first'], ['--num', 'ten'],
])
def test_bad_input_one_line_exit_2_nothing_written(extra, capsys, tmp_path):
    outdir = tmp_path / 'out'
    argv = ['--model_dir', OFFICIAL_TINY32, '--outdir', str(outdir)] + extra
    try:
        code = generate.main(argv)
    except SystemExit as exit_:  # argparse's own checks
        code = exit_.code
    stderr = capsys.readouterr().err
    assert code == 2
    assert stderr.startswith('error: ') and stderr.count('\n') == 1, stderr
    assert not outdir.exists()


@pytest.mark.parametrize('source', [['--model_dir', 'no/such/folder'], ['--model_dir', 'EMPTY'],
                                    ['--pretrained', 'mnist'], []])
def test_bad_model_source_one_line_exit_2(source, capsys, tmp_path):
    source = [str(tmp_path) if arg == 'EMPTY' else arg for arg in source]
    outdir = tmp_path / 'out'
    try:
        code = generate.main(source + ['--outdir', str(outdir)])
    except SystemExit as exit_:
        code = exit_.code
    stderr = capsys.readouterr().err
    assert code == 2
    assert stderr.startswith('error: ') and stderr.count('\n') == 1, stderr
    assert not outdir.exists()


@pytest.mark.slow
def test_bad_seeds_from_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, 'generate.py', '--model_dir', OFFICIAL_TINY32, '--outdir',
         str(tmp_path / 'out'), '--seeds', '5-2'],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --seeds '5-2' has the range 5-2 whose end is below its start: write ranges "
        'as START-END with START <= END']
    assert not (tmp_path / 'out').exists()




# ---------------------------------------------------------------- memorisation check

def test_nearest_finds_a_training_image_planted_among_the_generated(our_run, tmp_path, capsys, fid_weights):
    import argparse
    from conftest import render_shape_images
    train_dir = render_shape_images(str(tmp_path / 'train'), 12, size=32)
    files = data.list_image_files(train_dir)
    conf, generator = checkpoints.load_run_generator(our_run)
    images = data.to_uint8(generator(generate.seed_noise([0, 1, 2], conf.noise_dim))[0].numpy())
    planted = data.decode_image(files[5], 32)  # decoded as training decodes it
    images[1] = planted
    args = argparse.Namespace(nearest=3, train_images=train_dir)
    assert generate.write_nearest(args, [0, 1, 2], images, conf, our_run,
                                  str(tmp_path)) == 'nearest.png'
    out = capsys.readouterr().out
    assert f'Smallest distance to a training image: 0.000 (seed 1 and {files[5]};' in out
    with Image.open(tmp_path / 'nearest.png') as picture:
        assert picture.size[0] > 300 and picture.size[1] > 200


def test_nearest_from_the_command_line(our_run, tmp_path, capsys, fid_weights):
    from conftest import render_shape_images
    train_dir = render_shape_images(str(tmp_path / 'train'), 10, size=32)
    run_generate('--model_dir', our_run, '--seeds', '0-3', '--nearest', '2', '--train_images',
                 train_dir, '--outdir', tmp_path / 'out')
    out = capsys.readouterr().out
    distance = float(out.split('Smallest distance to a training image: ')[1].split()[0])
    assert distance > 1  # an untrained generator copies nothing
    assert (tmp_path / 'out' / 'nearest.png').is_file()
    # A folder that records no training images (no run.json) needs --train_images.
    assert generate.main(['--model_dir', our_run, '--seeds', '0', '--nearest', '2',
                          '--outdir', str(tmp_path / 'out2')]) == 2
    assert 'pass them with --train_images PATH' in capsys.readouterr().err


# ---------------------------------------------------------------- export

_LOAD_EXPORTED = '''
import sys
import numpy as np
import tensorflow as tf
assert not any(name in sys.modules for name in ('gan', 'model', 'ladaformer', 'config'))
generator = tf.saved_model.load(sys.argv[1])
# Seeds 0-3 at rows 0-3 of a batch of gen_batch_size, as generate.py computes them.
noise = np.zeros(({batch}, {noise_dim}), np.float32)
noise[:4] = np.stack([np.random.RandomState(seed).randn({noise_dim}) for seed in range(4)])
images = generator.signatures['serving_default'](noise=tf.constant(noise))['images']
np.save(sys.argv[2], images.numpy()[:4])
import onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1] + '/generator.onnx')
np.save(sys.argv[3], session.run(['images'], {{'noise': noise}})[0][:4])
'''


@pytest.mark.slow
def test_export_reloads_without_the_project_and_gives_the_same_images(tmp_path):
    export_dir = tmp_path / 'exported'
    run_generate('--model_dir', OFFICIAL_TINY32, '--export', export_dir)
    assert sorted(os.listdir(export_dir)) == ['README.md', 'assets', 'config.json',
                                              'fingerprint.pb', 'generator.onnx',
                                              'saved_model.pb', 'variables']
    assert "tf.saved_model.load(" in (export_dir / 'README.md').read_text()
    run_generate('--model_dir', OFFICIAL_TINY32, '--seeds', '0-3', '--outdir', tmp_path / 'png')
    # A fresh process, isolated (-I: no PYTHONPATH, not the project's folder on sys.path).
    script = tmp_path / 'load.py'
    exported_conf = json.loads((export_dir / 'config.json').read_text())
    script.write_text(_LOAD_EXPORTED.format(noise_dim=exported_conf['noise_dim'],
                                            batch=exported_conf['gen_batch_size']))
    result = subprocess.run([sys.executable, '-I', str(script), str(export_dir),
                             str(tmp_path / 'saved.npy'), str(tmp_path / 'onnx.npy')],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    assert result.returncode == 0, result.stderr[-3000:]
    saved = np.load(tmp_path / 'saved.npy')
    assert saved.dtype == np.uint8 and saved.shape == (4, 32, 32, 3)
    pngs = np.stack([read_png(tmp_path / 'png' / f'seed{seed:04d}.png') for seed in range(4)])
    np.testing.assert_array_equal(saved, pngs)  # bit for bit
    onnx = np.load(tmp_path / 'onnx.npy')
    assert onnx.dtype == np.uint8 and np.abs(onnx.astype(int) - pngs).max() <= 1  # 1/255


def test_export_refuses_a_folder_that_holds_files(tmp_path, capsys):
    (tmp_path / 'busy').mkdir()
    (tmp_path / 'busy' / 'keep.txt').write_text('mine')
    assert generate.main(['--model_dir', OFFICIAL_TINY32, '--export', str(tmp_path / 'busy')]) == 2
    assert 'already exists and is not an empty folder' in capsys.readouterr().err
    assert os.listdir(tmp_path / 'busy') == ['keep.txt']
