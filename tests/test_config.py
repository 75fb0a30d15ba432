"""config.py: presets, validation, overrides, and no dead keys."""
import glob
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import config  # noqa: E402


@pytest.mark.parametrize('preset', sorted(config.presets))
def test_every_preset_is_valid(preset):
    conf = config.make_config(preset)
    assert config.config_from_dict(conf.to_dict()) == (conf, [])


def test_presets_hold_the_released_settings():
    ffhq = config.make_config('ffhq_128')
    assert (ffhq.dec_dim, ffhq.bcr, ffhq.policy, ffhq.batch_size) == (
        [128, 64], True, 'color,translation,cutout', 64)
    cifar = config.make_config('cifar10')
    assert (cifar.img_size, cifar.d_enc_dim, cifar.g_dim) == (32, [128, 256], [1024, 256, 64])
    assert config.make_config().to_dict() == config.make_config('celeba_64').to_dict()


@pytest.mark.parametrize('overrides,message', [
    (dict(img_szie=32), "unknown config key 'img_szie'"),
    (dict(batch_size='64'), 'batch_size=.64. has the wrong type: it must be an integer'),
    (dict(bcr=1), 'bcr=1 has the wrong type: it must be True or False'),
    (dict(img_size=48), 'img_size=48 is not supported'),
    (dict(img_size=128), 'd_enc_dim=.* must have 4 entries for img_size 128'),
    (dict(g_dim=[1024, 256, 66]), r'g_dim\[2\]=66 is not divisible by g_heads\[2\]=4'),
    (dict(d_heads=3), r'd_enc_dim\[-1\]=256 is not divisible by d_heads=3'),
    (dict(loss='wgan'), "loss='wgan' is not supported"),
    (dict(policy='color,flip'), "unknown operation 'flip'"),
    (dict(dec_dim=[64, 32]), 'dec_dim=.* must have 1 entries for img_size 64'),
    (dict(ema_decay=1.0), 'ema_decay=1.0 must be in'),
    (dict(jit=1), "jit=1 is not allowed: use True, False or 'auto'"),
    (dict(prdc=True, n_fid_gen=3), 'prdc=True needs more than 3 images a side, not '
                                   'n_fid_real=2500 and n_fid_gen=3'),
])
def test_bad_values_raise_one_clear_error(overrides, message):
    with pytest.raises(config.UserError, match=message):
        config.make_config(**overrides)


def test_unknown_preset():
    with pytest.raises(config.UserError, match="unknown preset 'cifar'"):
        config.make_config('cifar')


@pytest.mark.parametrize('text,expected', [
    ('batch_size=64', ('batch_size', 64)),
    ('g_lr=1e-4', ('g_lr', 1e-4)),
    ('g_lr=1', ('g_lr', 1.0)),
    ('bcr=true', ('bcr', True)),
    ('policy=color,cutout', ('policy', 'color,cutout')),
    ('dec_dim=[128, 64]', ('dec_dim', [128, 64])),
    ('dec_dim=False', ('dec_dim', False)),
    ('g_dim=[64,32,16]', ('g_dim', [64, 32, 16])),
    ('jit=auto', ('jit', 'auto')),
    ('jit=False', ('jit', False)),
    ('jit=true', ('jit', True)),
])
def test_command_line_overrides_are_typed(text, expected):
    assert config.parse_override(text) == expected


@pytest.mark.parametrize('text,message', [
    ('batch_size=big', 'batch_size=big is not a valid value: it must be an integer'),
    ('batch_size', 'not of the form key=value'),
    ('nope=1', "unknown config key 'nope'"),
    ('g_dim=[1.5, 2, 3]', 'must be a list of integers'),
    ('jit=xla', "jit='xla' is not allowed: use True, False or 'auto'"),
])
def test_bad_overrides(text, message):
    with pytest.raises(config.UserError, match=message):
        config.parse_override(text)


def test_config_is_read_only_and_replace_validates():
    conf = config.make_config('tiny')
    with pytest.raises(AttributeError):
        conf.batch_size = 3
    assert conf.replace(batch_size=3).batch_size == 3
    with pytest.raises(config.UserError):
        conf.replace(img_size=31)


def test_official_config_json_translates(tmp_path):
    import json
    path = os.path.join(ROOT, 'tests', 'fixtures', 'official', 'tiny64', 'config.json')
    with open(path) as f:
        conf = config.from_official(json.load(f))
    assert (conf.img_size, conf.g_heads, conf.d_enc_dim, conf.d_mlp) == (64, [4, 2, 2],
                                                                         [8, 16, 32], 48)


def test_every_key_is_read_somewhere_and_documented():
    source = ''
    for path in glob.glob(os.path.join(ROOT, '*.py')):
        if os.path.basename(path) != 'config.py':
            with open(path) as f:
                source += f.read()
    with open(os.path.join(ROOT, 'config.py')) as f:
        config_source = f.read()
    for key in config.config:
        assert re.search(rf"\.{key}\b|\['{key}'\]", source), f'config key {key!r} is never read'
        assert re.search(rf"'{key}': .*# \S", config_source), f'config key {key!r} has no comment'


def test_a_stored_config_missing_new_keys_takes_their_defaults_with_one_notice():
    stored = config.make_config('tiny').to_dict()
    del stored['nan_retries'], stored['jit']
    conf, notices = config.config_from_dict(stored, 'RUN/config.json')
    assert conf == config.make_config('tiny')
    assert notices == ["RUN/config.json predates the config keys jit, nan_retries: using "
                       "jit='auto', nan_retries=0"]
    # A run from before float32_islands kept no part in float32: it goes on so (#36), whatever
    # today's default is.
    stored = config.make_config('tiny', precision='mixed_bfloat16').to_dict()
    del stored['float32_islands']
    conf, notices = config.config_from_dict(stored, 'RUN/config.json')
    assert conf.float32_islands == [] != config.config['float32_islands']
    assert notices == ['RUN/config.json predates the config key float32_islands: using '
                       'float32_islands=[]']
    with pytest.raises(config.UserError, match="unknown config key 'batchsize'"):
        config.config_from_dict(dict(stored, batchsize=3))
