"""Reading unchecked unlabeled images: convert what can be converted, skip and count the rest.

Grayscale, palette, RGBA and CMYK images are converted as detectron2 converts them; EXIF
orientation is applied; 16-bit images are scaled to 8 bits (detectron2's conversion clips them to
white). A file that cannot be read (missing, empty, corrupt, truncated, or not the size its json
says) raises one of ``UNREADABLE``: the mapper then returns None, detectron2's ``MapDataset``
substitutes another image, and the file and reason travel with the next image the mapper does
return, so the training process can count it and name it once in its log.
"""

import logging

import numpy as np
from detectron2.data import detection_utils as utils
from detectron2.utils.file_io import PathManager
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

# PIL raises SyntaxError for some malformed headers (e.g. broken PNG chunks)
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)  # ValueError: size mismatch
SKIPPED_KEY = "skipped_files"
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def read_image_any_depth(file_name, image_format):
    """``detection_utils.read_image``, but 16-bit images are scaled to 8 bits, not clipped."""
    with PathManager.open(file_name, "rb") as f:
        image = ImageOps.exif_transpose(Image.open(f))
        if image.mode in _SIXTEEN_BIT_MODES:
            pixels = np.asarray(image).astype(np.float32)
            if image.mode != "I" or pixels.max() > 255:
                pixels = pixels / 257.0
            image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
        return utils.convert_PIL_to_numpy(image, image_format)


class SkippedImages:
    """Counts the unlabeled images that were skipped, naming each file once in the log."""

    def __init__(self):
        self.count = 0
        self.named = set()

    def update(self, batch):
        """Take the skip reports out of ``batch`` (a list of mapped dicts); returns the count."""
        for dataset_dict in batch:
            for file_name, reason in dataset_dict.pop(SKIPPED_KEY, ()):
                self.count += 1
                if file_name not in self.named:
                    self.named.add(file_name)
                    logger.warning("Skipped unlabeled image %s: %s", file_name, reason)
        return self.count
