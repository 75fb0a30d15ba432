"""What the scripts share on the command line: TensorFlow imported without its start-up log lines,
and the CPU model that every measurement names.

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


def cpu_model():
    """The CPU a measurement ran on, e.g. 'Intel(R) Xeon(R) Processor, 2 cores, AVX512_BF16, AMX':
    kernels, rounding and speed differ between CPU models, so every measurement names it."""
    import platform
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name':
                    name = value.strip()
                elif key.strip() == 'flags':
                    flags = set(value.split())
    except OSError:  # not Linux: the platform's name, without flags
        pass
    features = [label for flag, label in (('avx512_bf16', 'AVX512_BF16'), ('amx_bf16', 'AMX'))
                if flag in flags]
    return ', '.join([name, f'{os.cpu_count()} cores'] + features)
