"""Print what the environment holds: ``python -m softteacher.env``.

detectron2's version and where it came from, whether its native ops load, and the versions of
the libraries it runs on.
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


def collect_env():
    import cv2
    import detectron2
    import numpy
    import PIL
    import torch
    import torchvision

    return {
        "python": sys.version.split()[0],
        "detectron2": detectron2.__version__,
        "detectron2 origin": detectron2_origin(),
        "detectron2 native ops (_C)": has_native_ops(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "Pillow": PIL.__version__,
        "opencv": cv2.__version__,
        "CUDA available": torch.cuda.is_available(),
        "GPUs": torch.cuda.device_count(),
        "CPU threads": torch.get_num_threads(),
    }


def main():
    for key, value in collect_env().items():
        print(f"{key:28s}{value}")


if __name__ == "__main__":
    main()
