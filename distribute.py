"""tf.distribute for training: choosing the strategy, who writes the run folder, sharded input.

`batch_size` is always the global batch: each replica takes its share, and with several workers
each reads its own shard of the files. Worker 0 (or the chief) writes the run folder; the others
join each (collective) checkpoint save in a scratch folder of their own.
"""
import os

import numpy as np
import tensorflow as tf

import batches
from config import UserError


STRATEGIES = ('auto', 'default', 'mirrored', 'multiworker', 'tpu')
# Printed when a TPU strategy starts: what no test here could run (there is no TPU).
TPU_UNTESTED = ('notice: --strategy tpu is untested (no TPU was available to this project\'s '
                'tests); an image folder is read with Python per chunk, which a TPU VM runs but '
                'a remote TPU host cannot: there, prepare the set first (prepare.py), whose '
                'pixels are read by TensorFlow ops alone')


# Seconds a collective of the training step waits for the other workers before the run fails
# (train.py --collective_timeout); 0, the default, waits for ever, as TensorFlow does. Off by
# default: TensorFlow holds a thread for the whole timeout for each timed collective (its
# CommunicationOptions docs), timeout x collectives per second threads (a step all-reduces each
# logged value, each optimizer's gradients, each overflow count): thousands at 600 s on GPUs.
# Inside a step workers wait for each other as long as one traces or opens its data (its first
# pass over an image folder) more slowly, or writes its checkpoint or the chief its pictures
# more slowly. The waits for the chief's evaluation (reference statistics, FID) happen at the
# host's agreements (_sum_over_workers), which are never timed.
COLLECTIVE_TIMEOUT = 0


def make_strategy(name, collective_timeout=COLLECTIVE_TIMEOUT):
    """A tf.distribute strategy. 'auto': multi-worker when TF_CONFIG is set, a TPU when
    TPU_NAME or COLAB_TPU_ADDR is, all GPUs when there are several, else the default one.
    A multi-worker strategy's collectives raise tf.errors.DeadlineExceededError after
    `collective_timeout` seconds (0: never): workers that took different paths through a step
    (each waiting in another collective) fail instead of waiting for each other for good."""
    if name == 'auto':
        if os.environ.get('TF_CONFIG'):
            name = 'multiworker'
        elif os.environ.get('TPU_NAME') or os.environ.get('COLAB_TPU_ADDR'):
            name = 'tpu'
        elif len(tf.config.list_logical_devices('GPU')) > 1:
            name = 'mirrored'
        else:
            name = 'default'
    if name == 'default':
        return tf.distribute.get_strategy()
    if name == 'mirrored':
        # Every GPU; without one, every logical CPU device: MirroredStrategy() alone takes one
        # CPU, and a CPU split into logical devices (tests/scripts/two_devices.py) is how
        # several replicas run without GPUs.
        gpus = tf.config.list_logical_devices('GPU')
        return tf.distribute.MirroredStrategy(
            None if gpus else [device.name for device in tf.config.list_logical_devices('CPU')])
    if name == 'multiworker':
        if not os.environ.get('TF_CONFIG'):
            raise UserError('--strategy multiworker needs TF_CONFIG describing the '
                                  'cluster and this worker (see the README)')
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=collective_timeout))
    if name == 'tpu':
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu=os.environ.get('TPU_NAME', ''))
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as err:
            raise UserError(f'--strategy tpu found no TPU ({err})') from None
        print(TPU_UNTESTED)
        return tf.distribute.TPUStrategy(resolver)
    raise UserError(f'--strategy {name!r} is not allowed: use one of '
                          + ', '.join(STRATEGIES))


def is_chief(strategy):
    """Whether this process writes the run folder (the chief, or worker 0 without one)."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = 'chief' in resolver.cluster_spec().as_dict()
    return resolver.task_type == 'chief' or (not has_chief and resolver.task_type == 'worker'
                                             and resolver.task_id == 0)


def make_distributed_dataset(strategy, file_pattern, conf, cache=True):
    """A function start_batch -> the run's uint8 batches from its step `start_batch` on, the
    global batch split over replicas; with several workers each reads its own shard. The images
    are opened once (batches.TrainingImages): a restore that rewinds the run asks again with its
    step, for nothing more. cache=False decodes image files into memory instead of the cache."""
    if strategy.num_replicas_in_sync == 1:
        images = batches.TrainingImages(file_pattern, conf.img_size, conf.batch_size,
                                        center_crop=conf.center_crop, seed=conf.seed,
                                        mirror=conf.mirror, cache=cache,
                                        labels=bool(conf.num_classes))
        return images.dataset
    if conf.batch_size % strategy.num_replicas_in_sync:
        raise UserError(f'batch_size={conf.batch_size} must be divisible by the '
                              f'{strategy.num_replicas_in_sync} replicas')
    shards = {}  # input pipeline -> its TrainingImages, opened on the first call

    def make(start_batch):
        def dataset_fn(context):
            # A pipeline feeding several replicas hands out one per-replica batch each per step.
            per_step = context.num_replicas_in_sync // context.num_input_pipelines
            if context.input_pipeline_id not in shards:
                shards[context.input_pipeline_id] = batches.TrainingImages(
                    file_pattern, conf.img_size,
                    context.get_per_replica_batch_size(conf.batch_size),
                    center_crop=conf.center_crop, seed=conf.seed, mirror=conf.mirror,
                    num_shards=context.num_input_pipelines,
                    shard_index=context.input_pipeline_id, cache=cache,
                    labels=bool(conf.num_classes), replicas=per_step)
            return shards[context.input_pipeline_id].dataset(start_batch * per_step)
        return strategy.distribute_datasets_from_function(dataset_fn)
    return make


def one_worker(strategy):
    """Whether `strategy` runs in this process alone: no cluster, or one whose replicas are
    all this process's devices (a TPUStrategy always has a cluster resolver, and its one client
    process drives every core)."""
    if getattr(strategy, 'cluster_resolver', None) is None:
        return True
    try:
        return strategy.num_replicas_in_sync == len(strategy.extended.worker_devices)
    except (AttributeError, NotImplementedError, RuntimeError):  # no devices to count
        return False


# How often this process has read the result of a collective on the host (_sum_over_workers):
# each read waits for every worker and for what the devices had queued before it.
host_reads = 0


def _sum_over_workers(strategy, values):
    """The sum over the workers of a multi-worker run of each worker's float `values` (a number
    or an array; a collective: every worker calls it at the same point), as float64 numbers.
    Exact: one replica of each worker sends its values and the others send zeros, since x + 0 is
    x where six shares of x / 6 need not sum to x (float32 lost 349,515 of the first 2^20 steps
    that way with six devices per worker). float64 holds every step below 2^53. One traced
    function per strategy, as the stop check runs every few steps."""
    all_sum = _all_sums.get(id(strategy))
    if all_sum is None:
        # No timeout: here the other workers wait for the chief's evaluation, however long.
        untimed = tf.distribute.experimental.CommunicationOptions(timeout_seconds=0)

        @tf.function
        def all_sum(per_replica):
            return strategy.extended.reduce_to(tf.distribute.ReduceOp.SUM, per_replica,
                                               '/device:CPU:0', options=untimed)
        _all_sums[id(strategy)] = all_sum
    values = np.asarray(values, np.float64)
    sent = []  # the replicas of this worker asked so far: the first one sends `values`

    def share(context):
        sent.append(context.replica_id_in_sync_group)
        return tf.constant(values if len(sent) == 1 else np.zeros_like(values))
    result = all_sum(strategy.experimental_distribute_values_from_function(share)).numpy()
    global host_reads
    host_reads += 1
    return float(result) if result.ndim == 0 else result


_all_sums = {}  # id(strategy) -> its traced all-reduce


def broadcast_from_chief(strategy, value, chief):
    """The chief's float `value`, on every worker of a multi-worker run (else unchanged)."""
    if one_worker(strategy):
        return value
    return _sum_over_workers(strategy, value if chief else 0.0)


def any_worker(strategy, flag):
    """Whether bool `flag` is true on any worker of a multi-worker run (else `flag`)."""
    if one_worker(strategy):
        return flag
    return _sum_over_workers(strategy, float(flag)) > 0


def check_workers_resume_together(strategy, chief, step, model_dir):
    """Raise UserError on every worker of a multi-worker run when one resumes at another step
    than the chief: its --model_dir is not the chief's folder (a disk of its own)."""
    if one_worker(strategy):
        return
    chief_step = broadcast_from_chief(strategy, float(step), chief)
    differs = chief_step != step
    if any_worker(strategy, differs):
        found = (f'this worker finds step {step} in {model_dir}, the chief step '
                 f'{int(chief_step)}' if differs else 'another worker does not find the '
                 f'chief\'s step {int(chief_step)} in its --model_dir')
        raise UserError(f'the workers would resume from different checkpoints ({found}): '
                        '--model_dir must be one folder on storage that every worker reads')
