"""Run folders and checkpoints: what a run writes, how it resumes, what it holds.

A run folder holds config.json (the validated config), run.json (its data and schedule, see
resolve_options), training-checkpoints/ (latest), best-training-checkpoints/ (best FID, the
official layout), metrics.jsonl and log-dir/ (RunLog), samples/ and loss_curves.png (plots.py).

load_run_generator also reads the authors' model folders (official.py), and so does
init_source, which starts a new run from a pretrained one (train.py --init_from).
"""
import gc
import itertools
import json
import os
import time

import tensorflow as tf

import config as config_lib
import model as model_lib
import official
import openmoji
from config import UserError


RUN_RECORD = 'run.json'
LATEST_DIR, BEST_DIR = 'training-checkpoints', 'best-training-checkpoints'


# train.py options that a run folder remembers, so that `train.py --model_dir RUN` resumes with
# the same data and schedule; paths are stored absolute.
RECORDED_OPTIONS = ('file_pattern', 'eval_dir', 'total_iter', 'fid_inter', 'ckpt_inter',
                    'metrics_inter', 'max_ckpt_to_keep')


RECORDED_PATHS = ('file_pattern', 'eval_dir')


def write_atomic(path, text):
    """Write `text` to `path` whole or not at all: a kill mid-write leaves the old file."""
    temp_path = f'{path}.tmp'
    with open(temp_path, 'w', encoding='utf-8') as f:
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


def recorded_options(model_dir, remedy):
    """The options run.json records; UserError ending with `remedy` where it has none."""
    record = read_run_record(model_dir)
    if record is None:
        raise UserError(f'{model_dir} records no training data (it has no {RUN_RECORD}); '
                        f'{remedy}')
    return record['options']


def class_names(model_dir, conf):
    """A conditional run's class names as its run.json records them, else their indices."""
    record = read_run_record(model_dir) if model_dir else None
    names = (record or {}).get('classes')
    if names and len(names) == conf.num_classes:
        return [str(name) for name in names]
    return [str(index) for index in range(conf.num_classes)]


def training_images_of(options, img_size):
    """A run's training images: its --file_pattern, else the built-in demo set."""
    return options.get('file_pattern') or openmoji.openmoji_dataset(img_size)


def fid_reference_of(options, img_size):
    """A run's FID reference images: its --eval_dir, else its training images."""
    return options.get('eval_dir') or training_images_of(options, img_size)


def resolve_config(model_dir, preset, overrides, new_run_preset=None, from_source=False):
    """(config, resumed, notices): the config stored in `model_dir` when it holds a run, else
    `preset` (or `new_run_preset`) with the `overrides`; None for a new run `from_source`
    (--init_from) without a preset, whose config is the source's (starting_point), so that an
    override is checked against the source's model. Resuming, a preset or override that
    contradicts the stored config is a UserError: hyperparameters do not change mid-run."""
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise UserError(f'--model_dir {model_dir} is a file, not a folder: give a new folder for '
                        'a new run or an existing run folder to resume')
    stored_path = os.path.join(model_dir, 'config.json')
    if not os.path.exists(stored_path):
        if from_source and preset is None:
            return None, False, []
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
    asked.pop('num_classes', None)  # counted from the training set's labels, not a preset's
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
    line; None: not given), else from the run's run.json, else from `defaults(known)`, known being
    the options given or recorded.
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
    # Defaults may follow other options (ckpt_inter follows fid_inter): give them what is known.
    default = defaults({name: given[name] if given[name] is not None else recorded.get(name)
                        for name in RECORDED_OPTIONS})
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


def read_metrics(model_dir):
    """(records, unreadable lines) of model_dir/metrics.jsonl: one dict per logged step or
    evaluation, each with 'n_images'; a line cut short by a kill is counted, not read."""
    path = os.path.join(model_dir, 'metrics.jsonl')
    records, unreadable = [], 0
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if isinstance(record, dict) and 'n_images' in record:
                    records.append(record)
                else:
                    unreadable += 1
    return records, unreadable


def read_events(model_dir):
    """The guard's decisions recorded in model_dir/events.jsonl, oldest first."""
    path = os.path.join(model_dir, 'events.jsonl')
    if not os.path.exists(path):
        return []
    events = []
    with open(path) as f:
        for line in f:
            try:
                events.append(json.loads(line))
            except ValueError:  # a line cut short by a kill
                continue
    return events


class RunLog:
    """Metric history (metrics.jsonl, kept across resumes), TensorBoard and loss curves."""

    def __init__(self, model_dir):
        self.path = os.path.join(model_dir, 'metrics.jsonl')
        self.records, self.unreadable_lines = read_metrics(model_dir)
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

    def event(self, n_images, action, message):
        """A decision of the guard (guard.py) in events.jsonl, which a rewind keeps: what
        happened to the run stays true. A decision taken again on resume is not repeated."""
        record = {'n_images': int(n_images), 'action': action, 'message': message,
                  'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
        if any(all(old.get(key) == record[key] for key in ('n_images', 'action', 'message'))
               for old in read_events(os.path.dirname(self.path))):
            return
        with open(os.path.join(os.path.dirname(self.path), 'events.jsonl'), 'a') as f:
            f.write(json.dumps(record) + '\n')
        with self.writer.as_default():
            tf.summary.text('events', f'{action}: {message}', step=int(n_images))

    def image(self, name, image_uint8, n_images):
        with self.writer.as_default():
            tf.summary.image(name, image_uint8[None], step=int(n_images))


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
    if official.is_official_checkpoint(prefix):
        loaded = official.load_official_checkpoint(prefix)
        return loaded['config'], loaded[name]
    try:
        with open(config_path) as f:
            conf, notices = config_lib.config_from_dict(json.load(f), config_path)
    except (OSError, ValueError) as err:
        raise UserError(f'{config_path} is not a valid LadaGAN config: {err}') from None
    for notice in notices:
        print(f'notice: {notice}')
    # Every weight comes from the checkpoint: assert_existing_objects_matched fails otherwise.
    generator = model_lib.build_generator(conf, name=name, initialize=False)
    status = tf.train.Checkpoint(**{name: generator}).restore(prefix)
    status.expect_partial().assert_existing_objects_matched()
    return conf, generator


class RunCheckpoints:
    """A run's checkpoints and the policy on them: the latest ones (every ckpt_inter steps, and
    before each evaluation so that a kill during one loses no training), the best one (after an
    evaluation that improved FID), which one a run resumes from, and where a restore goes back
    to: the last good (finite, complete) latest checkpoint after a NaN, the best on a rollback.

    Every worker reads the chief's folder `model_dir`; the other workers of a multi-worker run
    take part in each (collective) save but write to `write_dir`, a scratch folder of their own.
    """

    def __init__(self, model_dir, write_dir):
        self.model_dir, self.write_dir = model_dir, write_dir
        self.resume_from, self.resume_is_best = self._to_resume()
        self.last_good = None  # the checkpoint a NaN restore goes back to
        self.latest = self.best = None  # CheckpointManagers, once track() has the objects

    def _to_resume(self):
        """(prefix, whether it is the best checkpoint) of the newest complete checkpoint of the
        run folder, or (None, False) for a new run."""
        latest, best = (tf.train.latest_checkpoint(os.path.join(self.model_dir, folder))
                        for folder in (LATEST_DIR, BEST_DIR))
        # The best checkpoint is written after the latest one of the same step, with that step's
        # FID: when it is as new or newer (a kill came between the two), resume from it.
        latest_images = (checkpoint_scalar(latest, 'n_images') or 0) if latest else 0
        if best and (not latest or (checkpoint_scalar(best, 'n_images') or 0) >= latest_images > 0):
            return best, True
        return latest, False

    def stored_names(self):
        """What the checkpoint to resume holds, by top-level name ('generator', 'data_order', ..)."""
        return ({name.split('/')[0] for name, _ in tf.train.list_variables(self.resume_from)}
                if self.resume_from else set())

    def track(self, ckpt, max_to_keep):
        """Save `ckpt` (a tf.train.Checkpoint) from now on, keeping `max_to_keep` latest ones."""
        self.latest = tf.train.CheckpointManager(ckpt, os.path.join(self.write_dir, LATEST_DIR),
                                                 max_to_keep)
        self.best = tf.train.CheckpointManager(ckpt, os.path.join(self.write_dir, BEST_DIR), 1)

    def save_latest(self, n_images):
        """Save a latest checkpoint of values the caller found finite: the last good one."""
        prefix = self.latest.save(n_images)
        self.last_good = os.path.join(self.model_dir, os.path.relpath(prefix, self.write_dir))

    def save_best(self, n_images):
        self.best.save(n_images)

    def restore_target(self, which):
        """The prefix a restore goes back to: 'best' (a rollback) or 'latest' (after a NaN)."""
        if which == 'best':
            return tf.train.latest_checkpoint(os.path.join(self.model_dir, BEST_DIR))
        return self.last_good


def checkpoint_scalar(prefix, name):
    """Scalar variable `name` ('n_images', 'fid', 'best_fid') of one of our checkpoints, or None."""
    reader = tf.train.load_checkpoint(prefix)
    key = name + '/.ATTRIBUTES/VARIABLE_VALUE'
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
    for folder_name in (LATEST_DIR, BEST_DIR):
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
    # Only the shapes matter here.
    nets = dict(ema_generator=model_lib.build_generator(conf, name='ema_generator',
                                                        initialize=False),
                discriminator=model_lib.build_discriminator(conf, initialize=False))
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


# ---------------------------------------------------------------- --init_from (fine-tuning)

OFFICIAL_SOURCE = 'official:'
NETWORKS = ('generator', 'ema_generator', 'discriminator')


def init_source(source):
    """What `train.py --init_from SOURCE` names, before any weight is read: dict(source= as
    recorded (a folder made absolute), prefix= the checkpoint the weights come from, conf= the
    source's Config, official=). SOURCE is `official:NAME` (downloaded as generate.py
    --pretrained NAME does, or found in the cache), a folder in the authors' layout, or a run
    folder of this project (its best checkpoint, else its latest)."""
    source = str(source)
    if source.startswith(OFFICIAL_SOURCE):
        folder = official.download_official_checkpoint(source[len(OFFICIAL_SOURCE):])
    else:
        source = folder = os.path.abspath(os.path.expanduser(source))
    config_path = os.path.join(folder, 'config.json')
    if not os.path.isfile(config_path):
        raise UserError(f'--init_from {source} is not a run folder or a folder in the authors\' '
                        'layout (it has no config.json); give one, or official:NAME with NAME '
                        'one of ' + ', '.join(official.OFFICIAL_CHECKPOINT_STEPS))
    prefix = next(filter(None, (tf.train.latest_checkpoint(os.path.join(folder, name))
                                for name in (BEST_DIR, LATEST_DIR))), None)
    if prefix is None:
        raise UserError(f'--init_from {source} holds no checkpoint (looked in {BEST_DIR}/ and '
                        f'{LATEST_DIR}/)')
    is_official = official.is_official_checkpoint(prefix)
    try:
        with open(config_path) as f:
            values = json.load(f)
        conf = (config_lib.from_official(values) if is_official else
                config_lib.config_from_dict(values, config_path)[0])
    except (OSError, ValueError) as err:  # UserError is a ValueError
        raise UserError(f'--init_from {source}: {config_path} is not a valid config ({err})') \
            from None
    return dict(source=source, prefix=prefix, conf=conf, official=is_official)


def is_class_weight(path):
    """Whether a weight is one of a conditional network's class embeddings (model.py): what a
    conditional run started from an unconditional one starts fresh (at zero)."""
    return '/class_' in path


def init_weights(info, conf, asked):
    """{network name: {weight path: value}}, from the source `info` (init_source), for the
    networks `conf` builds. UserError naming the first weight whose name or shape differs: the
    source does not fit the model `asked` for (e.g. '--preset cifar10'). A conditional model
    takes an unconditional source whole: only its class embeddings are not in it."""
    if info['official']:
        loaded = official.load_official_checkpoint(info['prefix'])
        nets = {name: loaded[name] for name in NETWORKS}
    else:
        nets = networks(info['conf'])
        try:  # every weight of the three networks must be in the checkpoint
            tf.train.Checkpoint(**nets).restore(info['prefix']).expect_partial() \
                .assert_existing_objects_matched()
        except AssertionError as err:
            raise UserError(f'--init_from {info["source"]}: the checkpoint {info["prefix"]} does '
                            f'not hold all of G, its EMA and D ({_error_summary(err)})') from None
        except (tf.errors.OpError, ValueError, IndexError) as err:  # cut short or overwritten
            raise UserError(f'--init_from {info["source"]}: the checkpoint {info["prefix"]} '
                            f'cannot be read ({_error_summary(err)}); give another run, or '
                            'copy this one again') from None
    ours = networks(conf)
    for name in NETWORKS:
        own = [(w.path, tuple(w.shape)) for w in ours[name].weights
               if not (is_class_weight(w.path) and not info['conf'].num_classes)]
        pairs = itertools.zip_longest(own, ((w.path, tuple(w.shape)) for w in nets[name].weights),
                                      fillvalue=(None, None))
        for (path, shape), (source_path, source_shape) in pairs:
            if (path, shape) == (source_path, source_shape):
                continue
            where = (f'{path} has shape {source_shape} in the source and {shape} here'
                     if path == source_path else f'{path} {shape} is not in the source'
                     if path else f'{source_path} {source_shape} is in the source but not here')
            raise UserError(f'--init_from {info["source"]} does not fit the model of {asked}: '
                            f'its {name} weight {where} (leave out --preset and the '
                            'architecture --set keys to take the source\'s)')
    return {name: {weight.path: weight.numpy() for weight in nets[name].weights}
            for name in NETWORKS}


def assign_weights(network, values, rename=None):
    """Give `network` the weights `values` ({path: value}, init_weights' form; `rename`: (old,
    new) prefixes of the paths, to copy one network's into another's) where it has them."""
    for weight in network.weights:
        path = weight.path if rename is None else weight.path.replace(rename[1], rename[0], 1)
        if path in values:
            weight.assign(values[path])


def networks(conf):
    """G, the EMA generator and D of `conf`, without initial values (assigned right after)."""
    return dict(generator=model_lib.build_generator(conf, 'generator', initialize=False),
                ema_generator=model_lib.build_generator(conf, 'ema_generator', initialize=False),
                discriminator=model_lib.build_discriminator(conf, initialize=False))


def starting_point(model_dir, init_from, preset, conf, overrides, resumed):
    """(source, conf, recorded) of `train.py --init_from`: the pretrained run whose weights the
    run starts from (init_source; None: random weights, or a resume from the run's own
    checkpoints), the config (a new run from a source without --preset takes the source's, with
    the --set `overrides`) and what run.json records of the source.

    A resumed run starts from its recorded source again only when it has no checkpoint yet (it
    stopped before its first save); with one, it continues from its own weights whatever
    `init_from` says."""
    if not resumed:
        if not init_from:
            return None, conf, None
        source = init_source(init_from)
        if preset is None:
            conf = source['conf'].replace(**overrides)
        return source, conf, {'source': source['source'], 'checkpoint': source['prefix']}
    recorded = (read_run_record(model_dir) or {}).get('init_from')
    if init_from and (recorded or {}).get('source') not in (init_from, os.path.abspath(
            os.path.expanduser(init_from))):
        started = recorded['source'] if recorded else 'random weights'
        print(f'notice: --init_from {init_from} is ignored: {model_dir} is a run already '
              f'(started from {started}); start a new --model_dir to fine-tune from another source')
    if recorded and not RunCheckpoints(model_dir, model_dir).resume_from:
        return init_source(recorded['source']), conf, recorded
    return None, conf, recorded
