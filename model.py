"""LadaGAN generator and discriminator (Keras 3).

    generator(z, training=False)        -> (images (B, S, S, 3) linear in [-1, 1],
                                            [attn_8 (B, H0, 64), attn_16 (B, H1, 256),
                                             attn_32 (B, H2, 1024)])
    discriminator(images, training=False) -> logits (B, 25) float32 (a 5x5 map per image)
    generator(z, labels=classes), discriminator(images, labels=classes)   # num_classes > 0

With num_classes (config `conditional`) the class enters G through added embeddings where z
enters (class_input 'projections': added to the first projection of z to tokens and to every
self-modulation's; 'noise': one added to z), and D through a projection (Miyato and Koyama
2018): each of its 25 logits gains the inner product of its 4x4 patch of features, the logit
layer's input, with the class's embedding. Every weight of the unconditional networks keeps its
shape; the embeddings start random (docs/conditional.md).

The constructor keywords are the official ones. Attribute names follow the official code so that
official checkpoints map one to one (see official.load_official_checkpoint).

Print a parameter and multiply-accumulate table:  python model.py --preset cifar10
"""
import argparse
import contextlib
import sys

import keras
import numpy as np
import tensorflow as tf
from keras import layers

import config as config_lib
from ladaformer import (ClassEmbedding, DiscriminatorBlock, GeneratorBlock, PositionEmbedding,
                        island_dtype)


def _conv(filters, kernel, initializer, name, use_bias=True, strides=1, padding='same',
          dtype=None):
    return layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=use_bias,
                         kernel_initializer=initializer, name=name, dtype=dtype)


def _batch_norm(name):
    # Keras defaults (momentum 0.99, epsilon 1e-3) as the official code; synchronized so that
    # a distributed global batch normalises like the single-device batch.
    return layers.BatchNormalization(synchronized=True, name=name)


def pixel_shuffle(tokens, side):
    """(B, side*side, C) tokens -> (B, 2*side, 2*side, C/4) image (depth_to_space, NHWC)."""
    grid = tf.reshape(tokens, [-1, side, side, tokens.shape[-1]])
    return tf.nn.depth_to_space(grid, 2)


# Nearest x2 upsampling followed by a 3x3 'same' conv, per output phase: which source pixel each
# kernel tap reads. Output row 2i reads source rows i-1 (tap 0) and i (taps 1, 2); output row
# 2i+1 reads rows i (taps 0, 1) and i+1 (tap 2). Same for columns.
_PHASE_TAPS = np.array([[[1, 0, 0], [0, 1, 1]],     # phase 0: source offsets -1, 0
                        [[1, 1, 0], [0, 0, 1]]],    # phase 1: source offsets 0, +1
                       np.float32)                 # (phase, 2 source taps, 3 kernel taps)


def upsample_conv3x3(x, kernel, bias):
    """conv3x3_same(nearest_upsample_x2(x)) + bias, computed on the low-resolution grid.

    x (B, H, W, C), kernel (3, 3, C, F), bias (F,) -> (B, 2H, 2W, F). After nearest upsampling
    a 3x3 window covers only 2x2 distinct source pixels, so each of the four output phases is a
    2x2 conv of x with summed kernel taps: 16 instead of 36 MACs per source pixel and channel
    pair, no upsampled tensor, and no resize op (whose gradient has no XLA kernel). Same values
    as the official UpSampling2D + Conv2D up to float rounding of the summed taps."""
    height, width, filters = x.shape[1], x.shape[2], kernel.shape[-1]
    taps = tf.constant(_PHASE_TAPS, kernel.dtype)
    # (2, 2, C, 4F): the four phases' 2x2 kernels side by side, phase (a, b) at 2a + b.
    phase_kernels = tf.einsum('air,bjs,rscf->ijcabf', taps, taps, kernel)
    phase_kernels = tf.reshape(phase_kernels, [2, 2, kernel.shape[2], 4 * filters])
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    y = tf.nn.conv2d(padded, phase_kernels, 1, 'VALID')              # (B, H+1, W+1, 4F)
    y = tf.nn.bias_add(y, tf.tile(bias, [4]))
    # Phase (a, b)'s window starts a rows and b columns later (offsets +1 instead of -1).
    phases = [y[:, a:a + height, b:b + width, (2 * a + b) * filters:(2 * a + b + 1) * filters]
              for a in (0, 1) for b in (0, 1)]
    return tf.nn.depth_to_space(tf.concat(phases, axis=-1), 2)      # (B, 2H, 2W, F)


@keras.saving.register_keras_serializable('ladagan')
class Generator(keras.Model):
    """z (B, noise_dim) -> 8x8 -> 16x16 -> 32x32 tokens -> patches or conv decoder -> RGB."""

    def __init__(self, img_size=32, model_dim=(1024, 256, 64), heads=(4, 4, 4),
                 mlp_dim=(512, 512, 512), initializer='orthogonal', dec_dim=False,
                 attention='lada', noise_dim=128, float32_islands=(), num_classes=0,
                 class_input='projections', **kwargs):
        super().__init__(**kwargs)
        config_lib.check_generator_shape(img_size, model_dim, heads, mlp_dim, dec_dim)
        self.img_size = img_size
        self.model_dim = list(model_dim)
        self.heads = list(heads)
        self.mlp_dim = list(mlp_dim)
        self.initializer = initializer
        self.dec_dim = list(dec_dim) if dec_dim else False
        self.attention = attention
        self.noise_dim = noise_dim
        self.float32_islands = list(float32_islands)
        self.num_classes, self.class_input = num_classes, class_input
        islands = self.float32_islands
        d0, d1, d2 = self.model_dim
        self.init = layers.Dense(64 * d0, use_bias=False, kernel_initializer=initializer,
                                 name='init')
        # The class: added to z, or to each projection of z (here and in every block's norms).
        block_classes = num_classes if class_input == 'projections' else 0
        if num_classes:
            self.class_embedding = ClassEmbedding(
                num_classes, 64 * d0 if block_classes else noise_dim, initializer=initializer,
                name='class_embedding')
        residual = island_dtype('residual', islands)
        self.pos_emb_8 = PositionEmbedding(64, d0, initializer, name='pos_emb_8', dtype=residual)
        self.block_8 = GeneratorBlock(d0, heads[0], mlp_dim[0], initializer, attention,
                                      float32_islands=islands, num_classes=block_classes,
                                      name='block_8')
        self.conv_8 = _conv(d1, 3, initializer, 'conv_8')
        self.pos_emb_16 = PositionEmbedding(256, d1, initializer, name='pos_emb_16',
                                            dtype=residual)
        self.block_16 = GeneratorBlock(d1, heads[1], mlp_dim[1], initializer, attention,
                                       float32_islands=islands, num_classes=block_classes,
                                       name='block_16')
        self.conv_16 = _conv(d2, 3, initializer, 'conv_16')
        self.pos_emb_32 = PositionEmbedding(1024, d2, initializer, name='pos_emb_32',
                                            dtype=residual)
        self.block_32 = GeneratorBlock(d2, heads[2], mlp_dim[2], initializer, attention,
                                       float32_islands=islands, num_classes=block_classes,
                                       name='block_32')
        # Conv decoder: per stage nearest x2 -> Conv3x3 -> BN -> LeakyReLU(0.2). Each layer is
        # its own attribute: tf.train.Checkpoint does not follow Keras-tracked Python lists.
        for i, filters in enumerate(self.dec_dim or []):
            setattr(self, f'dec_conv_{i}', _conv(filters, 3, initializer, f'dec_conv_{i}'))
            setattr(self, f'dec_bn_{i}', _batch_norm(f'dec_bn_{i}'))
        self.patch_size = 1 if self.dec_dim else img_size // 32
        # The 'rgb' island: bfloat16's spacing near 1 is 2^-7, one 8-bit level of a saved image.
        self.ch_conv = _conv(3, 3, initializer, 'ch_conv', dtype=island_dtype('rgb', islands))
        self.build((None, noise_dim))

    @property
    def _default_save_signature(self):
        # tf.saved_model.save traces every Keras model it saves with z alone; a conditional G
        # needs its labels too, and export.py's module gives the signature that takes them.
        return None if self.num_classes else super()._default_save_signature

    @property
    def dec_convs(self):
        return [getattr(self, f'dec_conv_{i}') for i in range(len(self.dec_dim or []))]

    @property
    def dec_norms(self):
        return [getattr(self, f'dec_bn_{i}') for i in range(len(self.dec_dim or []))]

    def build(self, input_shape):
        # Build every sublayer now (not on first call) so checkpoints can be loaded at once.
        # The output is computed in the model's compute dtype (float16 under mixed precision)
        # unless it is the 'rgb' island.
        super().build(input_shape)
        side, channels = 64, self.model_dim[2]
        for conv, filters in zip(self.dec_convs, self.dec_dim or []):
            conv.build((None, side, side, channels))  # its kernel is read, the layer not called
            side, channels = 2 * side, filters
        labels = tf.zeros([1], tf.int32) if self.num_classes else None
        self(tf.zeros([1, self.noise_dim]), training=False, labels=labels)

    def call(self, z, training=False, labels=None):
        z = tf.cast(z, self.compute_dtype)
        if self.num_classes and labels is None:
            raise ValueError(f'{self.name} is class-conditional: call it with labels')
        if self.num_classes and self.class_input == 'noise':
            z = z + self.class_embedding(labels)
        x, conditioning = self.init(z), [z]                             # (B, 64 * D0)
        if self.num_classes and self.class_input == 'projections':
            x = x + self.class_embedding(labels)
            conditioning = [z, labels]
        x = tf.reshape(x, [-1, 64, self.model_dim[0]])                  # (B, 64, D0)
        x, attn_8 = self.block_8([self.pos_emb_8(x)] + conditioning)
        x = self.conv_8(pixel_shuffle(x, 8))                            # (B, 16, 16, D1)
        x = tf.reshape(x, [-1, 256, self.model_dim[1]])
        x, attn_16 = self.block_16([self.pos_emb_16(x)] + conditioning)
        x = self.conv_16(pixel_shuffle(x, 16))                          # (B, 32, 32, D2)
        x = tf.reshape(x, [-1, 1024, self.model_dim[2]])
        x, attn_32 = self.block_32([self.pos_emb_32(x)] + conditioning)
        x = tf.reshape(x, [-1, 32, 32, self.model_dim[2]])
        for conv, norm in zip(self.dec_convs, self.dec_norms):
            # Conv2D layers hold the weights (official names); applied after a virtual upsample.
            kernel, bias = (tf.cast(weight, x.dtype) for weight in (conv.kernel, conv.bias))
            x = tf.nn.leaky_relu(norm(upsample_conv3x3(x, kernel, bias), training=training), 0.2)
        if self.patch_size > 1:
            x = tf.nn.depth_to_space(x, self.patch_size)
        # Linear output: images live in [-1, 1] and are clipped only when saved.
        images = tf.cast(self.ch_conv(x), tf.float32)
        return images, [attn_8, attn_16, attn_32]

    def get_config(self):
        return {'img_size': self.img_size, 'model_dim': self.model_dim, 'heads': self.heads,
                'mlp_dim': self.mlp_dim, 'initializer': self.initializer,
                'dec_dim': self.dec_dim, 'attention': self.attention,
                'noise_dim': self.noise_dim, 'float32_islands': self.float32_islands,
                'num_classes': self.num_classes, 'class_input': self.class_input,
                'name': self.name}


@keras.saving.register_keras_serializable('ladagan')
class DownBlock(layers.Layer):
    """Halves the resolution: mean of a two-conv main path and a pooled 1x1 direct path."""

    def __init__(self, filters, initializer='orthogonal', **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.initializer = initializer
        self.main_conv1 = _conv(filters, 3, initializer, 'main_conv1', use_bias=False, strides=2)
        self.main_bn1 = _batch_norm('main_bn1')
        self.main_conv2 = _conv(filters, 3, initializer, 'main_conv2', use_bias=False)
        self.main_bn2 = _batch_norm('main_bn2')
        self.direct_conv = _conv(filters, 1, initializer, 'direct_conv', use_bias=False)
        self.direct_bn = _batch_norm('direct_bn')

    def build(self, input_shape):
        batch, height, width, _ = input_shape
        half = (batch, height // 2, width // 2)
        self.main_conv1.build(input_shape)
        self.main_bn1.build((*half, self.filters))
        self.main_conv2.build((*half, self.filters))
        self.main_bn2.build((*half, self.filters))
        self.direct_conv.build((*half, input_shape[-1]))
        self.direct_bn.build((*half, self.filters))

    def call(self, x, training=False):
        main = tf.nn.leaky_relu(self.main_bn1(self.main_conv1(x), training=training), 0.2)
        main = tf.nn.leaky_relu(self.main_bn2(self.main_conv2(main), training=training), 0.2)
        direct = tf.nn.avg_pool2d(x, 2, 2, 'VALID')
        direct = tf.nn.leaky_relu(self.direct_bn(self.direct_conv(direct), training=training), 0.2)
        return (main + direct) / 2

    def get_config(self):
        return {**super().get_config(), 'filters': self.filters, 'initializer': self.initializer}


@keras.saving.register_keras_serializable('ladagan')
class Discriminator(keras.Model):
    """Images (B, S, S, 3) -> conv encoder to 16x16 -> one Lada block -> 5x5 logits (B, 25)."""

    def __init__(self, img_size=32, enc_dim=(128, 256), out_dim=(512, 1024), mlp_dim=512,
                 heads=4, initializer='orthogonal', attention='lada', float32_islands=(),
                 num_classes=0, **kwargs):
        super().__init__(**kwargs)
        config_lib.check_discriminator_shape(img_size, enc_dim, out_dim, heads)
        self.img_size = img_size
        self.enc_dim = list(enc_dim)
        self.out_dim = list(out_dim)
        self.mlp_dim = mlp_dim
        self.heads = heads
        self.initializer = initializer
        self.attention = attention
        self.float32_islands = list(float32_islands)
        self.num_classes = num_classes
        self.inp_conv = _conv(enc_dim[0], 3, initializer, 'inp_conv', use_bias=False)
        # One attribute per block: tf.train.Checkpoint does not follow Keras-tracked lists.
        for i, filters in enumerate(enc_dim[1:]):
            setattr(self, f'down_block_{i}', DownBlock(filters, initializer,
                                                       name=f'down_block_{i}'))
        self.pos_emb_8 = PositionEmbedding(256, enc_dim[-1], initializer, name='pos_emb_8',
                                           dtype=island_dtype('residual', float32_islands))
        self.block_8 = DiscriminatorBlock(enc_dim[-1], heads, mlp_dim, initializer, attention,
                                          float32_islands=float32_islands, name='block_8')
        self.conv_4 = _conv(out_dim[0], 3, initializer, 'conv_4')
        self.out_conv1 = _conv(out_dim[1], 1, initializer, 'out_conv1', use_bias=False)
        # The 'logits' island: the last 4x4 conv to one channel, 25 logits per image.
        self.out_conv2 = _conv(1, 4, initializer, 'out_conv2', use_bias=False, padding='valid',
                               dtype=island_dtype('logits', float32_islands))
        if num_classes:  # the projection: one 4x4 patch of out_dim[1] features per class
            # Rows of about unit norm, as out_conv2's orthogonal kernel: a class moves the
            # logits as much as the features do.
            self.class_projection = ClassEmbedding(
                num_classes, 16 * out_dim[1], stddev=(16 * out_dim[1]) ** -0.5,
                initializer=initializer, name='class_projection',
                dtype=island_dtype('logits', float32_islands))
        self.build((None, img_size, img_size, 3))

    @property
    def encoder(self):
        return [getattr(self, f'down_block_{i}') for i in range(len(self.enc_dim) - 1)]

    @property
    def blocks(self):
        """D's blocks counted from the image, as FreezeD (freeze_d) counts them: the input
        conv, each down block, the Transformer (position embedding and Lada block), the head."""
        head = [self.conv_4, self.out_conv1, self.out_conv2] + (
            [self.class_projection] if self.num_classes else [])
        return ([[self.inp_conv]] + [[down] for down in self.encoder]
                + [[self.pos_emb_8, self.block_8], head])

    def build(self, input_shape):
        super().build(input_shape)
        labels = tf.zeros([1], tf.int32) if self.num_classes else None
        self(tf.zeros([1, self.img_size, self.img_size, 3]), training=False, labels=labels)

    def call(self, images, training=False, labels=None):
        x = tf.nn.leaky_relu(self.inp_conv(tf.cast(images, self.compute_dtype)), 0.2)
        for down in self.encoder:
            x = down(x, training=training)                               # -> (B, 16, 16, E)
        x = tf.reshape(x, [-1, 256, self.enc_dim[-1]])
        x, _ = self.block_8(self.pos_emb_8(x))
        x = tf.nn.space_to_depth(tf.reshape(x, [-1, 16, 16, self.enc_dim[-1]]), 2)  # 8x8x4E
        x = tf.nn.leaky_relu(self.out_conv1(self.conv_4(x)), 0.2)       # (B, 8, 8, F)
        logits = tf.reshape(tf.cast(self.out_conv2(x), tf.float32), [-1, 25])  # (B, 5, 5, 1)
        if self.num_classes:
            if labels is None:
                raise ValueError(f'{self.name} is class-conditional: call it with labels')
            # Each logit's 4x4 patch of features, as the logit conv reads it, dotted with the
            # class's embedding (a per-class 4x4 kernel beside out_conv2's).
            patches = tf.image.extract_patches(x, [1, 4, 4, 1], [1, 1, 1, 1], [1, 1, 1, 1],
                                               'VALID')                 # (B, 5, 5, 16F)
            embedded = self.class_projection(labels)                     # (B, 16F)
            patches = tf.cast(patches, embedded.dtype)
            logits += tf.cast(tf.reshape(tf.einsum('bijk,bk->bij', patches, embedded),
                                         [-1, 25]), tf.float32)
        return logits

    def get_config(self):
        return {'img_size': self.img_size, 'enc_dim': self.enc_dim, 'out_dim': self.out_dim,
                'mlp_dim': self.mlp_dim, 'heads': self.heads, 'initializer': self.initializer,
                'attention': self.attention, 'float32_islands': self.float32_islands,
                'num_classes': self.num_classes, 'name': self.name}


@contextlib.contextmanager
def dtype_policy(name):
    """Build layers under a Keras dtype policy ('float32', 'mixed_float16', 'mixed_bfloat16')
    without leaving it set globally; sublayers take the policy that is global when created."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# initialize=False: for a network whose weights are assigned right after it is built (restored
# from a checkpoint, or copied from G), whose initial values would be thrown away. The layers
# that take the configured initializer start at zero instead of computing the orthogonal
# initialiser's QR decompositions, which are most of the time a build takes.

def float32_islands(conf):
    """The parts kept in float32 (config `float32_islands`); none to keep under float32."""
    return list(conf.float32_islands) if conf.precision != 'float32' else []


def build_generator(conf, name='generator', initialize=True):
    with dtype_policy(conf.precision):
        return Generator(img_size=conf.img_size, model_dim=conf.g_dim, heads=conf.g_heads,
                         mlp_dim=conf.g_mlp,
                         initializer=conf.g_initializer if initialize else 'zeros',
                         dec_dim=conf.dec_dim, attention=conf.attention,
                         noise_dim=conf.noise_dim, float32_islands=float32_islands(conf),
                         num_classes=conf.num_classes, class_input=conf.class_input, name=name)


def build_discriminator(conf, name='discriminator', initialize=True):
    with dtype_policy(conf.precision):
        return Discriminator(img_size=conf.img_size, enc_dim=conf.d_enc_dim,
                             out_dim=conf.d_out_dim, mlp_dim=conf.d_mlp, heads=conf.d_heads,
                             initializer=conf.d_initializer if initialize else 'zeros',
                             attention=conf.attention, float32_islands=float32_islands(conf),
                             num_classes=conf.num_classes, name=name)


def frozen_weight_paths(discriminator, freeze_d):
    """Paths of the trainable weights of D's first `freeze_d` blocks (FreezeD: left out of D's
    optimizer). Their batch-norm moving statistics are not among them: D runs in training mode,
    on batch statistics, and never reads those."""
    return {weight.path for block in discriminator.blocks[:freeze_d] for layer in block
            for weight in layer.trainable_weights}


def count_params(model):
    """Trainable parameters, as the official code reports them."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


# ---------------------------------------------------------------- multiply-accumulates
# Counted analytically: dense and conv layers, plus the attention's token mixing (Lada: the
# global query, N*D; dot-product: Q K^T and weights V, 2*N*N*D). Element-wise ops, norms and
# softmax are not counted, as is usual for the "FLOPs" figures GAN papers quote. executed=False
# counts the official formulation (the paper's figures); executed=True what this code runs: Lada
# without the per-token query and the decoder's upsampled convs on the small grid.

def _block_macs(tokens, dim, heads, mlp, noise_dim, attention, self_modulated, executed=False):
    macs = tokens * mlp * dim * 2
    if attention != 'lada':
        macs += 4 * tokens * dim * dim + 2 * tokens ** 2 * dim
    elif executed:  # x [Wk | Wv | Wq Wa], alpha-pooling of x, one (H, D) x (D, d) per image, out
        macs += 3 * tokens * dim * dim + 2 * tokens * dim * heads + dim * dim
    else:  # Q, K, V, out projections, q_attn(Q), alpha-weighted sum of Q
        macs += 4 * tokens * dim * dim + tokens * dim * heads + tokens * dim
    if self_modulated:  # two SMLNs, each h, gamma, beta Dense layers once per image
        macs += 2 * (noise_dim * dim + 2 * dim * dim)
    return macs


def generator_stage_macs(conf, executed=False):
    """[(stage name, MACs per image)] for the generator."""
    d0, d1, d2 = conf.g_dim
    mk = lambda n, s: _block_macs(n, conf.g_dim[s], conf.g_heads[s], conf.g_mlp[s],
                                  conf.noise_dim, conf.attention, True, executed)
    stages = [('8x8: Dense(z) + block', conf.noise_dim * 64 * d0 + mk(64, 0)),
              ('16x16: conv + block', 256 * 9 * (d0 // 4) * d1 + mk(256, 1)),
              ('32x32: conv + block', 1024 * 9 * (d1 // 4) * d2 + mk(1024, 2))]
    side, channels, out = 32, d2, 0
    for i, width in enumerate(conf.dec_dim or []):
        # upsample_conv3x3: one 2x2 conv to 4 phases on the padded small grid, or a 3x3 conv
        out += ((side + 1) ** 2 * 16 if executed else 4 * side * side * 9) * channels * width
        side *= 2
        channels = width
    if not conf.dec_dim:
        side, channels = conf.img_size, d2 // (conf.img_size // 32) ** 2
    out += side * side * 9 * channels * 3
    stages.append(('output: ' + ('decoder + ' if conf.dec_dim else 'patches + ') + 'RGB conv',
                   out))
    return stages


def discriminator_stage_macs(conf, executed=False):
    """[(stage name, MACs per image)] for the discriminator."""
    enc, size = conf.d_enc_dim, conf.img_size
    encoder = size * size * 9 * 3 * enc[0]
    for c_in, c_out in zip(enc[:-1], enc[1:]):
        size //= 2
        encoder += size * size * (9 * c_in * c_out + 9 * c_out * c_out + c_in * c_out)
    block = _block_macs(256, enc[-1], conf.d_heads, conf.d_mlp, 0, conf.attention, False,
                        executed)
    head = 64 * 9 * 4 * enc[-1] * conf.d_out_dim[0] + 64 * conf.d_out_dim[0] * conf.d_out_dim[1]
    head += 25 * 16 * conf.d_out_dim[1]
    return [('encoder to 16x16', encoder), ('16x16: block', block), ('output convs', head)]


def summary_table(conf):
    """A text table of parameters and MACs per stage for G and D."""
    g, d = build_generator(conf, initialize=False), build_discriminator(conf, initialize=False)
    lines = [f'{"model":<14}{"stage":<34}{"MACs":>14}']
    for label, stages, params in (('generator', generator_stage_macs(conf), count_params(g)),
                                  ('discriminator', discriminator_stage_macs(conf),
                                   count_params(d))):
        for stage, macs in stages:
            lines.append(f'{label:<14}{stage:<34}{macs / 1e6:>12.1f} M')
        total = sum(m for _, m in stages)
        lines.append(f'{label:<14}{"total":<34}{total / 1e9:>12.3f} G'
                     f'   params {params:,}')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', default=None, help='config preset (default: the defaults)')
    args = parser.parse_args(argv)
    try:
        conf = config_lib.make_config(args.preset)
    except config_lib.UserError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'LadaGAN {args.preset or "default config"} ({conf.img_size}x{conf.img_size}, '
          f'{conf.attention} attention)')
    print(summary_table(conf))
    return 0


if __name__ == '__main__':
    sys.exit(main())
