"""The authors' checkpoints: their Keras 2 variable names mapped onto ours, and their releases.

The authors' TensorFlow code (Keras 2) names variables by its object graph, e.g.
`ema_generator/block_8/attn/wq/kernel`; Keras 3 names the same variables differently, so they
are read one by one through an explicit map (official_variable_map), never by
tf.train.Checkpoint.restore on our models. download_official_checkpoint fetches their Hugging
Face releases (cifar10, celeba_64, ffhq_128, bedroom_128). authors_train_step runs their own
training step from a checkout of their code, for benchmark.py.
"""
import json
import os
import shutil
import socket
import sys
import tempfile
import urllib.parse
import urllib.request

import tensorflow as tf

import config as config_lib
import model as model_lib
from config import UserError


_OFFICIAL_SUFFIX = '/.ATTRIBUTES/VARIABLE_VALUE'


def _official_block_map(prefix, block, self_modulated):
    """Official names -> variables of one Ladaformer block (ours: ladaformer.*Block)."""
    names = {}
    for dense in ('wq', 'wk', 'wv', 'q_attn', 'to_out'):
        layer = getattr(block.attn, dense, None)
        if layer is not None:  # dot-product attention has no q_attn
            names[f'{prefix}/attn/{dense}/kernel'] = layer.kernel
            names[f'{prefix}/attn/{dense}/bias'] = layer.bias
    for index, layer in enumerate((block.mlp.fc1, block.mlp.fc2)):
        names[f'{prefix}/mlp/layer_with_weights-{index}/kernel'] = layer.kernel
        names[f'{prefix}/mlp/layer_with_weights-{index}/bias'] = layer.bias
    for norm_name in ('norm1', 'norm2'):
        norm = getattr(block, norm_name)
        if self_modulated:
            for dense in ('h', 'gamma', 'beta'):
                names[f'{prefix}/{norm_name}/{dense}/kernel'] = getattr(norm, dense).kernel
                names[f'{prefix}/{norm_name}/{dense}/bias'] = getattr(norm, dense).bias
        else:
            names[f'{prefix}/{norm_name}/gamma'] = norm.gamma
            names[f'{prefix}/{norm_name}/beta'] = norm.beta
    return names


def _batch_norm_map(prefix, norm):
    return {f'{prefix}/{attr}': getattr(norm, attr)
            for attr in ('gamma', 'beta', 'moving_mean', 'moving_variance')}


def official_variable_map(model, prefix):
    """{official checkpoint key (without the .ATTRIBUTES suffix): our variable} for a
    model.Generator or model.Discriminator, written out explicitly because Keras 3 tracks
    variables under other names than the official code's Keras 2 object graph."""
    names = {}
    if hasattr(model, 'block_32'):  # generator
        names[f'{prefix}/init/layer_with_weights-0/kernel'] = model.init.kernel
        for side in (8, 16, 32):
            names[f'{prefix}/pos_emb_{side}/position_embedding/embeddings'] = (
                getattr(model, f'pos_emb_{side}').embeddings)
            names.update(_official_block_map(f'{prefix}/block_{side}',
                                             getattr(model, f'block_{side}'), True))
        for conv_name in ('conv_8', 'conv_16', 'ch_conv'):
            conv = getattr(model, conv_name)
            names[f'{prefix}/{conv_name}/kernel'] = conv.kernel
            names[f'{prefix}/{conv_name}/bias'] = conv.bias
        # The official decoder is one Sequential: conv, BN (then weightless layers) per stage.
        for stage, (conv, norm) in enumerate(zip(model.dec_convs, model.dec_norms)):
            names[f'{prefix}/dec/layer_with_weights-{2 * stage}/kernel'] = conv.kernel
            names[f'{prefix}/dec/layer_with_weights-{2 * stage}/bias'] = conv.bias
            names.update(_batch_norm_map(f'{prefix}/dec/layer_with_weights-{2 * stage + 1}',
                                         norm))
    else:  # discriminator
        names[f'{prefix}/inp_conv/layer_with_weights-0/kernel'] = model.inp_conv.kernel
        for index, down in enumerate(model.encoder):
            base = f'{prefix}/encoder/{index}'
            names[f'{base}/main/layer_with_weights-0/kernel'] = down.main_conv1.kernel
            names.update(_batch_norm_map(f'{base}/main/layer_with_weights-1', down.main_bn1))
            names[f'{base}/main/layer_with_weights-2/kernel'] = down.main_conv2.kernel
            names.update(_batch_norm_map(f'{base}/main/layer_with_weights-3', down.main_bn2))
            names[f'{base}/direct/layer_with_weights-0/kernel'] = down.direct_conv.kernel
            names.update(_batch_norm_map(f'{base}/direct/layer_with_weights-1', down.direct_bn))
        names[f'{prefix}/pos_emb_8/position_embedding/embeddings'] = model.pos_emb_8.embeddings
        names.update(_official_block_map(f'{prefix}/block_8', model.block_8, False))
        names[f'{prefix}/conv_4/kernel'] = model.conv_4.kernel
        names[f'{prefix}/conv_4/bias'] = model.conv_4.bias
        names[f'{prefix}/down_4/layer_with_weights-0/kernel'] = model.out_conv1.kernel
        names[f'{prefix}/down_4/layer_with_weights-1/kernel'] = model.out_conv2.kernel
    return names


def _resolve_official_checkpoint(path):
    """A model folder, a best-training-checkpoints folder or a checkpoint prefix ->
    (checkpoint prefix, folder holding config.json)."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    if os.path.isdir(path):
        ckpt_dir = path
        if os.path.isdir(os.path.join(path, 'best-training-checkpoints')):
            ckpt_dir = os.path.join(path, 'best-training-checkpoints')
        prefix = tf.train.latest_checkpoint(ckpt_dir)
        if prefix is None:  # no 'checkpoint' index file: take the newest *.index
            indexes = sorted(f for f in os.listdir(ckpt_dir) if f.endswith('.index'))
            if not indexes:
                raise UserError(f'no checkpoint found in {path}: expected '
                                'best-training-checkpoints/ckpt-N.index')
            prefix = os.path.join(ckpt_dir, indexes[-1][:-len('.index')])
    elif os.path.exists(path + '.index'):
        prefix = path
    else:
        raise UserError(f'{path} is neither a model folder nor a checkpoint prefix '
                        '(a path whose .index file exists)')
    folder = os.path.dirname(prefix)
    if os.path.basename(folder) in ('best-training-checkpoints', 'training-checkpoints'):
        folder = os.path.dirname(folder)
    return prefix, folder


def load_official_checkpoint(path):
    """Build LadaGAN from an official checkpoint (authors' TF code, e.g. their Hugging Face
    releases): `path` is a model folder (config.json + best-training-checkpoints/) or a
    checkpoint prefix. Returns dict(config=Config, generator=, ema_generator=, discriminator=,
    n_images=, fid=, best_fid=). Every variable is loaded or an error lists what is missing or
    unexpected; nothing is half-loaded. Reading a checkpoint never runs code from it."""
    prefix, folder = _resolve_official_checkpoint(path)
    config_path = os.path.join(folder, 'config.json')
    try:
        with open(config_path) as f:
            official = json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(f'cannot read the official config {config_path}: {err}') from None
    conf = config_lib.from_official(official)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as err:
        raise UserError(f'cannot read checkpoint {prefix}: {err}') from None
    stored = {key[:-len(_OFFICIAL_SUFFIX)]: shape
              for key, shape in reader.get_variable_to_shape_map().items()
              if key.endswith(_OFFICIAL_SUFFIX)}

    # Built without initial values: every weight is assigned from the checkpoint below.
    models = {'generator': model_lib.build_generator(conf, 'generator', initialize=False),
              'ema_generator': model_lib.build_generator(conf, 'ema_generator', initialize=False),
              'discriminator': model_lib.build_discriminator(conf, 'discriminator',
                                                             initialize=False)}
    wanted = {}
    for prefix_name, net in models.items():
        mapped = official_variable_map(net, prefix_name)
        unmapped = [w.path for w in net.weights if all(w is not v for v in mapped.values())]
        if unmapped:  # a weight the map forgot would stay at zero
            raise RuntimeError(f'official_variable_map misses {prefix_name} weights {unmapped}')
        wanted.update(mapped)
    model_keys = {key for key in stored if key.split('/')[0] in models}
    missing = sorted(set(wanted) - model_keys)
    unexpected = sorted(model_keys - set(wanted))
    mismatched = sorted(key for key in set(wanted) & model_keys
                        if list(stored[key]) != list(wanted[key].shape))
    if missing or unexpected or mismatched:
        details = []
        for label, keys in (('missing', missing), ('unexpected', unexpected),
                            ('shape-mismatched', mismatched)):
            if keys:
                details.append(f'{len(keys)} {label} (e.g. {", ".join(keys[:5])})')
        raise UserError(f'checkpoint {prefix} does not fit the model built from {config_path}: '
                        + '; '.join(details))
    for key, variable in wanted.items():
        variable.assign(reader.get_tensor(key + _OFFICIAL_SUFFIX))
    scalars = {}
    for name in ('n_images', 'fid', 'best_fid'):
        key = name + _OFFICIAL_SUFFIX
        scalars[name] = reader.get_tensor(key).item() if reader.has_tensor(key) else None
    return dict(config=conf, **models, **scalars)


def is_official_checkpoint(prefix):
    """Whether a checkpoint was written by the authors' code (Keras 2 names)."""
    keys = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    return any(key.startswith('ema_generator/init/layer_with_weights-0') for key in keys)


# The authors' releases on the Hugging Face Hub: name -> images seen at the best FID, which
# numbers the checkpoint files (<name>/best-training-checkpoints/ckpt-<N>.*).
OFFICIAL_CHECKPOINT_STEPS = {'cifar10': 68096000, 'celeba_64': 72192000,
                             'ffhq_128': 24064000, 'bedroom_128': 10624000}


OFFICIAL_HUB_REPO = 'milmor/LadaGAN'


def _official_checkpoint_files(name):
    """Paths, relative to the model folder, of the files of one official release."""
    prefix = f'best-training-checkpoints/ckpt-{OFFICIAL_CHECKPOINT_STEPS[name]}'
    return ['config.json', 'best-training-checkpoints/checkpoint', prefix + '.index',
            prefix + '.data-00000-of-00001']


def _download_errors():
    """Exception types meaning 'the download failed' (network, HTTP status, disk), not a bug."""
    from huggingface_hub import errors as hub_errors

    errors = [OSError, hub_errors.HfHubHTTPError]
    for module_name, attribute in (('requests', 'RequestException'), ('httpx', 'HTTPError'),
                                   ('httpx2', 'HTTPError')):
        try:  # the hub client's HTTP library changed across versions
            errors.append(getattr(__import__(module_name), attribute))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _check_hub_reachable(endpoint, timeout_seconds=10):
    """Raise OSError at once when the Hub's host cannot be reached, instead of waiting through
    huggingface_hub's retries (about 25 s per file). Skipped behind a proxy, which may be the
    only way out even when a direct connection fails."""
    proxies = urllib.request.getproxies()
    if proxies.get('https') or proxies.get('all'):
        return
    url = urllib.parse.urlparse(endpoint)
    port = url.port or (443 if url.scheme == 'https' else 80)
    with socket.create_connection((url.hostname, port), timeout=timeout_seconds):
        pass


def download_official_checkpoint(name, dest_dir=None, repo_id=OFFICIAL_HUB_REPO):
    """Download an official pretrained LadaGAN (cifar10, celeba_64, ffhq_128 or bedroom_128)
    from the Hugging Face Hub into `<dest_dir>/<name>/` (default dest_dir:
    config.cache_dir('pretrained')) in the authors' layout (config.json +
    best-training-checkpoints/), which load_official_checkpoint and load_run_generator read.
    Returns that folder. A complete folder already there is returned without downloading.

    Needs huggingface_hub (in requirements.txt). Files go to a hidden temporary folder first and
    are moved into place only when all arrived, so a failed download leaves nothing behind.
    Raises UserError for an unknown name, a missing huggingface_hub or a failed download."""
    if name not in OFFICIAL_CHECKPOINT_STEPS:
        raise UserError(f'{name!r} is not an official LadaGAN checkpoint: use one of '
                        + ', '.join(OFFICIAL_CHECKPOINT_STEPS))
    dest_dir = os.path.expanduser(str(dest_dir or config_lib.cache_dir('pretrained')))
    folder = os.path.join(dest_dir, name)
    files = _official_checkpoint_files(name)
    if all(os.path.isfile(os.path.join(folder, file)) for file in files):
        return folder
    try:  # imported only when a download is needed: it takes a second to import
        import huggingface_hub
    except ImportError:
        raise UserError('Downloading official checkpoints needs huggingface_hub: install '
                        "huggingface_hub ('pip install huggingface_hub'), or pass an "
                        'already-downloaded official folder instead.') from None
    from huggingface_hub import constants as hub_constants

    download_errors = _download_errors()
    created_dest_dir = not os.path.isdir(dest_dir)
    staging = None
    try:
        _check_hub_reachable(hub_constants.ENDPOINT)
        os.makedirs(dest_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f'.{name}.partial-', dir=dest_dir)
        print(f'Downloading the official {name} checkpoint from {repo_id} into {folder}')
        for file in files:
            huggingface_hub.hf_hub_download(repo_id=repo_id, filename=f'{name}/{file}',
                                            local_dir=staging)
        for file in files:
            os.makedirs(os.path.dirname(os.path.join(folder, file)), exist_ok=True)
            os.replace(os.path.join(staging, name, file), os.path.join(folder, file))
    except download_errors as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserError(f'Downloading the official {name} checkpoint from the Hugging Face Hub '
                        f'({repo_id}) failed ({reason}); check the internet connection, download '
                        f'{", ".join(files)} from https://huggingface.co/{repo_id}/tree/main/'
                        f'{name} into {folder} by hand, or pass an already-downloaded official '
                        'folder instead.') from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created_dest_dir and os.path.isdir(dest_dir) and not os.listdir(dest_dir):
            os.rmdir(dest_dir)
    return folder


# ---------------------------------------------------------------- the authors' code

def import_authors_code(code_dir):
    """(Generator, Discriminator, LadaGAN, get_loss) of the authors' TensorFlow code, from
    their checkout at `code_dir` (never copied here). Their modules share names with ours
    (model, diffaug, fid, config, trainer): ours step out of sys.modules while theirs load, and come
    back after, so both can run in one process."""
    import importlib
    names = ('model', 'diffaug', 'fid', 'utils', 'config', 'trainer')
    ours = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    folder = os.path.join(code_dir, 'tensorflow')
    sys.path.insert(0, folder)
    try:
        their_model = importlib.import_module('model')
        return (their_model.Generator, their_model.Discriminator,
                importlib.import_module('trainer').LadaGAN,
                importlib.import_module('utils').get_loss)
    finally:
        sys.path.remove(folder)
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(ours)


def authors_train_step(conf, code_dir):
    """The authors' train_step on the same config (Keras 2 code: TF_USE_LEGACY_KERAS=1 and
    tf_keras installed). Their step is always XLA-compiled; without XLA, the same Python
    function is compiled without it."""
    import types

    Generator, Discriminator, LadaGAN, get_loss = import_authors_code(code_dir)
    generator = Generator(img_size=conf.img_size, model_dim=conf.g_dim, heads=conf.g_heads,
                          mlp_dim=conf.g_mlp, dec_dim=conf.dec_dim)
    generator(tf.zeros([1, conf.noise_dim]))
    discriminator = Discriminator(img_size=conf.img_size, enc_dim=conf.d_enc_dim,
                                  out_dim=conf.d_out_dim, heads=conf.d_heads,
                                  mlp_dim=conf.d_mlp, initializer=conf.d_initializer)
    discriminator(tf.zeros([1, conf.img_size, conf.img_size, 3]))
    trainer = LadaGAN(generator=generator, discriminator=discriminator,
                      conf=types.SimpleNamespace(**conf.to_dict()))
    g_loss, d_loss = get_loss(conf.loss)
    trainer.build(g_optimizer=tf.keras.optimizers.Adam(conf.g_lr, conf.g_beta1, conf.g_beta2),
                  d_optimizer=tf.keras.optimizers.Adam(conf.d_lr, conf.d_beta1, conf.d_beta2),
                  g_loss=g_loss, d_loss=d_loss)
    if not conf.jit:
        trainer.train_step = tf.function(types.MethodType(
            LadaGAN.train_step.python_function, trainer))

    def step(real):
        trainer.train_step(real)
        return float(trainer.train_metrics['d_loss'].result())
    return step
