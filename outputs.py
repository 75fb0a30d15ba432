"""What a checkpoint leaves for people to look at: the sample grid (also in TensorBoard), the
attention maps, the loss curves and the run report. Each is a side job: one that fails (a full
disk, a plotting error) prints one `warning:` line, and the others, and training, go on.

    outputs.write_pictures(run_dir, run_log, ema_generator, noise, n_images, plot_size=5.2)
"""
import os

from tqdm import tqdm

import plots
import report


def side_job(what, function, *args, **kwargs):
    """function(*args, **kwargs), or None with one `warning:` line when it fails: plots, the
    report and image summaries must never stop a run that is training fine."""
    try:
        return function(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - whatever a side job raises, training goes on
        tqdm.write(f'warning: {what} failed, training goes on ({type(error).__name__}: {error})')
        return None


def write_pictures(run_dir, run_log, generator, noise, n_images, plot_size, labels=None):
    """After the save at `n_images`: the grid and attention maps of `generator` (the EMA
    generator) on the fixed `noise` (64, noise_dim) (and a conditional generator's `labels`)
    in RUN/samples/, the grid in TensorBoard (run_log: checkpoints.RunLog),
    RUN/loss_curves.png and RUN/report.html."""
    samples_dir = os.path.join(run_dir, 'samples')
    images, attn_maps = generator(noise, training=False, labels=labels)
    images = images.numpy()  # (64, S, S, 3) in [-1, 1]
    grid = side_job('the sample grid', plots.save_image_grid, images,
                    os.path.join(samples_dir, f'grid_{n_images:010d}.png'))
    if grid is not None:
        side_job('the TensorBoard image summary', run_log.image, 'samples', grid, n_images)
    side_job('the attention maps', lambda: plots.save_attention_maps(
        images[:8], [maps.numpy()[:8] for maps in attn_maps],
        os.path.join(samples_dir, f'attention_{n_images:010d}'), plot_size=plot_size))
    side_job('the loss curves', plots.save_loss_curves, run_log.history,
             os.path.join(run_dir, 'loss_curves.png'))
    side_job('the report', report.write_report, run_dir)
