"""Ladaformer: the linear additive-attention Transformer block of LadaGAN.

Shapes: B batch, N tokens, D model width, H heads, d = D / H head width.

Lada attention (one global query per head, cost linear in N):
    alpha = softmax_N(Dense_H(Q)^T / sqrt(d))      # (B, H, N), the attention map
    g     = sum_i alpha_i * Q_i                    # (B, H, d), per head
    R_i   = g * K_i * V_i                          # (B, N, H, d), element-wise
    out   = Dense_D(merge_heads(R))
The weight names (wq, wk, wv, q_attn, to_out, norm1, mlp, ...) are the official ones, so that
`official.load_official_checkpoint` can map the authors' variables one to one.

Under a mixed precision policy the layers take `float32_islands`, the parts that still compute in
float32 (config.FLOAT32_ISLANDS, docs/precision.md): 'attention' the Lada scores,
softmax and attention-weighted sum; 'norms' the LayerNorms and the self-modulation; 'residual'
the residual stream and position embeddings. Under float32 they change nothing.

A class-conditional generator (config `conditional`) adds a learned class embedding to the
output of each self-modulation's first projection of z: h = relu(Dense_D(z) + e_h[class]).
Every weight of the unconditional block keeps its shape; the embeddings are added weights.
"""
import math

import keras
import tensorflow as tf
from keras import layers


def _dense(units, initializer, name, use_bias=True, activation=None, dtype=None):
    return layers.Dense(units, use_bias=use_bias, activation=activation,
                        kernel_initializer=initializer, name=name, dtype=dtype)


def _mixed(layer):
    """Whether `layer` computes in a reduced precision (float16 or bfloat16)."""
    return layer.compute_dtype != 'float32'


class _ProjectedAttention(layers.Layer):
    """Shared parts of both attention kinds: Q, K, V and output Dense(D) projections."""

    def __init__(self, model_dim, n_heads, initializer='orthogonal', **kwargs):
        super().__init__(**kwargs)
        if model_dim % n_heads:
            raise ValueError(f'model_dim={model_dim} is not divisible by n_heads={n_heads}')
        self.model_dim = model_dim
        self.n_heads = n_heads
        self.initializer = initializer
        self.head_dim = model_dim // n_heads
        self.wq = _dense(model_dim, initializer, 'wq')
        self.wk = _dense(model_dim, initializer, 'wk')
        self.wv = _dense(model_dim, initializer, 'wv')
        self.to_out = _dense(model_dim, initializer, 'to_out')

    def build(self, input_shape):
        for dense in (self.wq, self.wk, self.wv, self.to_out):
            dense.build(input_shape)

    def get_config(self):
        return {**super().get_config(), 'model_dim': self.model_dim, 'n_heads': self.n_heads,
                'initializer': self.initializer}


@keras.saving.register_keras_serializable('ladagan')
class LadaAttention(_ProjectedAttention):
    """Linear additive attention; returns (output (B, N, D), attention map (B, H, N)).

    float32_scores (the 'attention' island): under mixed precision the scores, softmax and
    global query are computed in float32 from the float32 input; only K, V, their product with
    the global query and the output projection run in the compute dtype."""

    def __init__(self, model_dim, n_heads, initializer='orthogonal', float32_scores=False,
                 **kwargs):
        # The input is cast here, not by Keras: the scores read the float32 tokens.
        kwargs.setdefault('autocast', not float32_scores)
        super().__init__(model_dim, n_heads, initializer, **kwargs)
        self.float32_scores = float32_scores
        # One logit per head from the full query (all D channels), not from per-head slices.
        self.q_attn = _dense(n_heads, initializer, 'q_attn')

    def build(self, input_shape):
        super().build(input_shape)
        self.q_attn.build(input_shape)

    def call(self, x):
        # Computed in an equivalent order that skips the per-token query (the official code
        # forms Q = x Wq + bq for every token). Q only enters through
        #   logits = Q Wa + ba = x (Wq Wa) + (bq Wa + ba)            and
        #   g_h = sum_i alpha_ih Q_ih = (sum_i alpha_ih x_i) Wq_h + bq_h   (sum_i alpha_ih = 1),
        # so one fused x [Wk | Wv | Wq Wa] matmul and a per-image (H, D) x (D, d) product replace
        # four token-wise projections: 3D^2 + DH instead of 4D^2 + DH MACs per token, same math.
        n_tokens = tf.shape(x)[1]
        dim, n_heads, head_dim = self.model_dim, self.n_heads, self.head_dim
        compute = self.compute_dtype
        split_scores = self.float32_scores and _mixed(self)
        score_x = tf.cast(x, tf.float32 if split_scores else compute)   # (B, N, D)
        x = tf.cast(x, compute)
        # The Dense layers serve as weight holders here; cast for mixed precision as they would.
        w_k, b_k, w_v, b_v = (tf.cast(weight, compute) for dense in (self.wk, self.wv)
                              for weight in (dense.kernel, dense.bias))
        w_q, b_q, w_a, b_a = (tf.cast(weight, score_x.dtype) for dense in (self.wq, self.q_attn)
                              for weight in (dense.kernel, dense.bias))
        score_kernel = tf.matmul(w_q, w_a)                                # (D, H)
        score_bias = tf.linalg.matvec(w_a, b_q, transpose_a=True) + b_a   # (H,)
        # A 2-D matmul over all tokens: a (B, N, D) x (D, 2D + H) batch matmul would take the
        # kernel gradient as B products of (D, 2D + H) and then sum them.
        if split_scores:  # K, V in the compute dtype; the H score columns apart, in float32
            fused = (tf.matmul(tf.reshape(x, [-1, dim]), tf.concat([w_k, w_v], axis=1))
                     + tf.concat([b_k, b_v], axis=0))                    # (B*N, 2D)
            logits = tf.matmul(tf.reshape(score_x, [-1, dim]), score_kernel) + score_bias
            k, v = tf.split(tf.reshape(fused, [-1, n_tokens, 2 * dim]), 2, axis=-1)
            logits = tf.reshape(logits, [-1, n_tokens, n_heads])
        else:
            fused_kernel = tf.concat([w_k, w_v, score_kernel], axis=1)   # (D, 2D + H)
            fused_bias = tf.concat([b_k, b_v, score_bias], axis=0)       # (2D + H,)
            fused = tf.matmul(tf.reshape(x, [-1, dim]), fused_kernel) + fused_bias
            fused = tf.reshape(fused, [-1, n_tokens, 2 * dim + n_heads])  # (B, N, 2D + H)
            k, v, logits = tf.split(fused, [dim, dim, n_heads], axis=-1)
        logits = logits / math.sqrt(head_dim)                           # (B, N, H)
        # Softmax over tokens in float32: with mixed precision, 1024 tokens underflow in fp16.
        alpha = tf.nn.softmax(tf.cast(logits, tf.float32), axis=1)      # (B, N, H)
        pooled = tf.einsum('bnh,bnc->bhc', tf.cast(alpha, score_x.dtype), score_x)  # (B, H, D)
        global_q = (tf.einsum('bhc,chd->bhd', pooled, tf.reshape(w_q, [dim, n_heads, head_dim]))
                    + tf.reshape(b_q, [n_heads, head_dim]))             # (B, H, d)
        heads = [-1, n_tokens, n_heads, head_dim]
        mixed = (tf.cast(global_q, compute)[:, None] * tf.reshape(k, heads)
                 * tf.reshape(v, heads))                                # (B, N, H, d)
        out = self.to_out(tf.reshape(mixed, [-1, n_tokens, dim]))
        return out, tf.transpose(alpha, [0, 2, 1])                      # (B, H, N)

    def get_config(self):
        return {**super().get_config(), 'float32_scores': self.float32_scores}


@keras.saving.register_keras_serializable('ladagan')
class DotAttention(_ProjectedAttention):
    """Standard multi-head softmax dot-product attention (quadratic in N), for comparison.

    Returns (output (B, N, D), map (B, H, N)): the map is the attention each token receives,
    averaged over the queries, so it plots like Lada's map.
    """

    def call(self, x):
        n_tokens = tf.shape(x)[1]
        heads = [-1, n_tokens, self.n_heads, self.head_dim]
        q, k, v = (tf.reshape(dense(x), heads) for dense in (self.wq, self.wk, self.wv))
        logits = tf.einsum('bnhd,bmhd->bhnm', q, k) / math.sqrt(self.head_dim)  # (B, H, N, N)
        weights = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        mixed = tf.einsum('bhnm,bmhd->bnhd', tf.cast(weights, v.dtype), v)      # (B, N, H, d)
        out = self.to_out(tf.reshape(mixed, [-1, n_tokens, self.model_dim]))
        return out, tf.reduce_mean(weights, axis=2)                              # (B, H, N)


ATTENTION_LAYERS = {'lada': LadaAttention, 'dot': DotAttention}


def make_attention(kind, model_dim, n_heads, initializer, name='attn', float32_islands=()):
    if kind not in ATTENTION_LAYERS:
        raise ValueError(f'attention={kind!r} is not supported: use one of '
                         + ', '.join(ATTENTION_LAYERS))
    if kind == 'lada':
        return LadaAttention(model_dim, n_heads, initializer, name=name,
                             float32_scores='attention' in float32_islands)
    # Dot-product attention keeps only its softmax in float32: its scores are its bulk.
    return ATTENTION_LAYERS[kind](model_dim, n_heads, initializer, name=name)


def island_dtype(island, float32_islands):
    """The dtype policy of the layer that is `island`: float32 when it is one of the
    float32_islands, else None (the global policy, which the model is built under)."""
    return 'float32' if island in float32_islands else None


@keras.saving.register_keras_serializable('ladagan')
class ClassEmbedding(layers.Layer):
    """A learned (num_classes, dim) table; call(labels (B,) int) -> (B, dim) rows in the compute
    dtype. Its rows start normal with standard deviation `stddev` (or at zero when the network
    is built to be restored, initializer 'zeros'): a class is a signal from the first step (zero
    rows, measured, left a tiny conditional GAN at chance after 150 steps, Adam moving them by
    about the learning rate per step)."""

    def __init__(self, num_classes, dim, stddev=1.0, initializer='random', **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.dim, self.stddev = num_classes, dim, stddev
        self.initializer = initializer

    def build(self, input_shape=None):
        initializer = ('zeros' if self.initializer == 'zeros' else
                       keras.initializers.RandomNormal(stddev=self.stddev))
        self.embeddings = self.add_weight(shape=(self.num_classes, self.dim), name='embeddings',
                                          initializer=initializer)

    def call(self, labels):
        return tf.cast(tf.gather(self.embeddings, labels), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), 'num_classes': self.num_classes, 'dim': self.dim,
                'stddev': self.stddev, 'initializer': self.initializer}


@keras.saving.register_keras_serializable('ladagan')
class SMLayerNorm(layers.Layer):
    """Self-modulated LayerNorm: LN(x) * gamma(z) + beta(z), gamma and beta from z (no 1 + gamma).

    Inputs x (B, N, D) and the raw noise z (B, noise_dim), and with num_classes the labels
    (B,): h = relu(Dense_D(z) [+ class embedding]). Its sublayers take its dtype policy: built
    with dtype='float32' (the 'norms' island) all of it computes in float32 and so does its
    output.
    """

    def __init__(self, epsilon=1e-6, initializer='orthogonal', num_classes=0, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.initializer = initializer
        self.num_classes = num_classes
        self.ln = layers.LayerNormalization(epsilon=epsilon, center=False, scale=False, name='ln',
                                            dtype=self.dtype_policy)

    def build(self, input_shape):
        x_shape, z_shape = input_shape[:2]
        dim = x_shape[-1]
        self.h = _dense(dim, self.initializer, 'h', dtype=self.dtype_policy)
        self.gamma = _dense(dim, self.initializer, 'gamma', dtype=self.dtype_policy)
        self.beta = _dense(dim, self.initializer, 'beta', dtype=self.dtype_policy)
        self.h.build(z_shape)
        self.gamma.build((z_shape[0], dim))
        self.beta.build((z_shape[0], dim))
        self.ln.build(x_shape)
        if self.num_classes:
            self.class_h = ClassEmbedding(self.num_classes, dim, initializer=self.initializer,
                                          name='class_h', dtype=self.dtype_policy)
            self.class_h.build()

    def call(self, inputs):
        x, z = inputs[:2]
        h = self.h(z)                                               # (B, D)
        if self.num_classes:
            h = h + self.class_h(inputs[2])
        h = tf.nn.relu(h)
        return self.ln(x) * self.gamma(h)[:, None] + self.beta(h)[:, None]

    def get_config(self):
        return {**super().get_config(), 'epsilon': self.epsilon, 'initializer': self.initializer,
                'num_classes': self.num_classes}


@keras.saving.register_keras_serializable('ladagan')
class MLP(layers.Layer):
    """Dense(mlp_dim, exact-erf GELU) -> Dense(model_dim)."""

    def __init__(self, model_dim, mlp_dim, initializer='orthogonal', **kwargs):
        super().__init__(**kwargs)
        self.model_dim = model_dim
        self.mlp_dim = mlp_dim
        self.initializer = initializer
        self.fc1 = _dense(mlp_dim, initializer, 'fc1')
        self.fc2 = _dense(model_dim, initializer, 'fc2')

    def build(self, input_shape):
        self.fc1.build(input_shape)
        self.fc2.build((*input_shape[:-1], self.mlp_dim))

    def call(self, x):
        return self.fc2(tf.nn.gelu(self.fc1(x), approximate=False))

    def get_config(self):
        return {**super().get_config(), 'model_dim': self.model_dim, 'mlp_dim': self.mlp_dim,
                'initializer': self.initializer}


class _Block(layers.Layer):
    """Shared parts of both blocks: norm1 -> attention, norm2 -> MLP; subclasses pick the norms.

    With the 'residual' island (mixed precision) the block is not autocast: its residual adds
    run in float32 on the float32 stream, and each sublayer casts what it reads."""

    def __init__(self, model_dim, n_heads, mlp_dim, initializer='orthogonal', attention='lada',
                 epsilon=1e-6, float32_islands=(), num_classes=0, **kwargs):
        self.float32_islands = tuple(float32_islands)
        self.num_classes = num_classes  # a generator block's self-modulations take the class
        kwargs.setdefault('autocast', 'residual' not in self.float32_islands)
        super().__init__(**kwargs)
        self.model_dim = model_dim
        self.n_heads = n_heads
        self.mlp_dim = mlp_dim
        self.initializer = initializer
        self.attention = attention
        self.epsilon = epsilon
        self.norm1 = self._make_norm('norm1')
        self.attn = make_attention(attention, model_dim, n_heads, initializer,
                                   float32_islands=self.float32_islands)
        self.norm2 = self._make_norm('norm2')
        self.mlp = MLP(model_dim, mlp_dim, initializer, name='mlp')

    def _stream(self, x):
        """The residual stream's dtype: float32 for the 'residual' island, else the compute one."""
        mixed_residual = 'residual' in self.float32_islands and _mixed(self)
        return tf.cast(x, tf.float32 if mixed_residual else self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), 'model_dim': self.model_dim, 'n_heads': self.n_heads,
                'mlp_dim': self.mlp_dim, 'initializer': self.initializer,
                'attention': self.attention, 'epsilon': self.epsilon,
                'float32_islands': list(self.float32_islands), 'num_classes': self.num_classes}


@keras.saving.register_keras_serializable('ladagan')
class GeneratorBlock(_Block):
    """h = x + Attn(SMLN1(x, z)); out = MLP(SMLN2(h, z)). Inputs [x (B, N, D), z (B, noise)],
    and the labels (B,) with num_classes."""

    def _make_norm(self, name):
        return SMLayerNorm(self.epsilon, self.initializer, self.num_classes, name=name,
                           dtype=island_dtype('norms', self.float32_islands))

    def build(self, input_shape):
        x_shape = input_shape[0]
        self.norm1.build(input_shape)
        self.attn.build(x_shape)
        self.norm2.build(input_shape)
        self.mlp.build(x_shape)

    def call(self, inputs):
        x, conditioning = inputs[0], list(inputs[1:])  # [z] or [z, labels]
        x = self._stream(x)
        attn_out, attn_map = self.attn(self.norm1([x] + conditioning))
        h = x + self._stream(attn_out)
        # No residual around the MLP: the official code (and the released checkpoints) do this.
        return self.mlp(self.norm2([h] + conditioning)), attn_map


@keras.saving.register_keras_serializable('ladagan')
class DiscriminatorBlock(_Block):
    """Pre-LN Transformer block: h = x + Attn(LN1(x)); out = h + MLP(LN2(h))."""

    def _make_norm(self, name):
        return layers.LayerNormalization(epsilon=self.epsilon, name=name,
                                         dtype=island_dtype('norms', self.float32_islands))

    def build(self, input_shape):
        for sub in (self.norm1, self.attn, self.norm2, self.mlp):
            sub.build(input_shape)

    def call(self, x):
        # The LayerNorms read float32: Keras's computes in float32 only under a reduced-precision
        # policy of its own, and one of the 'norms' island is float32.
        x = self._stream(x)
        attn_out, attn_map = self.attn(self.norm1(tf.cast(x, tf.float32)))
        h = x + self._stream(attn_out)
        return h + self._stream(self.mlp(self.norm2(tf.cast(h, tf.float32)))), attn_map


@keras.saving.register_keras_serializable('ladagan')
class PositionEmbedding(layers.Layer):
    """Adds a learned (n_tokens, D) table to the tokens; the official one is an Embedding."""

    def __init__(self, n_tokens, model_dim, initializer='orthogonal', **kwargs):
        super().__init__(**kwargs)
        self.n_tokens = n_tokens
        self.model_dim = model_dim
        self.initializer = initializer

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            shape=(self.n_tokens, self.model_dim), name='embeddings',
            initializer=keras.initializers.get(self.initializer))

    def call(self, tokens):
        return tokens + tf.cast(self.embeddings, tokens.dtype)

    def get_config(self):
        return {**super().get_config(), 'n_tokens': self.n_tokens, 'model_dim': self.model_dim,
                'initializer': self.initializer}
