"""Print what the environment holds: ``python -m softteacher.env``.

detectron2's own environment table (``detectron2.utils.collect_env``), then what it lacks: which
distribution installed detectron2, whether its native ops load, the CUDA build of torch and the
NVIDIA driver that build needs, the GPUs torch sees.
"""

import importlib.metadata
import os
import sys


def detectron2_origin():
    """Which distribution installed the importable detectron2, or 'source' for a checkout."""
    import detectron2

    path = os.path.dirname(os.path.abspath(detectron2.__file__))
    for dist in ("detectron2", "sal-detectron2"):
        try:
            files = importlib.metadata.distribution(dist).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        if any(str(f).startswith("detectron2/") for f in files):
            return f"{dist} {importlib.metadata.version(dist)} ({path})"
    return f"source ({path})"


def has_native_ops():
    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


# the oldest NVIDIA Linux driver each CUDA major version of a torch build runs on
MIN_DRIVER = {"11": "450.80", "12": "525.60", "13": "580.65"}


def collect_env():
    """The project's lines, as a dict."""
    import detectron2
    import torch

    cuda = torch.version.cuda
    return {
        "python": sys.version.split()[0],
        "detectron2": detectron2.__version__,
        "detectron2 origin": detectron2_origin(),
        "detectron2 native ops (_C)": has_native_ops(),
        "torch": torch.__version__,
        "torch CUDA build": cuda or "none (CPU only)",
        "NVIDIA driver needed": f">= {MIN_DRIVER.get(cuda.split('.')[0], '?')}" if cuda else "none",
        "CUDA available": torch.cuda.is_available(),
        "GPUs": ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or 0,
        "CPU threads": torch.get_num_threads(),
    }


def main():
    from detectron2.utils.collect_env import collect_env_info

    print(collect_env_info())
    for key, value in collect_env().items():
        print(f"{key:28s}{value}")


if __name__ == "__main__":
    main()
