"""The run report: one self-contained HTML page, RUN/report.html, that opens in any browser.

    python3 train.py --model_dir RUN --report

It shows the run's config and data, images seen, training time, the best FID and when, the FID
curve (drawn as SVG), the loss curves, the latest and best sample grids, the latest attention
maps and the guard's events. Images are embedded as data URIs, so the page is one file, with
no server and nothing to fetch. Training rewrites it at every checkpoint.
"""
import base64
import glob
import html
import os
import time

import tensorflow as tf

import checkpoints

STYLE = '''body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.2em .8em;text-align:left;
border-bottom:1px solid #eee;vertical-align:top}img{max-width:100%;image-rendering:pixelated}
.figures{display:flex;gap:1.5em;flex-wrap:wrap;align-items:flex-start}figure{margin:0}
figcaption{font-size:.85em;color:#555}svg text{font-size:11px;fill:#444}
.stop,.restore{color:#b00}.warn{color:#a60}details{margin:.5em 0}'''


def _image_uri(path):
    with open(path, 'rb') as f:
        return 'data:image/png;base64,' + base64.b64encode(f.read()).decode('ascii')


def _figure(path, caption):
    if not path or not os.path.isfile(path):
        return ''
    return (f'<figure><img src="{_image_uri(path)}" alt="{html.escape(caption)}">'
            f'<figcaption>{html.escape(caption)}</figcaption></figure>')


def _checkpoint_images(folder):
    """Images seen at the newest checkpoint in the folder, or None."""
    prefix = tf.train.latest_checkpoint(folder)
    return checkpoints.checkpoint_scalar(prefix, 'n_images') if prefix else None


def fid_curve_svg(points, width=640, height=260):
    """An SVG line of FID against images seen, the best marked; points [(images, FID)]."""
    if not points:
        return '<p>No FID evaluation yet.</p>'
    left, right, top, bottom = 60, 15, 15, 35
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    # The x axis starts where training does, so one evaluation is a point at its place in the run.
    x_low, x_high = 0, max(max(xs), 1)
    y_low, y_high = min(ys) * 0.95, max(max(ys) * 1.05, min(ys) * 0.95 + 1)

    def place(x, y):
        return (left + (x - x_low) / (x_high - x_low) * (width - left - right),
                top + (y_high - y) / (y_high - y_low) * (height - top - bottom))
    placed = [place(x, y) for x, y in points]
    best = min(range(len(points)), key=lambda index: points[index][1])
    line = ' '.join(f'{x:.1f},{y:.1f}' for x, y in placed)
    ticks = ''.join(
        f'<text x="{left - 6}" y="{place(x_low, value)[1] + 4:.1f}" text-anchor="end">'
        f'{value:.1f}</text>' for value in (y_low, (y_low + y_high) / 2, y_high))
    ticks += ''.join(
        f'<text x="{place(value, y_low)[0]:.1f}" y="{height - bottom + 16}" '
        f'text-anchor="{anchor}">{value:,.0f}</text>'
        for value, anchor in ((x_low, 'start'), (x_high, 'end')))
    return (f'<svg id="fid-curve" width="{width}" height="{height}" role="img" '
            f'aria-label="FID against images seen">'
            f'<rect x="{left}" y="{top}" width="{width - left - right}" '
            f'height="{height - top - bottom}" fill="#fafafa" stroke="#ccc"/>{ticks}'
            f'<text x="{width / 2}" y="{height - 4}" text-anchor="middle">images seen</text>'
            f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="2"/>'
            + ''.join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#1f77b4"/>'
                      for x, y in placed)
            + f'<circle cx="{placed[best][0]:.1f}" cy="{placed[best][1]:.1f}" r="6" '
              f'fill="none" stroke="#d62728" stroke-width="2"><title>best FID '
              f'{points[best][1]:.2f}</title></circle></svg>')


def _table(rows):
    return '<table>' + ''.join(f'<tr><th>{html.escape(str(key))}</th><td>'
                               f'{html.escape(str(value))}</td></tr>' for key, value in rows
                               ) + '</table>'


def _duration(seconds):
    hours, rest = divmod(int(seconds), 3600)
    return f'{hours} h {rest // 60:02d} min {rest % 60:02d} s'


def _summary(model_dir, records):
    fids = [(r['n_images'], r['fid'], r) for r in records
            if 'fid' in r and r['fid'] == r['fid'] and abs(r['fid']) != float('inf')]
    latest = _checkpoint_images(os.path.join(model_dir, 'training-checkpoints'))
    seconds = max((r['train_seconds'] for r in records if 'train_seconds' in r), default=0)
    rows = [('images seen', f'{max([latest or 0] + [r["n_images"] for r in records]):,}'),
            ('training time (steps only)', _duration(seconds))]
    if fids:
        images, best, record = min(fids, key=lambda item: item[1])
        rows += [('best FID', f'{best:.3f} at {images:,} images'),
                 ('latest FID', f'{fids[-1][1]:.3f} at {fids[-1][0]:,} images')]
        rows += [(name.replace('_', ' '), f'{record[name]:.4f} at the best FID') for name in
                 ('precision', 'recall', 'density', 'coverage', 'class_accuracy',
                  'class_accuracy_ceiling') if name in record]
    return rows, [(images, fid) for images, fid, _ in fids]


def write_report(model_dir):
    """Write model_dir/report.html from what the run folder holds; returns its path."""
    conf = checkpoints.resolve_config(model_dir, None, {})[0].to_dict()  # UserError if corrupt
    record = checkpoints.read_run_record(model_dir) or {'options': {}}
    records, _ = checkpoints.read_metrics(model_dir)
    rows, fid_points = _summary(model_dir, records)
    samples = os.path.join(model_dir, 'samples')
    grids = sorted(glob.glob(os.path.join(glob.escape(samples), 'grid_*.png')))
    best = _checkpoint_images(os.path.join(model_dir, 'best-training-checkpoints'))
    best_grid = os.path.join(samples, f'grid_{best:010d}.png') if best else None
    latest_maps = sorted(glob.glob(os.path.join(glob.escape(samples), os.path.basename(
        grids[-1]).replace('grid_', 'attention_')[:-4] + '_stage*.png'))) if grids else []
    events = checkpoints.read_events(model_dir)
    event_rows = ''.join(
        f'<tr class="{html.escape(e["action"])}"><td>{e["n_images"]:,}</td>'
        f'<td>{html.escape(e["action"])}</td><td>{html.escape(e["message"])}</td></tr>'
        for e in events) or '<tr><td colspan="3">none</td></tr>'
    name = os.path.basename(os.path.abspath(model_dir))
    page = f'''<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>LadaGAN run {html.escape(name)}</title>
<style>{STYLE}</style></head><body>
<h1>LadaGAN run <code>{html.escape(os.path.abspath(model_dir))}</code></h1>
<p>Report written {time.strftime('%Y-%m-%d %H:%M:%S')}.</p>
{_table(rows)}
<h2>FID</h2>{fid_curve_svg(fid_points)}
<h2>Samples (EMA generator, fixed noise)</h2><div class="figures">
{_figure(grids[-1] if grids else None, 'latest: ' + os.path.basename(grids[-1]) if grids else '')}
{_figure(best_grid, f'best FID: {os.path.basename(best_grid)}' if best_grid else '')}</div>
<h2>Losses</h2>{_figure(os.path.join(model_dir, 'loss_curves.png'), 'loss curves')}
<h2>Attention maps (latest)</h2><div class="figures">
{''.join(_figure(path, os.path.basename(path)) for path in latest_maps)}</div>
<h2>The guard's events</h2><table><tr><th>images</th><th>action</th><th>what</th></tr>
{event_rows}</table>
<h2>Data and schedule</h2>{_table(sorted(record['options'].items()))}
<details><summary>Config</summary>{_table(conf.items())}</details>
</body></html>
'''
    path = os.path.join(model_dir, 'report.html')
    checkpoints.write_atomic(path, page)
    return path
