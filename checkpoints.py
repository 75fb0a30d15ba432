"""Run folders and checkpoints: what a run writes, how it resumes, and the authors' checkpoints.

A run folder holds config.json (the validated config), run.json (its data and schedule, see
resolve_options), training-checkpoints/ (latest), best-training-checkpoints/ (best FID, the
official layout), metrics.jsonl and log-dir/ (RunLog), samples/ and loss_curves.png (plots.py).

The authors' checkpoints (their TensorFlow code, Keras 2) are read variable by variable through
an explicit name map (official_variable_map), because Keras 3 names the same variables
differently; download_official_checkpoint fetches their Hugging Face releases.
"""
import gc
import json
import os
import shutil
import socket
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np
import tensorflow as tf

import config as config_lib
import model as model_lib
from config import UserError


RUN_RECORD = 'run.json'


# train.py options that a run folder remembers, so that `train.py --model_dir RUN` resumes with
# the same data and schedule; paths are stored absolute.
RECORDED_OPTIONS = ('file_pattern', 'eval_dir', 'total_iter', 'fid_inter', 'ckpt_inter',
                    'metrics_inter', 'max_ckpt_to_keep')


RECORDED_PATHS = ('file_pattern', 'eval_dir')


def write_atomic(path, text):
    """Write `text` to `path` whole or not at all: a kill mid-write leaves the old file."""
    temp_path = f'{path}.tmp'
    with open(temp_path, 'w') as f:
        f.write(text)
    os.replace(temp_path, path)


def write_json_atomic(path, value):
    write_atomic(path, json.dumps(value, indent=4) + '\n')


def read_run_record(model_dir):
    """The run's run.json as {'options': {...}, 'changes': [...]}, or None when the folder has
    none (runs written before the record existed, official model folders)."""
    path = os.path.join(model_dir, RUN_RECORD)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        if not isinstance(record, dict) or not isinstance(record.get('options'), dict):
            raise ValueError('no "options" object')
    except (OSError, ValueError) as err:
        raise UserError(f'{path} is not a valid run record ({err}); repair or delete it (a '
                        'deleted one is rebuilt from the command line)') from None
    return record


def resolve_config(model_dir, preset, overrides, new_run_preset=None):
    """(config, resumed, notices): the config stored in `model_dir` when it holds a run, else
    `preset` (or `new_run_preset`) with the `overrides`. Resuming, a preset or override that
    contradicts the stored config is a UserError: hyperparameters do not change mid-run."""
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise UserError(f'--model_dir {model_dir} is a file, not a folder: give a new folder for '
                        'a new run or an existing run folder to resume')
    stored_path = os.path.join(model_dir, 'config.json')
    if not os.path.exists(stored_path):
        return config_lib.make_config(preset or new_run_preset, **overrides), False, []
    try:
        with open(stored_path) as f:
            stored_values = json.load(f)
        if not isinstance(stored_values, dict):
            raise ValueError('not a JSON object')
        stored, notices = config_lib.config_from_dict(stored_values, stored_path)
    except (OSError, ValueError) as err:
        raise UserError(f'{stored_path} is not a valid LadaGAN config ({err}); '
                        'use a new --model_dir or repair the file') from None
    asked = config_lib.make_config(preset, **overrides).to_dict() if preset else {}
    asked.update(overrides)
    for key, value in asked.items():
        if stored[key] != value:
            raise UserError(f'{model_dir} holds a run with {key}={stored[key]!r} but the command '
                            f'line asks for {value!r}: resume without --preset/--set, or use a '
                            'new --model_dir')
    return stored, True, notices


def _shown(value):
    return 'none' if value is None else value


def resolve_options(model_dir, given, defaults, resumed):
    """(options, record, notices) for a run: each of RECORDED_OPTIONS from `given` (the command
    line; None: not given), else from the run's run.json, else from `defaults(file_pattern)`.
    `record` is the run.json to write. Paths are made absolute.

    A value given on resume that differs from the recorded one is taken (datasets move between
    machines) with a notice, and the change is kept in the record's "changes". A run folder
    without run.json (written before runs recorded them) or a record that lacks an option takes
    the defaults, with one notice."""
    given = {name: (os.path.abspath(os.path.expanduser(value))
                    if name in RECORDED_PATHS and value is not None else value)
             for name, value in given.items()}
    record = read_run_record(model_dir) if resumed else None
    recorded = (record or {}).get('options', {})
    default = defaults(given['file_pattern'] if given['file_pattern'] is not None
                       else recorded.get('file_pattern'))
    options, changes, notices = {}, [], []
    for name in RECORDED_OPTIONS:
        if given[name] is None:
            options[name] = recorded.get(name, default[name])
            continue
        options[name] = given[name]
        if name in recorded and recorded[name] != given[name]:
            notices.append(f'--{name} {given[name]} replaces the recorded '
                           f'{_shown(recorded[name])} of {model_dir} (kept in {RUN_RECORD})')
            changes.append({'option': name, 'from': recorded[name], 'to': given[name]})
    if resumed and record is None:
        data = (f'--file_pattern {options["file_pattern"]}' if options['file_pattern']
                else 'the built-in demo set')
        notices.append(f'{model_dir} has no {RUN_RECORD} (it predates recorded data and '
                       f'options): training on {data} with the options given or their '
                       'defaults; they are recorded from now on')
    absent = [name for name in RECORDED_OPTIONS if name not in recorded]
    if record is not None and absent:
        notices.append(f'{os.path.join(model_dir, RUN_RECORD)} predates the options '
                       f'{", ".join(absent)}: using '
                       + ', '.join(f'{name}={options[name]!r}' for name in absent))
    stamp = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
    history = (record or {}).get('changes', []) + [dict(change, time=stamp) for change in changes]
    return options, {'options': options, 'changes': history}, notices


class RunLog:
    """Metric history (metrics.jsonl, kept across resumes), TensorBoard and loss curves."""

    def __init__(self, model_dir):
        self.path = os.path.join(model_dir, 'metrics.jsonl')
        self.records = []
        self.unreadable_lines = 0  # e.g. a line cut short by a kill
        if os.path.exists(self.path):
            with open(self.path) as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        record = None
                    if isinstance(record, dict) and 'n_images' in record:
                        self.records.append(record)
                    else:
                        self.unreadable_lines += 1
        self.history = {}
        for record in self.records:
            self._add(record)
        self.writer = tf.summary.create_file_writer(os.path.join(model_dir, 'log-dir'))

    def _add(self, record):
        n_images = record['n_images']
        for key, value in record.items():
            if key != 'n_images':
                self.history.setdefault(key, []).append((n_images, value))

    def rewind(self, n_images):
        """Forget the records after `n_images` (steps undone by a kill or a NaN restore) and
        unreadable lines; rewrites metrics.jsonl atomically, and only when something goes."""
        kept = [record for record in self.records if record['n_images'] <= n_images]
        if len(kept) == len(self.records) and not self.unreadable_lines:
            return
        write_atomic(self.path, ''.join(json.dumps(record) + '\n' for record in kept))
        self.records, self.unreadable_lines, self.history = kept, 0, {}
        for record in kept:
            self._add(record)

    def log(self, n_images, **values):
        record = {'n_images': int(n_images), **{k: float(v) for k, v in values.items()}}
        self.records.append(record)
        self._add(record)
        with open(self.path, 'a') as f:
            f.write(json.dumps(record) + '\n')
        with self.writer.as_default():
            for key, value in values.items():
                tf.summary.scalar(key, float(value), step=int(n_images))

    def image(self, name, image_uint8, n_images):
        with self.writer.as_default():
            tf.summary.image(name, image_uint8[None], step=int(n_images))


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

    models = {'generator': model_lib.build_generator(conf, 'generator'),
              'ema_generator': model_lib.build_generator(conf, 'ema_generator'),
              'discriminator': model_lib.build_discriminator(conf, 'discriminator')}
    wanted = {}
    for prefix_name, net in models.items():
        wanted.update(official_variable_map(net, prefix_name))
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


def _is_official_checkpoint(prefix):
    keys = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    return any(key.startswith('ema_generator/init/layer_with_weights-0') for key in keys)


def load_run_generator(model_dir, ckpt='best', ema=True):
    """(config, generator) from a run folder of ours or an official model folder.

    ckpt: 'best' (best FID; falls back to the latest when no FID was ever computed) or
    'latest'. ema: the EMA generator (what the paper evaluates) or the raw one."""
    if ckpt not in ('best', 'latest'):
        raise UserError(f'ckpt={ckpt!r} is not allowed: use best or latest')
    model_dir = os.path.abspath(os.path.expanduser(str(model_dir)))
    config_path = os.path.join(model_dir, 'config.json')
    if not os.path.isfile(config_path):
        raise UserError(f'{model_dir} is not a LadaGAN run folder: it has no config.json')
    folders = {'best': 'best-training-checkpoints', 'latest': 'training-checkpoints'}
    order = [ckpt] + [other for other in ('best', 'latest') if other != ckpt]
    prefix = None
    for which in order:
        prefix = tf.train.latest_checkpoint(os.path.join(model_dir, folders[which]))
        if prefix:
            if which != ckpt:
                print(f'No {ckpt} checkpoint in {model_dir}: using the {which} one')
            break
    if prefix is None:
        raise UserError(f'{model_dir} holds no checkpoint (looked in '
                        + ' and '.join(folders.values()) + ')')
    name = 'ema_generator' if ema else 'generator'
    if _is_official_checkpoint(prefix):
        loaded = load_official_checkpoint(prefix)
        return loaded['config'], loaded[name]
    try:
        with open(config_path) as f:
            conf, notices = config_lib.config_from_dict(json.load(f), config_path)
    except (OSError, ValueError) as err:
        raise UserError(f'{config_path} is not a valid LadaGAN config: {err}') from None
    for notice in notices:
        print(f'notice: {notice}')
    generator = model_lib.build_generator(conf, name=name)
    status = tf.train.Checkpoint(**{name: generator}).restore(prefix)
    status.expect_partial().assert_existing_objects_matched()
    return conf, generator


def checkpoint_scalar(prefix, name):
    """Scalar variable `name` ('n_images', 'fid', 'best_fid') of one of our checkpoints, or None."""
    reader = tf.train.load_checkpoint(prefix)
    key = name + _OFFICIAL_SUFFIX
    return reader.get_tensor(key).item() if reader.has_tensor(key) else None


def _error_summary(error, limit=200):
    """First line of an exception's message (TF errors carry long multi-line ones)."""
    text = str(getattr(error, 'message', None) or error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= limit else line[:limit] + '...'


def check_run_checkpoints(model_dir, conf):
    """Raise UserError unless the checkpoints a resume of `model_dir` reads (latest and best) are
    named by a readable state file, complete, uncorrupted and fit the models `conf` builds.
    Reads only.

    A kill cannot cause any of these: TF writes a checkpoint under `<prefix>_temp/`, renames it
    into place, and only then replaces the `checkpoint` state file (write, then rename), so the
    state always names a complete checkpoint (tests/test_robustness.py kills saves to check).
    This catches damage from outside: a truncated copy, a full disk, files of another run."""
    prefixes = []
    for folder_name in ('training-checkpoints', 'best-training-checkpoints'):
        folder = os.path.join(model_dir, folder_name)
        state_path = os.path.join(folder, 'checkpoint')
        if not os.path.exists(state_path):
            continue
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel('ERROR')  # TF logs unparsable state as two warnings; we say it in one
        try:
            state = tf.train.get_checkpoint_state(folder)
        except (tf.errors.OpError, ValueError):  # an empty state raises, garbage returns None
            state = None
        finally:
            logger.setLevel(level)
        if state is None:
            raise UserError(f'The checkpoint state file {state_path} is corrupt; replace it with '
                            'one line naming a checkpoint of its folder (model_checkpoint_path: '
                            '"ckpt-N") or use a new --model_dir.')
        prefix = state.model_checkpoint_path
        older = [path for path in state.all_model_checkpoint_paths
                 if path != prefix and os.path.exists(path + '.index')]
        fix = (f'point {state_path} at the previous checkpoint {os.path.basename(older[-1])!r}, '
               'restore the files from a backup, or use a new --model_dir' if older else
               'restore the files from a backup or use a new --model_dir')
        if not os.path.exists(prefix + '.index'):
            raise UserError(f'{state_path} names the checkpoint {prefix}, whose .index file is '
                            f'missing; {fix}.')
        try:
            reader = tf.train.load_checkpoint(prefix)
            for key in reader.get_variable_to_shape_map():
                reader.get_tensor(key)  # each read checks the tensor's length and checksum
        except Exception as err:  # noqa: BLE001 - damaged files raise many different types
            raise UserError(f'The checkpoint {prefix} is corrupt ({_error_summary(err)}); '
                            f'{fix}.') from None
        prefixes.append(prefix)
    for prefix in prefixes:
        misfit = _architecture_misfit(prefix, conf)
        if misfit:
            raise UserError(f'The checkpoint {prefix} does not fit the model of '
                            f'{os.path.join(model_dir, "config.json")} ({misfit}); '
                            'use a new --model_dir.')


def _architecture_misfit(prefix, conf):
    """Why the checkpoint's EMA generator and discriminator do not fit `conf`, or None."""
    nets = dict(ema_generator=model_lib.build_generator(conf, name='ema_generator'),
                discriminator=model_lib.build_discriminator(conf))
    logger = tf.get_logger()
    level = logger.level
    # A failed restore leaves a pending one whose deletion logs every unrestored variable.
    logger.setLevel('ERROR')
    try:
        tf.train.Checkpoint(**nets).read(prefix).expect_partial()
        return None
    except (ValueError, tf.errors.OpError) as err:
        return _error_summary(err)
    finally:
        del nets
        gc.collect()
        logger.setLevel(level)


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
                        f'({repo_id}) failed ({reason}); check the internet connection, or pass '
                        'an already-downloaded official folder (config.json + '
                        'best-training-checkpoints/) instead.') from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created_dest_dir and os.path.isdir(dest_dir) and not os.listdir(dest_dir):
            os.rmdir(dest_dir)
    return folder
