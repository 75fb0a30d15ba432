"""Benchmarks for ladagan, one section per component.

    python benchmark.py                      # every section
    python benchmark.py --only fid --quick   # a selection, smaller sizes; --json OUT: also JSON

A section is a function ``(args) -> list of rows`` registered with ``@section(name)``; a row is
a dict with keys ``metric``, ``value``, ``unit`` and optionally ``note``. Heavy imports belong
inside a section, so that ``--only`` runs load only what they need.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import tracemalloc

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np

import benchmark_steps
import cli
from benchmark_steps import JIT_MODES, presets, row, time_steps

SECTIONS = {}


def section(name):
    """Registers ``function(args) -> rows`` as benchmark section ``name``."""
    def register(function):
        SECTIONS[name] = function
        return function
    return register


# ---------------------------------------------------------------------------- FID

def _write_png_set(folder, count, size, seed=0):
    """``count`` random-rectangle PNGs of size x size (stand-in for a real data set)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        pixels = np.full((size, size, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        for _ in range(3):
            top, left = rng.integers(0, size - 4, 2)
            pixels[top:top + rng.integers(2, size // 2), left:left + rng.integers(2, size // 2)] = (
                rng.integers(0, 256, 3))
        Image.fromarray(pixels).save(os.path.join(folder, f'{index:05d}.png'))
    return folder


def _time_feature_extraction(extractor, batch, repeats):
    """Images per second of the FID network, with its batch norms folded (as used) and not."""
    import tensorflow as tf
    import fid_weights
    import inception
    # The same network with its batch norms as layers, not folded into the convolutions.
    literal = inception.build_fid_inception(
        fid_weights.load_fid_inception_weights(extractor.weights_path), fuse_batch_norm=False)
    literal_fn = tf.function(lambda x: literal(extractor._preprocess(x), training=False))
    rows = []
    for label, extract in (('feature extraction (batch 50, 32 px -> 299)', extractor),
                           ('feature extraction, batch norms not folded (batch 50)',
                            lambda x: literal_fn(tf.constant(x)).numpy())):
        extract(batch)  # trace the graph outside the timing
        start = time.perf_counter()
        for _ in range(repeats):
            extract(batch)
        rows.append(row(label, repeats * len(batch) / (time.perf_counter() - start), 'img/s'))
    return rows


@section('fid')
def bench_fid(args):
    """One in-training FID evaluation (standard backbone, 32 px): uncached vs cached real statistics."""
    import scipy.linalg
    import distances
    import fid
    import inception
    num_images, img_size, rows, rng = 50 if args.quick else 2500, 32, [], np.random.default_rng(0)
    def sample_fn(batch_size):
        # Smooth random images in [-1, 1], (B, 32, 32, 3): a stand-in for the EMA generator.
        coarse = rng.uniform(-1, 1, (batch_size, 4, 4, 3)).astype(np.float32)
        return coarse.repeat(8, axis=1).repeat(8, axis=2)
    with tempfile.TemporaryDirectory() as workdir:
        real_dir = _write_png_set(os.path.join(workdir, 'real'), num_images, img_size)
        start = time.perf_counter()
        extractor = inception.get_feature_extractor('standard')
        rows.append(row('build FID Inception + load weights', time.perf_counter() - start, 's'))
        batch = np.asarray(rng.integers(0, 256, (50, img_size, img_size, 3)), dtype=np.uint8)
        rows += _time_feature_extraction(extractor, batch, repeats=1 if args.quick else 4)
        options = dict(real_source=real_dir, img_size=img_size, n_real=num_images, n_gen=num_images,
                       batch_size=50, stats_dir=os.path.join(workdir, 'cache'))
        start = time.perf_counter()
        first = fid.FIDEvaluator(**options).evaluate(sample_fn)
        rows.append(row(f'FID eval, {num_images} real + {num_images} gen, uncached',
                        time.perf_counter() - start, 's', f'FID {first:.2f}'))
        start = time.perf_counter()
        second = fid.FIDEvaluator(**options).evaluate(sample_fn)
        rows.append(row(f'FID eval, {num_images} gen, real stats cached',
                        time.perf_counter() - start, 's', f'FID {second:.2f}'))
    # The Fréchet distance itself at Inception size, against scipy's sqrtm.
    features_a = rng.standard_normal((num_images, inception.FEATURE_DIM)) * 0.5
    features_b = rng.standard_normal((num_images, inception.FEATURE_DIM)) * 0.6 + 0.01
    statistics = (*distances.activation_statistics(features_a),
                  *distances.activation_statistics(features_b))
    start = time.perf_counter()
    ours = distances.frechet_distance(*statistics)
    rows.append(row(f'frechet_distance d=2048 ({num_images} samples)', time.perf_counter() - start, 's'))
    if not args.quick:
        mu1, sigma1, mu2, sigma2 = statistics
        start = time.perf_counter()
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        reference = (mu1 - mu2) @ (mu1 - mu2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean).real
        rows.append(row('scipy.linalg.sqrtm FID d=2048 (reference)', time.perf_counter() - start, 's',
                        f'rel diff {abs(ours - reference) / reference:.1e}'))
    return rows


@section('prdc')
def bench_prdc(args):
    """Precision/recall/density/coverage time and memory at 10k (and 50k) x 2048-d features."""
    import knn_metrics
    rows = []
    rng = np.random.default_rng(0)
    for count in (10000,) if args.quick else (10000, 50000):
        # Non-negative like Inception pool features; fakes a little shifted.
        real = np.abs(rng.standard_normal((count, 2048), dtype=np.float32))
        fake = np.abs(rng.standard_normal((count, 2048), dtype=np.float32) * 1.05 + 0.02)
        # numpy reports to tracemalloc: the peak is what PRDC allocates, unlike peak RSS.
        tracemalloc.start()
        start = time.perf_counter()
        result = knn_metrics.prdc(real, fake)
        seconds = time.perf_counter() - start
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows += [row(f'PRDC, {count:,} real x {count:,} fake', seconds, 's',
                     f'exact, k=3, blocks of {knn_metrics.BLOCK_ROWS} rows; precision '
                     f'{result["precision"]:.3f}'),
                 row(f'PRDC, {count:,}: peak memory added', peak_bytes / 2 ** 20, 'MB',
                     'allocated by PRDC, over the float32 features given to it')]
    return rows


# ---------------------------------------------------------------------------- training

# Forward-pass equivalents per image and step, for model FLOPs utilisation (forward:backward 1:2):
# the D step runs G forward (1), D forward+backward on fakes (3) and on reals with R1's double
# backward (about 5); the G step runs G and D forward+backward (3 each).
G_PASSES_PER_STEP = 4
D_PASSES_PER_STEP = 11
def _peak_rss_mb():
    """Peak resident MB of this process image (VmHWM; Linux): ru_maxrss would also count the
    parent forked before exec, so a child of a large process would report the parent's size."""
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmHWM:')) / 1024


def _matmul_peak_macs_per_sec(dtype='float32', size=2048, repeats=10):
    """The best measured dense matmul rate of this machine in `dtype`, with XLA and with
    TensorFlow's own (oneDNN) kernels: the denominator of model FLOPs utilisation."""
    import tensorflow as tf
    a = tf.cast(tf.random.normal([size, size]), dtype)
    rates = []
    for jit in (True, False):
        matmul = tf.function(lambda x: tf.matmul(x, x), jit_compile=jit)
        matmul(a).numpy()
        start = time.perf_counter()
        for _ in range(repeats):
            result = matmul(a)
        result.numpy()
        rates.append(repeats * size ** 3 / (time.perf_counter() - start))
    return max(rates)


# Kernel names in a CPU trace: XLA's HLO names ('MatMul.12') or, without XLA, '<op name>:<op type>'
# ('...:_MklNativeConv2DBackpropInput'). Groups, matched on the lower-cased name or type, in order:
_OP_GROUPS = (('matmul', ('matmul', 'dot', 'einsum')), ('convolution', ('conv',)),
              ('transpose / copy', ('transpose', 'copy')), ('pooling', ('reduce-window', 'pool')),
              ('reductions (norms, softmax, means)', ('reduce', 'sum', 'mean', 'softmax')))


def _op_time_shares(logdir):
    """[(group, share of kernel time)] from the newest profiler trace under `logdir`."""
    import collections
    import glob
    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError:  # the trace is still there for TensorBoard
        return []
    paths = sorted(glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True))
    if not paths:
        return []
    space = xplane_pb2.XSpace()
    with open(paths[-1], 'rb') as file:
        space.ParseFromString(file.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith('tf_'):  # TensorFlow's worker threads run the kernels
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if '::' in name:  # executor and thread-pool bookkeeping, not kernels
                    continue
                kind = name.rsplit(':', 1)[-1].lower()
                group = next((label for label, keys in _OP_GROUPS if any(k in kind for k in keys)),
                             'element-wise')
                totals[group] += event.duration_ps
    total = sum(totals.values()) or 1
    return [(group, value / total) for group, value in totals.most_common()]


def _measure_in_child(args, preset, jit, implementation='ours'):
    """One training configuration timed in a process of its own (`_child`): its report, or
    {'error': the reason it failed}. --profile traces ours there too, after the timing."""
    import subprocess
    profile = (os.path.join(args.profile, preset + ('_xla' if jit else '_noxla'))
               if args.profile and implementation == 'ours' else None)
    spec = json.dumps(dict(preset=preset, jit=jit, implementation=implementation,
                           batch_size=args.batch_size, precision=args.precision,
                           steps=3 if args.quick else args.steps,
                           authors_code=args.authors_code, profile=profile))
    if spec in args.measured:  # the train and memory sections share each child's report
        return args.measured[spec]
    result = subprocess.run([sys.executable, os.path.abspath(__file__), '--child', spec],
                            capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    if result.returncode == 0:
        report = {**json.loads(result.stdout.strip().splitlines()[-1]), 'profile': profile}
    else:  # e.g. the authors' 128 px step under XLA
        lines = [line for line in result.stderr.splitlines() if 'Error' in line]
        report = {'error': (lines or result.stderr.strip().splitlines() or ['no output'])[-1][:160]}
    return args.measured.setdefault(spec, report)


@section('train')
def bench_train(args):
    """Training images/s per preset (median step after compilation), compile time, MFU; each in
    a process of its own, which the memory section reads too."""
    import config
    import model
    rows = []
    # Mixed precision runs the matmuls and convolutions in the low-precision dtype.
    compute_dtype = {'float32': 'float32', 'mixed_bfloat16': 'bfloat16',
                     'mixed_float16': 'float16'}[args.precision]
    peak = _matmul_peak_macs_per_sec(compute_dtype)
    rows.append(row(f'dense matmul peak ({compute_dtype}, 2048^3, best of XLA and oneDNN)',
                    peak / 1e9, 'GMAC/s'))
    jit_modes = JIT_MODES[args.jit]
    for preset, jit in [(p, j) for p in presets(args) for j in jit_modes]:
        conf = config.make_config(preset, batch_size=args.batch_size, precision=args.precision,
                                  jit=jit)
        label = preset + ('' if len(jit_modes) == 1 else ', XLA' if jit else ', no XLA')
        report = _measure_in_child(args, preset, jit)
        if 'error' in report:
            raise RuntimeError(f'the {label} step failed: {report["error"]}')
        first, median = report['first_step_s'], report['step_s']
        macs = (G_PASSES_PER_STEP * sum(m for _, m in model.generator_stage_macs(conf, True))
                + D_PASSES_PER_STEP * sum(m for _, m in model.discriminator_stage_macs(conf, True)))
        note = f'batch {conf.batch_size}, {conf.precision}, XLA {jit}'
        rows += [row(f'{label}: train step', conf.batch_size / median, 'img/s', note),
                 row(f'{label}: first step (trace + compile)', first, 's'),
                 row(f'{label}: model FLOPs utilisation', 100 * macs * conf.batch_size
                     / median / peak, '%', f'executed MACs of G and D passes / {compute_dtype} '
                     'matmul peak')]
        if report['profile']:
            rows += [row(f'{label}: kernel time, {group}', 100 * share, '%',
                         f'trace in {report["profile"]}')
                     for group, share in _op_time_shares(report['profile'])]
    return rows


@section('memory')
def bench_memory(args):
    """Peak resident memory (and step time) of training, per preset and mode, each in a process
    of its own (the train section's, when both run); with --authors_code, the authors' too."""
    import itertools
    rows = []
    implementations = ['ours'] + (['authors'] if args.authors_code else [])
    for preset, jit, implementation in itertools.product(presets(args), JIT_MODES[args.jit],
                                                         implementations):
        report = _measure_in_child(args, preset, jit, implementation)
        label = f'{preset}, {"XLA" if jit else "no XLA"}, {implementation}'
        note = f'batch {args.batch_size}, {args.precision}, process of its own'
        if 'error' in report:
            rows.append(row(f'{label}: peak resident memory', float('nan'), 'MB',
                            f'fails: {report["error"]}'))
            continue
        rows += [row(f'{label}: peak resident memory', report['peak_rss_mb'], 'MB', note),
                 row(f'{label}: train step', args.batch_size / report['step_s'], 'img/s', note)]
    return rows


@section('grappler')
def bench_grappler(args):
    """The CPU step with Grappler's rewrites and without (ours on a CPU): benchmark_steps.py."""
    return benchmark_steps.grappler(args)


@section('precision')
def bench_precision(args):
    """The step in float32 and with reduced precision's variants: benchmark_steps.py."""
    return benchmark_steps.precision(args)


@section('authors')
def bench_authors(args):
    """Ours against the authors' train_step (--authors_code): benchmark_steps.py."""
    return benchmark_steps.authors(args)


@section('conditional')
def bench_conditional(args):
    """The conditional step against the unconditional one: benchmark_steps.py."""
    return benchmark_steps.conditional(args)


def _child(spec):
    """One training configuration in a fresh process: print {'peak_rss_mb', 'first_step_s',
    'step_s'} as JSON; with a profile folder, then trace 3 more steps into it."""
    spec = json.loads(spec)
    if spec['implementation'] == 'authors':
        os.environ['TF_USE_LEGACY_KERAS'] = '1'  # tf.keras is then Keras 2, as their code needs
    import tensorflow as tf
    import config
    import official
    conf = config.make_config(spec['preset'], batch_size=spec['batch_size'],
                              precision=spec['precision'], jit=spec['jit'])
    step = (official.authors_train_step(conf, spec['authors_code'])
            if spec['implementation'] == 'authors' else benchmark_steps.our_step(conf))
    real = tf.random.uniform([conf.batch_size, conf.img_size, conf.img_size, 3], -1, 1)
    first, median = time_steps(lambda: step(real), spec['steps'])
    report = {'peak_rss_mb': _peak_rss_mb(), 'first_step_s': first, 'step_s': median}
    if spec['profile']:
        tf.profiler.experimental.start(spec['profile'])
        for _ in range(3):
            step(real)
        tf.profiler.experimental.stop()
    print(json.dumps(report))
    return 0


@section('data')
def bench_data(args):
    """Preparing, starting and streaming a 70,000-image set at 128 px (benchmark_data.py)."""
    import benchmark_data
    return benchmark_data.run(args, row)


@section('generate')
def bench_generate(args):
    """EMA generator sampling images/s (XLA), per preset."""
    import tensorflow as tf
    import config
    import model
    rows = []
    for preset in presets(args):
        conf = config.make_config(preset, precision=args.precision)
        generator = model.build_generator(conf)
        sample = tf.function(lambda z: generator(z, training=False)[0], jit_compile=True)
        noise = tf.random.normal([conf.gen_batch_size, conf.noise_dim])
        first, median = time_steps(lambda: sample(noise).numpy(), 3 if args.quick else 5)
        rows.append(row(f'{preset}: generate', conf.gen_batch_size / median, 'img/s',
                        f'batch {conf.gen_batch_size}, {conf.precision}'))
    return rows


@section('attention')
def bench_attention(args):
    """Forward+backward time of one Lada vs one dot-product generator block as tokens grow."""
    import tensorflow as tf
    from ladaformer import GeneratorBlock
    rows, token_counts = [], [256, 1024, 4096] + ([] if args.quick else [16384])
    for attention in ('lada', 'dot'):
        block = GeneratorBlock(128, 4, 256, attention=attention)
        for tokens in token_counts:
            x = tf.random.normal([4, tokens, 128])
            z = tf.random.normal([4, 128])
            @tf.function(jit_compile=True)
            def forward_backward(x, z):
                with tf.GradientTape() as tape:
                    out, _ = block([x, z])
                    loss = tf.reduce_mean(tf.square(out))
                return tape.gradient(loss, block.trainable_variables)[0]
            try:
                first, median = time_steps(lambda: forward_backward(x, z).numpy(), 3)
                rows.append(row(f'{attention} block, {tokens} tokens', 1000 * median, 'ms',
                                'batch 4, width 128, 4 heads, forward+backward'))
            except (tf.errors.ResourceExhaustedError, MemoryError):
                rows.append(row(f'{attention} block, {tokens} tokens', float('nan'), 'ms',
                                'out of memory'))
    return rows


# ---------------------------------------------------------------------------- runner

def format_table(results):
    header = ('section', 'metric', 'value', 'unit', 'note')
    lines = [(r['section'], r['metric'], f'{r["value"]:.4g}' if isinstance(r['value'], float) else str(r['value']),
              r['unit'], r.get('note', '')) for r in results]
    widths = [max(len(str(cells[i])) for cells in [header] + lines) for i in range(len(header))]
    text = [' | '.join(str(cell).ljust(width) for cell, width in zip(cells, widths)).rstrip()
            for cells in [header] + lines]
    text.insert(1, '-+-'.join('-' * width for width in widths))
    return '\n'.join(text)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='ladagan benchmarks')
    parser.add_argument('--only', default=None,
                        help=f'comma-separated sections to run (available: {", ".join(SECTIONS)})')
    parser.add_argument('--quick', action='store_true', help='smaller sizes for a fast check')
    parser.add_argument('--json', default=None, metavar='OUT', help='also write the results as JSON')
    parser.add_argument('--presets', default=None,
                        help='comma-separated presets for train/generate (default: the released '
                             'ones; tiny with --quick)')
    parser.add_argument('--batch_size', type=int, default=32, help='training batch size')
    parser.add_argument('--steps', type=int, default=10, help='timed training steps per preset')
    parser.add_argument('--profile', default=None, metavar='DIR',
                        help='train section: also profile 3 steps per preset and mode into '
                             'DIR/<preset>_xla|_noxla (TensorBoard) and print where time goes')
    parser.add_argument('--jit', default='both', choices=tuple(JIT_MODES),
                        help='train, memory, authors sections: the step with XLA, without, or '
                             'both (precision: on is XLA, else not)')
    parser.add_argument('--precision', default='float32',
                        choices=('float32', 'mixed_float16', 'mixed_bfloat16'))
    parser.add_argument('--authors_code', default=None, metavar='DIR',
                        help="authors and memory sections: the authors' step, from a checkout of "
                             'github.com/milmor/LadaGAN at DIR (needs pip install tf_keras)')
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)  # one measurement
    args = parser.parse_args(argv)
    args.measured = {}  # spec (JSON) -> a child's report, for this run of the benchmark only
    args.sections = list(SECTIONS) if args.only is None else [name.strip() for name in args.only.split(',') if name.strip()]
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown or not args.sections:
        parser.error(f'--only {args.only!r} names no known section; available: {", ".join(SECTIONS)}')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return _child(args.child)
    if args.authors_code and 'authors' in args.sections:
        os.environ['TF_USE_LEGACY_KERAS'] = '1'  # before TensorFlow loads: tf.keras is Keras 2
    machine = cli.cpu_model()
    print(f'CPU: {machine}', flush=True)  # speeds differ between CPU models: name it
    results = []
    for name in args.sections:
        print(f'== {name}', file=sys.stderr)
        start = time.perf_counter()
        for result in SECTIONS[name](args):
            results.append({'section': name, **result})
        print(f'== {name} done in {time.perf_counter() - start:.1f} s', file=sys.stderr)
    print(format_table(results))
    if args.json:
        meta = {'quick': args.quick, 'python': platform.python_version(), 'cpu': machine,
                'machine': platform.machine(), 'time': time.strftime('%Y-%m-%d %H:%M:%S')}
        with open(args.json, 'w') as file:
            json.dump({'meta': meta, 'results': results}, file, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
