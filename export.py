"""A trained generator as a file to ship: a TensorFlow SavedModel, and ONNX when tf2onnx is there.

The SavedModel has one serving signature, float32 noise (N, noise_dim) -> uint8 images
(N, H, W, 3), quantised as generate.py saves its PNGs (data.to_uint8: clip(x * 127.5 + 127.5)
truncated), so it runs without this project: `tf.saved_model.load(DIR)` is all a user needs. A
class-conditional generator takes int32 `labels` (N,) as its second input, in the SavedModel and
in ONNX alike.

    python3 generate.py --model_dir runs/demo --export exported/demo
"""
import json
import os
import shutil
import tempfile
import warnings

import numpy as np
import tensorflow as tf

USAGE = '''# A LadaGAN generator

Exported by ladagan's `generate.py --export` from `{source}` ({generator} generator,
{img_size}x{img_size} px). It needs TensorFlow only.

    import numpy as np
    import tensorflow as tf

    generator = tf.saved_model.load('{folder}')
    noise = np.zeros(({batch}, {noise_dim}), np.float32)
    noise[0] = np.random.RandomState(0).randn({noise_dim})  # seed 0 at row 0 % {batch}
    images = generator.signatures['serving_default'](noise=tf.constant(noise))['images']
    # images[0]: ({img_size}, {img_size}, 3) uint8, the picture generate.py saves as seed0000.png

One row of noise per image, standard normal, `noise_dim` = {noise_dim}; `generate.py` draws the
row of seed S as `np.random.RandomState(S).randn({noise_dim})` and computes it at row S % {batch}
of a batch of {batch} (`gen_batch_size`): CPU kernels round a row by its position and the
batch size, so another layout can move a pixel by one 8-bit level. Any batch size works.
`generator.generate(noise)` is the same function. {classes}{onnx}
'''

CLASSES_USAGE = '''The generator is class-conditional: give each row's class as a second input,
`labels=tf.constant(classes, tf.int32)` (N,), one of {num_classes}: {names} (config.json's
`num_classes`; generate.py draws seed S of class C from the same noise row as above).

'''

ONNX_USAGE = '''`generator.onnx` is the same network for ONNX Runtime (input `noise`{labels}, output
`images`):

    import onnxruntime
    session = onnxruntime.InferenceSession('{folder}/generator.onnx')
    images = session.run(['images'], {{'noise': noise{label_feed}}})[0]
'''


class ImageGenerator(tf.Module):
    """The generator as people use it: noise -> uint8 images, quantised as data.to_uint8 does,
    in one TensorFlow graph. generate.py draws its PNGs through it and export.py saves it, so
    the two agree bit for bit (eager, layer-by-layer calls round differently in the last bit)."""

    def __init__(self, generator, noise_dim, num_classes=0):
        super().__init__(name='ladagan_generator')
        self.generator = generator
        self.input_signature = [tf.TensorSpec([None, noise_dim], tf.float32, name='noise')]
        if num_classes:  # a conditional generator's second input: each row's class
            self.input_signature.append(tf.TensorSpec([None], tf.int32, name='labels'))
        self.generate = tf.function(self._generate, input_signature=self.input_signature)
        self.generate_with_attention = tf.function(self._generate_with_attention,
                                                   input_signature=self.input_signature)

    def _generate_with_attention(self, noise, labels=None):
        """(uint8 images (N, H, W, 3), [attention maps (N, heads, tokens) per stage])."""
        # images linear, float32
        images, attn_maps = self.generator(noise, training=False, labels=labels)
        # data.to_uint8 in TensorFlow: the float-to-uint8 cast truncates, as numpy's does.
        return tf.cast(tf.clip_by_value(images * 127.5 + 127.5, 0.0, 255.0), tf.uint8), attn_maps

    def _generate(self, noise, labels=None):
        return {'images': self._generate_with_attention(noise, labels)[0]}


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx handler: ONNX has Erf but no Erfc, which Keras' exact GELU uses; erfc = 1 - erf."""
    from tf2onnx import utils
    node.type = 'Erf'
    one = ctx.make_const(utils.make_name('one'), np.array(1.0, np.float32))
    ctx.insert_new_node_on_output('Sub', node.output[0], inputs=[one.output[0], node.output[0]])


def export_onnx(module, onnx_path):
    """Convert the generator's function with tf2onnx (opset 17); False when tf2onnx is not
    installed (it is optional: pip install tf2onnx onnx)."""
    try:  # imported here: an optional package
        import tf2onnx
    except ImportError:
        return False
    try:
        tf2onnx.convert.from_function(module.generate, input_signature=module.input_signature,
                                      opset=17, output_path=onnx_path,
                                      custom_op_handlers={'Erfc': (_erfc_as_one_minus_erf, [])})
    except Exception as error:  # noqa: BLE001 - the converter raises many kinds; ONNX is extra
        warnings.warn(f'tf2onnx could not convert the generator ({str(error)[:200]}); the '
                      'SavedModel is exported without generator.onnx')
        return False
    return True


def export_generator(generator, conf, export_dir, source='a run', ema=True, class_names=None):
    """Write `generator` to `export_dir`: SavedModel, README.md, config.json, and
    generator.onnx when tf2onnx is installed. Written to a temporary folder first, so a failed
    export leaves nothing behind. Returns the folder."""
    export_dir = os.path.abspath(os.path.expanduser(export_dir))
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.export-', dir=parent)
    try:
        module = ImageGenerator(generator, conf.noise_dim, conf.num_classes)
        tf.saved_model.save(module, staging, signatures={'serving_default': module.generate})
        with_onnx = export_onnx(module, os.path.join(staging, 'generator.onnx'))
        with open(os.path.join(staging, 'config.json'), 'w') as f:
            json.dump(conf.to_dict(), f, indent=4)
        with open(os.path.join(staging, 'README.md'), 'w') as f:
            f.write(USAGE.format(source=source, generator='EMA' if ema else 'raw',
                                 img_size=conf.img_size, noise_dim=conf.noise_dim,
                                 batch=conf.gen_batch_size, folder=export_dir,
                                 classes=CLASSES_USAGE.format(
                                     num_classes=conf.num_classes, names=', '.join(
                                         f'{index} {name}' for index, name in enumerate(
                                             class_names or range(conf.num_classes))))
                                 if conf.num_classes else '',
                                 onnx=ONNX_USAGE.format(
                                     folder=export_dir,
                                     labels=' and int32 `labels`' if conf.num_classes else '',
                                     label_feed=", 'labels': classes" if conf.num_classes else '')
                                 if with_onnx else
                                 'Install tf2onnx and export again for an ONNX file as well.'))
        if os.path.isdir(export_dir):
            os.rmdir(export_dir)  # an empty folder given on purpose
        os.replace(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f'Exported the generator to {export_dir}: SavedModel'
          + (', generator.onnx' if with_onnx else '') + ', README.md')
    return export_dir
