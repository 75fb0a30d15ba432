"""benchmark.py runs end to end in its quick form and reports sane numbers."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_benchmark_with_profile(tmp_path):
    out = tmp_path / 'bench.json'
    result = subprocess.run(
        [sys.executable, 'benchmark.py', '--quick', '--only', 'train,data,memory', '--presets', 'tiny',
         '--steps', '2', '--profile', str(tmp_path / 'profile'), '--json', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r['metric']: r for r in json.loads(out.read_text())['results']}
    assert 'tiny, XLA: train step' in result.stdout  # the printed table
    for mode in ('XLA', 'no XLA'):
        assert rows[f'tiny, {mode}: train step']['value'] > 1  # img/s
        assert 0 < rows[f'tiny, {mode}: model FLOPs utilisation']['value'] < 100
        # The profiler trace was written and parsed: shares of kernel time add up to 100%.
        shares = [r['value'] for name, r in rows.items()
                  if name.startswith(f'tiny, {mode}: kernel time')]
        assert len(shares) >= 2 and abs(sum(shares) - 100) < 1e-6
    assert any('matmul' in name for name in rows if 'kernel time' in name)
    assert list((tmp_path / 'profile').glob('tiny_xla/**/*.xplane.pb'))
    # Memory: each preset and mode measured in a process of its own.
    for mode in ('XLA', 'no XLA'):
        assert 100 < rows[f'tiny, {mode}, ours: peak resident memory']['value'] < 8000
        assert rows[f'tiny, {mode}, ours: train step']['value'] > 1
    assert rows['dense matmul peak (float32, 2048^3, best of XLA and oneDNN)']['value'] > 1
    for size in (32, 128):
        assert rows[f'input pipeline, {size} px, in memory']['value'] > 0
        assert rows[f'input pipeline, {size} px, decoded every epoch']['value'] > 0
