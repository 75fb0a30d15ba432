"""LadaGAN hyperparameters: one plain dict of defaults, small presets, validation.

Edit `config` below as you would the authors' `config.py` (the keys and default values are theirs;
keys marked "ours" are additions of this project). On the command line, pick a preset with
`--preset NAME` and override any key with `--set key=value` (value parsed as a Python literal and
type-checked against the default). The resolved config is printed at start and written to
`<model_dir>/config.json`.

    >>> conf = make_config('cifar10', batch_size=64)
    >>> conf.img_size, conf.to_dict()['batch_size']
    (32, 64)
"""
import ast
import copy
import json
import os

# Official defaults (the authors' tensorflow/config.py: the CelebA 64x64 model).
config = {
    # --- data and model size ---
    'img_size': 64,               # training resolution: 32, 64, 128 or 256
    'batch_size': 128,            # global batch size (split over replicas when distributed)
    'noise_dim': 128,             # length of the standard-normal noise z fed to G
    'center_crop': False,         # ours: crop images to a centred square before resizing
    'mirror': False,              # ours: x-flip each drawn training image with probability 1/2
                                  # (seeded like the data order; before DiffAugment)
    # --- classes (ours; docs/conditional.md) ---
    'conditional': False,         # class-conditional G and D, from the training set's labels
    'num_classes': 0,             # a conditional run's classes, set from its labels at its start
    'class_input': 'projections',  # where G takes the class: 'projections' (an embedding added
                                  # to each projection of z: the first tokens, every
                                  # self-modulation) or 'noise' (one embedding added to z)
    # --- generator ---
    'g_dim': [1024, 256, 64],     # token width of the 8x8, 16x16 and 32x32 generator stages
    'g_heads': [4, 4, 4],         # attention heads per generator stage
    'g_mlp': [512, 512, 512],     # hidden width of each generator block's MLP
    'g_initializer': 'orthogonal',  # kernel initializer of every generator layer
    'dec_dim': False,             # False: patch generation; else conv decoder widths, one per x2
    'g_lr': 0.0002,               # generator Adam learning rate
    'g_beta1': 0.5,               # generator Adam beta_1
    'g_beta2': 0.99,              # generator Adam beta_2
    # --- discriminator ---
    'd_enc_dim': [64, 128, 256],  # conv encoder widths; one entry more per doubling above 16 px
    'd_out_dim': [512, 1024],     # widths of the two output convs after the Lada block
    'd_heads': 4,                 # attention heads of the discriminator block
    'd_mlp': 512,                 # hidden width of the discriminator block's MLP
    'd_initializer': 'orthogonal',  # kernel initializer of every discriminator layer
    'd_lr': 0.0002,               # discriminator Adam learning rate
    'd_beta1': 0.5,               # discriminator Adam beta_1
    'd_beta2': 0.99,              # discriminator Adam beta_2
    'freeze_d': 0,                # ours: FreezeD, D's first N blocks from the image (input conv,
                                  # down blocks, Transformer, head) fixed; for fine-tuning
    'attention': 'lada',          # ours: 'lada' (linear additive) or 'dot' (softmax dot-product)
    # --- objective ---
    'loss': 'nsl',                # 'nsl' non-saturating logistic, 'hinge', 'rahinge' (ours)
    'gp_weight': 0.0001,          # weight of the R1 penalty on (augmented) real images
    'r1_interval': 1,             # ours: R1 every this many D updates, weighted by it (lazy R1,
                                  # as StyleGAN2); 1: every update, as the official code
    'policy': 'color,translation',  # DiffAugment policy: comma-separated color/translation/cutout
    'bcr': False,                 # balanced consistency regularisation instead of DiffAugment in D
    'cr_weight': 0.1,             # weight of the bCR consistency loss
    'ema_decay': 0.999,           # decay of the generator's exponential moving average
    # --- evaluation and plots ---
    'fid_backbone': 'standard',   # ours: 'standard' (the paper's FID Inception) or 'keras' (official)
    'n_fid_real': 2500,           # real images for the in-training FID
    'n_fid_gen': 2500,            # generated images for the in-training FID
    'prdc': False,                # ours: log precision, recall, density, coverage with each FID
    'fid_batch_size': 50,         # Inception batch size
    'gen_batch_size': 50,         # generator batch size when sampling for FID and generate.py
    'plot_size': 5.2,             # height in inches of the attention-map figures (as official)
    'test_seed': 77,              # seed of the fixed noise behind sample grids and attention plots
    # --- execution (ours) ---
    'seed': 0,                    # seed of weights, noise, augmentation and data order
    'jit': 'auto',                # True/False: compile the train step with XLA or not; 'auto':
                                  # XLA on a GPU or TPU, not on a CPU (oneDNN is faster there)
    'precision': 'float32',       # 'float32', 'mixed_float16' (loss scaling) or 'mixed_bfloat16'
    'float32_islands': ['attention', 'norms', 'residual', 'rgb', 'logits'],  # ours: the parts
                                  # that stay float32 under mixed precision (FLOAT32_ISLANDS);
                                  # [] is the all-reduced-precision policy of earlier versions
    'nan_retries': 0,             # ours: on NaN, 0 stops; N: restore last ckpt at half the lrs, N times
    # --- watching the run (ours; guard.py) ---
    'fid_guard': 'warn',          # FID staying far above the best: 'warn', 'stop', 'rollback' (to
                                  # the best checkpoint, both lrs halved) or 'off'
    'fid_guard_factor': 1.5,      # an FID above this times the best FID counts as diverging
    'fid_guard_patience': 2,      # diverging FIDs in a row before fid_guard acts
    'fid_guard_retries': 2,       # rollbacks at most; then fid_guard=rollback stops
    'early_stop_patience': 0,     # finish after this many FIDs without a new best (0: never)
}

_G_BASE = dict(g_dim=[1024, 256, 64], g_heads=[4, 4, 4], g_mlp=[512, 512, 512], dec_dim=False)

# Each preset overrides only what differs from `config`; see the README for what each reached.
presets = {
    # CIFAR-10 32x32 (paper FID 3.29): the 64 px model with a one-step-shorter D encoder.
    'cifar10': dict(_G_BASE, img_size=32, d_enc_dim=[128, 256], batch_size=128),
    # CelebA 64x64 (paper FID 1.81): the official defaults.
    'celeba_64': dict(_G_BASE, img_size=64, d_enc_dim=[64, 128, 256], batch_size=128),
    # FFHQ 128x128 (paper FID 4.48): wider G, conv decoder, cutout and bCR as released.
    'ffhq_128': dict(img_size=128, g_dim=[1024, 512, 256], g_heads=[4, 4, 4],
                     g_mlp=[512, 512, 512], dec_dim=[128, 64], d_enc_dim=[32, 64, 128, 256],
                     batch_size=64, policy='color,translation,cutout', bcr=True),
    # LSUN Bedroom 128x128 (paper FID 5.08): released with the FFHQ 128 settings.
    'bedroom_128': dict(img_size=128, g_dim=[1024, 512, 256], g_heads=[4, 4, 4],
                        g_mlp=[512, 512, 512], dec_dim=[128, 64], d_enc_dim=[32, 64, 128, 256],
                        batch_size=64, policy='color,translation,cutout', bcr=True),
    # A few-hundred-thousand-parameter model for tests and CPU experiments.
    'tiny': dict(img_size=32, batch_size=16, g_dim=[64, 32, 16], g_heads=[2, 2, 2],
                 g_mlp=[64, 64, 64], d_enc_dim=[16, 32], d_out_dim=[32, 64], d_heads=2,
                 d_mlp=64, n_fid_real=500, n_fid_gen=500),
    # The default `python train.py`: OpenMoji emoji at 32 px in minutes on a 2-core CPU. Its
    # EMA averages over ~100 steps, not ~1,000: a 1,500-step run would otherwise still carry
    # a third of its first 500 steps (FID 127 at 48k images with 0.99; 130 at 64k with 0.999).
    'demo': dict(img_size=32, batch_size=32, g_dim=[128, 64, 32], g_heads=[2, 2, 2],
                 g_mlp=[128, 128, 128], d_enc_dim=[32, 64], d_out_dim=[64, 128], d_heads=2,
                 d_mlp=128, n_fid_real=500, n_fid_gen=500, ema_decay=0.99),
}

IMG_SIZES = (32, 64, 128, 256)
# The discriminator always attends over a 16x16 grid: one stride-2 down block per doubling.
D_ENC_LENGTHS = {32: 2, 64: 3, 128: 4, 256: 5}
LOSSES = ('nsl', 'hinge', 'rahinge')
ATTENTIONS = ('lada', 'dot')
POLICY_OPS = ('color', 'translation', 'cutout')
FID_BACKBONES = ('standard', 'keras')
FID_GUARDS = ('off', 'warn', 'stop', 'rollback')
CLASS_INPUTS = ('projections', 'noise')
PRECISIONS = ('float32', 'mixed_float16', 'mixed_bfloat16')
# What each float32 island keeps in float32 under mixed precision (docs/precision.md).
FLOAT32_ISLANDS = {
    'attention': 'the Lada scores, their softmax over tokens and the attention-weighted sum',
    'norms': 'the LayerNorms and the self-modulation (its gamma, beta and affine)',
    'residual': 'the residual stream and the position embeddings added to it',
    'rgb': "G's last convolution, to RGB",
    'logits': "D's last convolution, to the 5x5 logits",
}
INITIALIZERS = ('orthogonal', 'glorot_uniform', 'glorot_normal', 'he_normal', 'he_uniform',
                'lecun_normal', 'random_normal')


class UserError(ValueError):
    """Bad user input: a config value, a path, an option or a damaged file. Every script prints
    it as one `error:` line and exits with code 2, before anything on disk is touched."""


def cache_dir(*parts):
    """The folder ladagan keeps caches in (demo images, FID weights and reference statistics,
    downloaded checkpoints): $LADAGAN_CACHE_DIR, else $XDG_CACHE_HOME/ladagan, else
    ~/.cache/ladagan; with `parts`, a path inside it."""
    root = os.environ.get('LADAGAN_CACHE_DIR') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'),
        'ladagan')
    return os.path.join(root, *parts)


class Config:
    """A validated, read-only view of a config dict with attribute access."""

    def __init__(self, values):
        object.__setattr__(self, '_values', copy.deepcopy(dict(values)))

    def __getattr__(self, key):
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f'config has no key {key!r}') from None

    def __setattr__(self, key, value):
        raise AttributeError('Config is read-only: use make_config(..., key=value) instead')

    def __getitem__(self, key):
        return self._values[key]

    def __eq__(self, other):
        return isinstance(other, Config) and self._values == other._values

    def __repr__(self):
        return f'Config({self._values!r})'

    def to_dict(self):
        return copy.deepcopy(self._values)

    def to_json(self):
        return json.dumps(self._values, indent=4)

    def replace(self, **overrides):
        """A new validated config with some keys changed."""
        values = self.to_dict()
        values.update(_typed_overrides(overrides))
        return Config(validate(values))


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(value):
    if isinstance(value, list):
        return 'a list of integers'
    return {bool: 'True or False', int: 'an integer', float: 'a number',
            str: 'a string'}[type(value)]


def _check_type(key, value):
    """Return `value` converted to the type of config[key], or raise UserError."""
    default = config[key]
    if key == 'jit':  # True, False or 'auto'; the command line gives strings
        value = {'true': True, 'false': False}.get(str(value).lower(), value)
        if isinstance(value, bool) or value == 'auto':
            return value
        raise UserError(f"jit={value!r} is not allowed: use True, False or 'auto'")
    if key == 'dec_dim':  # False (patch generation) or a list of decoder widths
        if value is False or (isinstance(value, list) and value and all(map(_is_int, value))):
            return list(value) if value else False
        raise UserError(f'dec_dim={value!r} is not allowed: use False or a list of integers')
    if key == 'float32_islands':  # a list of names; the command line gives 'a,b' or '' or []
        if isinstance(value, str):
            value = [name.strip() for name in value.strip('[]').split(',') if name.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(name, str) for name in value):
            return [name.strip('\'" ') for name in value]
        raise UserError(f'float32_islands={value!r} is not allowed: use a comma-separated list '
                        f'of {", ".join(FLOAT32_ISLANDS)}, or [] for none')
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif _is_int(default):
        ok = _is_int(value)
    elif isinstance(default, float):
        ok = _is_int(value) or isinstance(value, float)
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, (list, tuple)) and all(map(_is_int, value))
        value = list(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise UserError(f'{key}={value!r} has the wrong type: it must be {_type_name(default)}')
    return value


def _typed_overrides(overrides):
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise UserError(f'unknown config key {unknown[0]!r}; known keys: '
                          + ', '.join(sorted(config)))
    return {key: _check_type(key, value) for key, value in overrides.items()}


def _fail(message):
    raise UserError(message)


def check_generator_shape(img_size, g_dim, g_heads, g_mlp, dec_dim):
    """Raise UserError unless the generator widths fit each other and img_size (used by validate
    and by model.Generator, so that a model built without a config is checked the same way)."""
    if img_size not in IMG_SIZES:
        _fail(f'img_size={img_size} is not supported: use one of {", ".join(map(str, IMG_SIZES))}')
    for key, value in (('g_dim', g_dim), ('g_heads', g_heads), ('g_mlp', g_mlp)):
        if len(value) != 3:
            _fail(f'{key}={list(value)} must have 3 entries, one per generator stage (8, 16, 32 px)')
        if min(value) < 1:
            _fail(f'{key}={list(value)} must hold positive integers')
    for stage, (dim, heads) in enumerate(zip(g_dim, g_heads)):
        if dim % heads:
            _fail(f'g_dim[{stage}]={dim} is not divisible by g_heads[{stage}]={heads}')
    for stage in (0, 1):  # pixel shuffle x2 turns C channels into C / 4
        if g_dim[stage] % 4:
            _fail(f'g_dim[{stage}]={g_dim[stage]} must be divisible by 4 (pixel shuffle x2)')
    upsamplings = {32: 0, 64: 1, 128: 2, 256: 3}[img_size]
    if not dec_dim:
        patch = img_size // 32
        if g_dim[2] % (patch * patch):
            _fail(f'g_dim[2]={g_dim[2]} must be divisible by {patch * patch} for patch '
                  f'generation at img_size {img_size} (or set dec_dim)')
    elif len(dec_dim) != upsamplings:
        _fail(f'dec_dim={list(dec_dim)} must have {upsamplings} entries for img_size {img_size} '
              '(one per x2 upsampling from 32 px), or be False')


def check_discriminator_shape(img_size, d_enc_dim, d_out_dim, d_heads):
    """Raise UserError unless the discriminator widths fit each other and img_size."""
    if img_size not in IMG_SIZES:
        _fail(f'img_size={img_size} is not supported: use one of {", ".join(map(str, IMG_SIZES))}')
    n_enc = D_ENC_LENGTHS[img_size]
    if len(d_enc_dim) != n_enc:
        _fail(f'd_enc_dim={list(d_enc_dim)} must have {n_enc} entries for img_size {img_size}')
    if len(d_out_dim) != 2:
        _fail(f'd_out_dim={list(d_out_dim)} must have 2 entries')
    if min(d_enc_dim) < 1 or min(d_out_dim) < 1:
        _fail(f'd_enc_dim={list(d_enc_dim)} and d_out_dim={list(d_out_dim)} must hold positive '
              'integers')
    if d_enc_dim[-1] % d_heads:
        _fail(f'd_enc_dim[-1]={d_enc_dim[-1]} is not divisible by d_heads={d_heads}')


def validate(values):
    """Check that the values fit together; return them unchanged or raise UserError."""
    v = values
    for key in ('batch_size', 'noise_dim', 'd_heads', 'd_mlp', 'n_fid_real', 'n_fid_gen',
                'fid_batch_size', 'gen_batch_size', 'r1_interval'):
        if v[key] < 1:
            _fail(f'{key}={v[key]} must be a positive integer')
    check_generator_shape(v['img_size'], v['g_dim'], v['g_heads'], v['g_mlp'], v['dec_dim'])
    check_discriminator_shape(v['img_size'], v['d_enc_dim'], v['d_out_dim'], v['d_heads'])
    for key, allowed in (('loss', LOSSES), ('attention', ATTENTIONS),
                         ('fid_backbone', FID_BACKBONES), ('precision', PRECISIONS),
                         ('fid_guard', FID_GUARDS), ('class_input', CLASS_INPUTS),
                         ('g_initializer', INITIALIZERS), ('d_initializer', INITIALIZERS)):
        if v[key] not in allowed:
            _fail(f'{key}={v[key]!r} is not supported: use one of {", ".join(allowed)}')
    if v['conditional'] and v['num_classes'] == 1 or v['num_classes'] < 0:
        _fail(f'num_classes={v["num_classes"]} is not allowed: a conditional run has 2 classes or '
              'more (0: taken from its training set)')
    if v['num_classes'] and not v['conditional']:
        _fail(f'num_classes={v["num_classes"]} is set but conditional=False: set conditional=True '
              'for a class-conditional run, or leave num_classes at 0')
    islands = list(v['float32_islands'])
    unknown = [name for name in islands if name not in FLOAT32_ISLANDS]
    if unknown or len(set(islands)) != len(islands):
        _fail(f'float32_islands={islands} must list distinct parts of '
              f'{", ".join(FLOAT32_ISLANDS)} (or be [])')
    ops = [op for op in v['policy'].split(',') if op]
    for op in ops:
        if op not in POLICY_OPS:
            _fail(f'policy={v["policy"]!r} has unknown operation {op!r}: use a comma-separated '
                  f'list of {", ".join(POLICY_OPS)} (or an empty string)')
    if not 0.0 <= v['ema_decay'] < 1.0:
        _fail(f'ema_decay={v["ema_decay"]} must be in [0, 1)')
    for key in ('g_lr', 'd_lr', 'plot_size'):
        if v[key] <= 0:
            _fail(f'{key}={v[key]} must be positive')
    for key in ('g_beta1', 'g_beta2', 'd_beta1', 'd_beta2'):
        if not 0.0 <= v[key] < 1.0:
            _fail(f'{key}={v[key]} must be in [0, 1)')
    n_blocks = len(v['d_enc_dim']) + 2  # input conv, down blocks, Transformer, head
    if not 0 <= v['freeze_d'] < n_blocks:
        downs = f'{n_blocks - 3} down block' + 's' * (n_blocks > 4)
        _fail(f'freeze_d={v["freeze_d"]} must be in [0, {n_blocks - 1}]: D has {n_blocks} blocks '
              f'at img_size {v["img_size"]} (the input conv, {downs}, the Transformer, the head) '
              'and one at least must train')
    for key in ('gp_weight', 'cr_weight', 'nan_retries', 'fid_guard_retries',
                'early_stop_patience'):
        if v[key] < 0:
            _fail(f'{key}={v[key]} must not be negative')
    if v['prdc'] and min(v['n_fid_real'], v['n_fid_gen']) <= 3:  # k = 3 nearest neighbours
        _fail(f'prdc=True needs more than 3 images a side, not n_fid_real={v["n_fid_real"]} and '
              f'n_fid_gen={v["n_fid_gen"]}')
    if v['fid_guard_factor'] < 1:
        _fail(f'fid_guard_factor={v["fid_guard_factor"]} must be at least 1 (a factor of the '
              'best FID)')
    if v['fid_guard_patience'] < 1:
        _fail(f'fid_guard_patience={v["fid_guard_patience"]} must be a positive integer')
    return values


def make_config(preset=None, **overrides):
    """The default config, then the preset's overrides, then `overrides`, validated."""
    values = copy.deepcopy(config)
    if preset is not None:
        if preset not in presets:
            raise UserError(f'unknown preset {preset!r}: use one of {", ".join(presets)}')
        values.update(presets[preset])
    values.update(_typed_overrides(overrides))
    return Config(validate(values))


def config_from_dict(values, source='the stored config'):
    """(validated Config, notices) from a stored dict such as a run's config.json.

    A run folder outlives code changes: a key added to `config` after the file was written takes
    its default (or what the run trained with, BEFORE_THE_KEY), and one notice line (for the
    caller to print) names each such key and value."""
    missing = [key for key in config if key not in values]
    typed = _typed_overrides(values)
    filled = {key: copy.deepcopy(BEFORE_THE_KEY.get(key, config[key])) for key in missing}
    notices = []
    if missing:
        defaults = ', '.join(f'{key}={value!r}' for key, value in filled.items())
        notices.append(f'{source} predates the config key{"s" * (len(missing) > 1)} '
                       f'{", ".join(missing)}: using {defaults}')
    return Config(validate({**copy.deepcopy(config), **filled, **typed})), notices


# What a run folder written before a key existed trained with, where that is not the key's
# default: before float32_islands, mixed precision kept no part of the networks in float32.
BEFORE_THE_KEY = {'float32_islands': []}


def parse_override(text):
    """'key=value' from the command line -> (key, typed value). Strings need no quotes."""
    if '=' not in text:
        raise UserError(f'--set {text!r} is not of the form key=value')
    key, raw = text.split('=', 1)
    key = key.strip()
    if key not in config:
        raise UserError(f'unknown config key {key!r}; known keys: ' + ', '.join(sorted(config)))
    default = config[key]
    if (isinstance(default, str) and key != 'dec_dim') or key == 'float32_islands':
        value = raw.strip()
    else:
        lowered = raw.strip().lower()
        if lowered in ('true', 'false'):
            value = lowered == 'true'
        else:
            try:
                value = ast.literal_eval(raw.strip())
            except (ValueError, SyntaxError):
                raise UserError(f'--set {key}={raw} is not a valid value: it must be '
                                  f'{_type_name(default)}') from None
    return key, _check_type(key, value)


# Official config.json keys that this project reads under the same name (all of them); other
# keys found in an official config.json are ignored when loading it.
OFFICIAL_KEYS = ('img_size', 'batch_size', 'g_lr', 'g_beta1', 'g_beta2', 'noise_dim',
                 'g_initializer', 'g_dim', 'g_heads', 'g_mlp', 'd_initializer', 'd_enc_dim',
                 'd_out_dim', 'd_heads', 'd_mlp', 'd_lr', 'd_beta1', 'd_beta2', 'gp_weight',
                 'policy', 'fid_batch_size', 'gen_batch_size', 'loss', 'ema_decay', 'bcr',
                 'cr_weight', 'dec_dim', 'n_fid_real', 'n_fid_gen', 'plot_size', 'test_seed')


def from_official(official):
    """Translate an official LadaGAN config.json dict into our Config."""
    values = {key: official[key] for key in OFFICIAL_KEYS if key in official}
    return make_config(**values)
