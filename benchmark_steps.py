"""benchmark.py's sections that time the training step against its variants in one process,
one step of each in turn (the machine's speed drifts by 10% in minutes, more than what is
compared): Grappler's graph rewrites on and off, reduced precision and its float32 islands, the
authors' step, and the class-conditional step; with the helpers the other sections share.

    python3 benchmark.py --only conditional --presets cifar10 --steps 12
"""
import time

import numpy as np

DEFAULT_PRESETS = 'cifar10,celeba_64,ffhq_128'  # --quick: tiny
JIT_MODES = {'on': [True], 'off': [False], 'both': [True, False]}  # --jit: XLA or not, or both


def row(metric, value, unit, note=''):
    return {'metric': metric, 'value': value, 'unit': unit, 'note': note}


def presets(args):
    return [p.strip() for p in (args.presets or ('tiny' if args.quick else DEFAULT_PRESETS))
            .split(',') if p.strip()]


def time_steps(step, steps):
    """(first call seconds = trace + compile + one step, median seconds of the next `steps`)."""
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return first, float(np.median(times))


def our_step(conf):
    """A function that takes one training step of ours and waits for it to finish."""
    import gan
    import model
    ladagan = gan.LadaGAN(model.build_generator(conf), model.build_discriminator(conf), conf)
    if not conf.num_classes:
        return lambda real: float(ladagan.train_step(real)['d_loss'])
    # A conditional step takes its real images' classes: every class in turn (the step's time
    # does not depend on which).
    labels = np.arange(conf.batch_size, dtype=np.int32) % conf.num_classes
    return lambda real: float(ladagan.train_step(real, real_labels=labels)['d_loss'])


def grappler(args):
    """The CPU step with Grappler's graph rewrites (TensorFlow's default) and without (ours on a
    CPU, so that runs repeat: docs/determinism.md): one model, rounds alternating the two."""
    import tensorflow as tf
    import config
    import gan
    import model
    results, rounds = [], 3
    for preset in presets(args):
        conf = config.make_config(preset, batch_size=args.batch_size, jit=False)
        ladagan = gan.LadaGAN(model.build_generator(conf), model.build_discriminator(conf), conf)
        real = tf.random.uniform([conf.batch_size, conf.img_size, conf.img_size, 3], -1, 1, seed=0)
        first, seconds = {}, {True: [], False: []}
        for _ in range(rounds):
            for without in (True, False):
                ladagan.repeatable = without  # what train_step passes to graph_rewrites_off
                first_call, median = time_steps(
                    lambda: float(ladagan.train_step(real)['d_loss']), max(1, args.steps // rounds))
                first.setdefault(without, first_call)  # the first round's: optimise + one step
                seconds[without].append(median)
        for without, label in ((False, 'with Grappler (TensorFlow default)'),
                               (True, 'without Grappler (ours on a CPU)')):
            results.append(row(f'{preset}, no XLA, {label}: train step',
                               conf.batch_size / float(np.median(seconds[without])), 'img/s',
                               f'first call {first[without]:.1f} s'
                               + (' (traces the step too)' if without else '')
                               + f'; batch {conf.batch_size}, '
                               f'median of {rounds} alternating rounds'))
    return results


def precision(args):
    """The step in float32 and in --precision (mixed_bfloat16 unless mixed_float16) with its
    float32 islands, with none and with all but one: one model each in one process, steps
    alternating, each a ratio to float32's. No XLA unless --jit on."""
    import tensorflow as tf
    import config
    low = args.precision if args.precision != 'float32' else 'mixed_bfloat16'
    variants = {'float32': {'precision': 'float32'}, f'{low}, float32 islands': {},
                f'{low}, no islands': {'float32_islands': []},
                **{f'{low}, islands but {island}': {'float32_islands': [
                    name for name in config.FLOAT32_ISLANDS if name != island]}
                   for island in config.FLOAT32_ISLANDS}}
    rows, jit = [], args.jit == 'on'
    for preset in presets(args):
        confs = {name: config.make_config(preset, batch_size=args.batch_size, jit=jit,
                                          **{'precision': low, **overrides})
                 for name, overrides in variants.items()}
        real = tf.random.uniform([args.batch_size] + [confs['float32'].img_size] * 2 + [3], -1, 1)
        seconds = _alternating_medians({name: our_step(c) for name, c in confs.items()}, real,
                                       args.steps)
        for name, median in seconds.items():
            rows.append(row(f'{preset}, {"XLA" if jit else "no XLA"}, {name}: train step',
                            args.batch_size / median, 'img/s', f'{seconds["float32"] / median:.2f}x '
                            f'float32; batch {args.batch_size}, median of {args.steps}, alternating'))
    return rows


def alternating_times(steps, real, rounds):
    """{name: [seconds of each round]} of `rounds` rounds calling each step once, in turn, after
    a call each to compile: the machine's speed drifts by 10% in minutes, more than what is
    compared."""
    for step in steps.values():
        step(real)
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step(real)
            times[name].append(time.perf_counter() - start)
    return times


def _alternating_medians(steps, real, rounds):
    """{name: median seconds} of alternating_times."""
    return {name: float(np.median(values))
            for name, values in alternating_times(steps, real, rounds).items()}


def authors(args):
    """Training images/s of ours and of the authors' train_step (--authors_code) in one process,
    alternating step by step."""
    import tensorflow as tf
    import config
    import official
    if not args.authors_code:
        return [row('ours against the authors', float('nan'), '', 'needs --authors_code DIR')]
    rows = []
    jit_modes = JIT_MODES[args.jit]
    for preset in presets(args):
        for jit in jit_modes:
            conf = config.make_config(preset, batch_size=args.batch_size,
                                      precision=args.precision, jit=jit)
            real = tf.random.uniform([conf.batch_size, conf.img_size, conf.img_size, 3], -1, 1)
            steps = {'ours': our_step(conf)}
            try:
                steps['authors'] = official.authors_train_step(conf, args.authors_code)
                steps['authors'](real)  # compile outside the timing
            except Exception as error:  # noqa: BLE001 - e.g. no XLA kernel for a gradient
                steps.pop('authors', None)  # it may fail before or after it is built
                rows.append(row(f'{preset}, {"XLA" if jit else "no XLA"}, authors: train step',
                                float('nan'), 'img/s', f'fails: {str(error).splitlines()[0][:120]}'))
            for name, median in _alternating_medians(steps, real, args.steps).items():
                rows.append(row(f'{preset}, {"XLA" if jit else "no XLA"}, {name}: train step',
                                conf.batch_size / median, 'img/s',
                                f'batch {conf.batch_size}, median of {args.steps}, alternating'))
    return rows


def conditional(args):
    """The conditional step (10 classes; each way G takes the class) against the unconditional
    one, one model each in one process, steps alternating: each round's time ratio, the median
    and the range over rounds. No XLA unless --jit on."""
    import tensorflow as tf
    import config
    variants = {'unconditional': {}, 'conditional': {'conditional': True, 'num_classes': 10},
                'conditional, class_input=noise': {'conditional': True, 'num_classes': 10,
                                                   'class_input': 'noise'}}
    rows, jit = [], args.jit == 'on'
    for preset in presets(args):
        steps = {}
        for name, overrides in variants.items():
            conf = config.make_config(preset, batch_size=args.batch_size, jit=jit, **overrides)
            steps[name] = our_step(conf)
        real = tf.random.uniform([args.batch_size] + [conf.img_size] * 2 + [3], -1, 1)
        rounds = alternating_times(steps, real, args.steps)
        for name, times in rounds.items():
            ratios = np.asarray(rounds['unconditional']) / np.asarray(times)  # speed ratios
            rows.append(row(f'{preset}, {"XLA" if jit else "no XLA"}, {name}: train step',
                            args.batch_size / float(np.median(times)), 'img/s',
                            f'{np.median(ratios):.3f}x unconditional (rounds {ratios.min():.3f} '
                            f'to {ratios.max():.3f}); batch {args.batch_size}, {args.steps} '
                            'rounds, alternating'))
    return rows
