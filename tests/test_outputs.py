"""outputs.py: what a checkpoint leaves to look at, each a side job that never stops training."""
import os

import keras
import numpy as np

import checkpoints
import config
import model
import outputs


def test_a_failing_side_job_is_one_warning_line(capsys):
    def full_disk():
        raise OSError(28, 'No space left on device')

    assert outputs.side_job('the loss curves', full_disk) is None
    assert outputs.side_job('the sum', sum, [1, 2]) == 3
    assert capsys.readouterr().out == ('warning: the loss curves failed, training goes on '
                                       '(OSError: [Errno 28] No space left on device)\n')


def test_pictures_of_a_save_are_the_grid_maps_curves_and_report(tmp_path, capsys):
    run = str(tmp_path / 'run')
    conf = config.make_config('tiny')
    os.makedirs(run)
    checkpoints.write_json_atomic(os.path.join(run, 'config.json'), conf.to_dict())
    log = checkpoints.RunLog(run)
    log.log(16, d_loss=0.5, g_loss=1.0)
    keras.utils.set_random_seed(0)
    generator = model.build_generator(conf)
    noise = np.random.default_rng(0).standard_normal((64, conf.noise_dim)).astype(np.float32)
    outputs.write_pictures(run, log, generator, noise, 16, conf.plot_size)
    assert 'warning' not in capsys.readouterr().out
    names = ['samples/grid_0000000016.png', 'loss_curves.png', 'report.html'] + [
        f'samples/attention_0000000016_stage{stage}_{side}x{side}.png'
        for stage, side in enumerate((8, 16, 32))]
    for name in names:
        assert os.path.getsize(os.path.join(run, name)) > 1000, name
    # A file where the samples folder should be: the grid and the maps warn, the rest is written.
    os.remove(os.path.join(run, 'loss_curves.png'))
    os.rename(os.path.join(run, 'samples'), os.path.join(run, 'old_samples'))
    open(os.path.join(run, 'samples'), 'w').close()
    outputs.write_pictures(run, log, generator, noise, 32, conf.plot_size)
    out = capsys.readouterr().out
    assert out.count('warning: ') == 2 and 'the sample grid failed' in out, out
    assert 'the attention maps failed' in out
    assert os.path.getsize(os.path.join(run, 'loss_curves.png')) > 1000
