"""Drawing boxes on images and tiling pictures, for the PNGs people look at."""

import cv2
import numpy as np

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)]


def to_rgb(image_chw, image_format):
    """An HxWx3 uint8 RGB array from a model input tensor (CHW) in ``image_format``."""
    image = image_chw.permute(1, 2, 0).cpu().numpy().astype(np.uint8)
    return np.ascontiguousarray(image[..., ::-1] if image_format == "BGR" else image)


def enlarge(image, scale):
    """Nearest-neighbour upscaling by an integer factor, so small images stay readable."""
    return np.ascontiguousarray(np.kron(image, np.ones((scale, scale, 1), np.uint8)))


def _dashed_line(image, p, q, color, thickness, dash=4):
    length = max(abs(q[0] - p[0]), abs(q[1] - p[1]), 1)
    for start in range(0, length, 2 * dash):
        a, b = start / length, min(start + dash, length) / length
        cv2.line(image, (round(p[0] + (q[0] - p[0]) * a), round(p[1] + (q[1] - p[1]) * a)),
                 (round(p[0] + (q[0] - p[0]) * b), round(p[1] + (q[1] - p[1]) * b)), color, thickness)


def draw_boxes(image, boxes, color, labels=None, dashed=False, scale=1.0, thickness=1):
    """Draw XYXY ``boxes`` (in ``image`` pixels before ``scale``) on an RGB image, in place."""
    for i, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
        if dashed:
            corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
            for p, q in zip(corners[:-1], corners[1:]):
                _dashed_line(image, p, q, color, thickness)
        else:
            cv2.rectangle(image, (x0, y0), (x1, y1), color, thickness)
        if labels is not None:
            cv2.putText(image, str(labels[i]), (x0 + 1, max(y0 - 2, 8)), cv2.FONT_HERSHEY_PLAIN,
                        0.8, color, 1, cv2.LINE_AA)
    return image


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
