"""Drawing boxes on images (with detectron2's ``Visualizer``) and tiling pictures, for the PNGs
people look at."""

import cv2
import numpy as np
from detectron2.utils.visualizer import Visualizer

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)]


def to_rgb(image_chw, image_format):
    """An HxWx3 uint8 RGB array from a model input tensor (CHW) in ``image_format``."""
    image = image_chw.permute(1, 2, 0).cpu().numpy().astype(np.uint8)
    return np.ascontiguousarray(image[..., ::-1] if image_format == "BGR" else image)


def draw_boxes(image, boxes, color, labels=None, dashed=False, scale=1.0):
    """``image`` (RGB) with XYXY ``boxes`` (in its pixels) drawn by detectron2's ``Visualizer``,
    enlarged by ``scale``: outlines in ``color`` (RGB 0-255), dashed for ground truth, optional
    labels at the top-left corners. Returns a new RGB array."""
    return draw_box_layers(image, [(boxes, color, labels, dashed)], scale)


def draw_box_layers(image, layers, scale=1.0):
    """Several ``(boxes, color, labels, dashed)`` layers drawn in order on one picture."""
    visualizer = Visualizer(image, scale=scale)
    for boxes, color, labels, dashed in layers:
        edge = tuple(c / 255 for c in color)
        for i, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
            visualizer.draw_box(box, alpha=1.0, edge_color=edge, line_style="--" if dashed else "-")
            if labels is not None:
                visualizer.draw_text(str(labels[i]), (box[0], box[1]), color=edge, horizontal_alignment="left")
    return visualizer.output.get_image()


def titled(image, title, height=16):
    """The image with a white title strip on top."""
    strip = np.full((height, image.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, title, (3, height - 4), cv2.FONT_HERSHEY_PLAIN, 0.9, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, image])


def tile(images, cols, pad=4):
    """Tile RGB images of any sizes into one picture, ``cols`` per row, on white."""
    rows = [images[i:i + cols] for i in range(0, len(images), cols)]
    cell_h = max(im.shape[0] for im in images)
    cell_w = max(im.shape[1] for im in images)
    canvas = np.full(((cell_h + pad) * len(rows) + pad, (cell_w + pad) * cols + pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            y, x = pad + r * (cell_h + pad), pad + c * (cell_w + pad)
            canvas[y:y + im.shape[0], x:x + im.shape[1]] = im
    return canvas


def save_png(path, image_rgb):
    if not cv2.imwrite(path, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
