"""What the scripts share on the command line: TensorFlow imported without its start-up log lines.

train.py, generate.py and fid.py report bad input as one `error:` line on stderr (exit code 2).
TensorFlow's native libraries print INFO and WARNING lines to stderr while they load, whatever
TF_CPP_MIN_LOG_LEVEL says, so a script run from the command line imports TensorFlow through
`import_tensorflow_quietly()` before anything else does.
"""
import importlib
import os


def import_tensorflow_quietly():
    """Import tensorflow and keras with file descriptor 2 pointed at /dev/null meanwhile."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    saved_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        importlib.import_module('tensorflow')
        importlib.import_module('keras')
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)
