"""Differentiable augmentation (DiffAugment, Zhao et al. 2020, arXiv 2006.10738).

Same maths as the DiffAugment reference and the official LadaGAN TensorFlow
code, re-implemented so that it

* draws its random numbers from a `tf.random.Generator` when one is given
  (deterministic training, RNG state can be checkpointed), else from the
  global `tf.random` ops;
* compiles with XLA (`tf.function(jit_compile=True)`): translation is a batched
  gather plus a validity mask and cutout is a comparison mask, so no
  `scatter_nd` is needed in the forward pass;
* is differentiable w.r.t. the images;
* accepts float16 / bfloat16 images (mixed precision): the arithmetic runs in
  float32 and the result is cast back to the input dtype.

Images are channels-last `(B, H, W, C)` floats in [-1, 1].
"""

import tensorflow as tf

ALLOWED_POLICY_NAMES = ('color', 'translation', 'cutout')

# Fractions of the image side used by the reference implementation.
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(policy):
    """Split a policy string like 'color,translation,cutout' into a tuple of names.

    Empty string (or None) means no augmentation. Raises ValueError for an
    unknown name; this happens in Python, before any tracing.
    """
    if policy is None:
        return ()
    if not isinstance(policy, str):
        raise ValueError(
            f"DiffAugment policy must be a comma-separated string, got {policy!r}; "
            f"allowed names: {', '.join(ALLOWED_POLICY_NAMES)}.")
    names = tuple(name.strip() for name in policy.split(',') if name.strip())
    for name in names:
        if name not in ALLOWED_POLICY_NAMES:
            raise ValueError(
                f"Unknown DiffAugment policy name {name!r} in {policy!r}; "
                f"allowed names: {', '.join(ALLOWED_POLICY_NAMES)} (comma-separated, or '' for none).")
    return names


def _uniform(shape, minval, maxval, dtype, rng):
    """Uniform draws in [minval, maxval) from `rng` if given, else from the global tf.random ops."""
    if rng is not None:
        return rng.uniform(shape, minval=minval, maxval=maxval, dtype=dtype)
    return tf.random.uniform(shape, minval=minval, maxval=maxval, dtype=dtype)


def rand_brightness(x, rng=None):
    """Add one value from U[-0.5, 0.5) to every pixel of each image."""
    batch_size = tf.shape(x)[0]
    magnitude = _uniform([batch_size, 1, 1, 1], 0.0, 1.0, tf.float32, rng) - 0.5  # (B, 1, 1, 1)
    return x + magnitude


def rand_saturation(x, rng=None):
    """Scale each pixel's deviation from its channel mean by U[0, 2) per image."""
    batch_size = tf.shape(x)[0]
    magnitude = _uniform([batch_size, 1, 1, 1], 0.0, 1.0, tf.float32, rng) * 2.0  # (B, 1, 1, 1)
    channel_mean = tf.reduce_mean(x, axis=3, keepdims=True)  # (B, H, W, 1)
    return (x - channel_mean) * magnitude + channel_mean


def rand_contrast(x, rng=None):
    """Scale each image's deviation from its mean over H, W, C by U[0.5, 1.5)."""
    batch_size = tf.shape(x)[0]
    magnitude = _uniform([batch_size, 1, 1, 1], 0.0, 1.0, tf.float32, rng) + 0.5  # (B, 1, 1, 1)
    image_mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)  # (B, 1, 1, 1)
    return (x - image_mean) * magnitude + image_mean


def _static_spatial_size(x):
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        raise ValueError(
            f"DiffAugment needs a static image height and width, got shape {x.shape}; "
            "allowed: a (B, H, W, C) tensor with known H and W.")
    return int(height), int(width)


def _shift_axis(x, shift, axis):
    """Out[b, ..., i, ...] = x[b, ..., i + shift[b], ...] along `axis` (1 or 2), zero where out of range.

    x: (B, H, W, C) float32; shift: (B,) int32.
    A gather plus mask is used (not pad + clipped gather as in the reference)
    because it has the same result, compiles with XLA and its gradient is a
    segment sum that XLA supports.
    """
    axis_size = x.shape[axis]
    source_index = tf.range(axis_size, dtype=tf.int32)[tf.newaxis, :] + shift[:, tf.newaxis]  # (B, L)
    is_valid = tf.logical_and(source_index >= 0, source_index < axis_size)  # (B, L)
    source_index = tf.clip_by_value(source_index, 0, axis_size - 1)
    shifted = tf.gather(x, source_index, axis=axis, batch_dims=1)  # (B, H, W, C)
    if axis == 1:
        valid_mask = tf.cast(is_valid, x.dtype)[:, :, tf.newaxis, tf.newaxis]  # (B, H, 1, 1)
    else:
        valid_mask = tf.cast(is_valid, x.dtype)[:, tf.newaxis, :, tf.newaxis]  # (B, 1, W, 1)
    return shifted * valid_mask


def rand_translation(x, rng=None, ratio=TRANSLATION_RATIO):
    """Shift each image by integers drawn uniformly from [-s, s] along H and along W, s = int(side*ratio + 0.5).

    Content that leaves the frame is dropped and the exposed border is 0.
    """
    height, width = _static_spatial_size(x)
    batch_size = tf.shape(x)[0]
    max_shift_h = int(height * ratio + 0.5)
    max_shift_w = int(width * ratio + 0.5)
    shift_h = _uniform([batch_size], -max_shift_h, max_shift_h + 1, tf.int32, rng)  # (B,)
    shift_w = _uniform([batch_size], -max_shift_w, max_shift_w + 1, tf.int32, rng)  # (B,)
    x = _shift_axis(x, shift_h, axis=1)
    return _shift_axis(x, shift_w, axis=2)


def rand_cutout(x, rng=None, ratio=CUTOUT_RATIO):
    """Zero a square of side int(side*ratio + 0.5) per image, at a random centre, clipped to the image.

    The square's first row is offset - cut // 2 with offset uniform in
    [0, side + (1 - cut % 2)), as in the reference implementation.
    """
    height, width = _static_spatial_size(x)
    batch_size = tf.shape(x)[0]
    cut_h = int(height * ratio + 0.5)
    cut_w = int(width * ratio + 0.5)
    offset_h = _uniform([batch_size, 1], 0, height + (1 - cut_h % 2), tf.int32, rng)  # (B, 1)
    offset_w = _uniform([batch_size, 1], 0, width + (1 - cut_w % 2), tf.int32, rng)  # (B, 1)
    start_h = offset_h - cut_h // 2  # (B, 1)
    start_w = offset_w - cut_w // 2  # (B, 1)
    rows = tf.range(height, dtype=tf.int32)[tf.newaxis, :]  # (1, H)
    cols = tf.range(width, dtype=tf.int32)[tf.newaxis, :]  # (1, W)
    in_cut_rows = tf.logical_and(rows >= start_h, rows < start_h + cut_h)  # (B, H)
    in_cut_cols = tf.logical_and(cols >= start_w, cols < start_w + cut_w)  # (B, W)
    in_cut = tf.logical_and(in_cut_rows[:, :, tf.newaxis], in_cut_cols[:, tf.newaxis, :])  # (B, H, W)
    keep_mask = 1.0 - tf.cast(in_cut, x.dtype)  # (B, H, W)
    return x * keep_mask[:, :, :, tf.newaxis]


AUGMENT_FUNCTIONS = {
    'color': (rand_brightness, rand_saturation, rand_contrast),
    'translation': (rand_translation,),
    'cutout': (rand_cutout,),
}


def DiffAugment(x, policy='', rng=None):
    """Apply the DiffAugment `policy` to images x (B, H, W, C) in [-1, 1]; returns the same shape and dtype.

    policy: comma-separated names from 'color', 'translation', 'cutout'
    (applied in the given order); '' returns x unchanged.
    rng: optional `tf.random.Generator`; when None the global tf.random ops
    are used (these ignore seeds under XLA). With a generator the draws are
    reproducible for a given seed, separately in eager and in XLA mode (XLA
    converts the same random bits to floats differently; the generator state
    advances identically in both).
    """
    names = parse_policy(policy)
    if not names:
        return x
    x = tf.convert_to_tensor(x)
    input_dtype = x.dtype
    if not input_dtype.is_floating:
        raise ValueError(f"DiffAugment needs floating-point images, got dtype {input_dtype.name}; "
                         "allowed: float16, bfloat16, float32, float64.")
    # float32 arithmetic: exact statistics and gradients also for float16/bfloat16 inputs.
    x = tf.cast(x, tf.float32)
    for name in names:
        for augment in AUGMENT_FUNCTIONS[name]:
            x = augment(x, rng=rng)
    return tf.cast(x, input_dtype)
