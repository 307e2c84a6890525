"""Augmentations: boxes follow the pixels, colour ops and erasing leave boxes alone."""

import numpy as np
import pytest
from detectron2.data import transforms as T

from softteacher import load_config
from softteacher.data.augmentations import (
    COLOR_OPS,
    GEOMETRIC_OPS,
    AffineTransform,
    FilledRotationTransform,
    RandomColorOp,
    RandomErase,
    RandomGeometricOp,
    coords_matrix,
    weak_to_strong_matrix,
)
from softteacher.data.mappers import WeakStrongDatasetMapper
from softteacher.structures import map_boxes

from conftest import config_path

BOXES = np.array([[80.0, 50.0, 120.0, 80.0], [60.0, 40.0, 90.0, 110.0], [110.0, 70.0, 150.0, 115.0]])


def mapper(geometric_ops=GEOMETRIC_OPS):
    cfg = load_config(config_path("Shapes", "Base-Shapes-R18-FPN.yaml"))
    cfg.INPUT.STRONG.GEOMETRIC_OPS = tuple(geometric_ops)
    return WeakStrongDatasetMapper(cfg, is_train=True)


def box_masks(shape, boxes):
    """One 0/255 mask per box, so pixels can be followed through a transform."""
    masks = np.zeros((len(boxes), *shape), np.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.astype(int)):
        mask[y0:y1, x0:x1] = 255
    return masks


def mask_box(mask):
    ys, xs = np.nonzero(mask == 255)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)


def views(m, image):
    weak_input, strong_input = T.AugInput(image), T.AugInput(image)
    return m.augmentations(weak_input), m.strong_augmentations(strong_input), strong_input.image


@pytest.mark.parametrize("op", list(GEOMETRIC_OPS) + ["all"])
def test_weak_view_boxes_mapped_into_the_strong_view_follow_the_pixels(op):
    m = mapper(GEOMETRIC_OPS if op == "all" else [op])
    image = np.full((160, 224, 3), 60, np.uint8)
    masks = box_masks(image.shape[:2], BOXES)
    checked = 0
    for seed in range(25):
        np.random.seed(seed)
        weak_tf, strong_tf, strong_image = views(m, image)
        h, w = strong_image.shape[:2]
        weak_boxes = weak_tf.apply_box(BOXES)
        mapped = map_boxes(weak_to_strong_matrix(weak_tf, strong_tf), weak_boxes, h, w)
        direct = map_boxes(coords_matrix(strong_tf), BOXES, h, w)
        np.testing.assert_allclose(mapped, direct, atol=1e-6)
        unclipped = map_boxes(coords_matrix(strong_tf), BOXES)
        for mask, box, whole in zip(masks, mapped, unclipped):
            if not np.allclose(box, whole):  # partly pushed out: pixels show only a part
                continue
            np.testing.assert_allclose(mask_box(strong_tf.apply_segmentation(mask)), box, atol=2.0)
            checked += 1
    assert checked >= 50


def test_a_strong_view_of_its_own_scale_maps_boxes_by_the_ratio_of_the_two_resizes():
    cfg = load_config(config_path("Shapes", "Base-Shapes-R18-FPN.yaml"))
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.STRONG.GEOMETRIC_OPS = ("translate_x",)
    cfg.INPUT.STRONG.TRANSLATE = 0.0  # no geometric change: only the two resizes differ
    cfg.INPUT.STRONG.MIN_SIZE_TRAIN = (64, 96)
    m = WeakStrongDatasetMapper(cfg, is_train=True)
    image = np.full((160, 224, 3), 60, np.uint8)
    short_sides = set()
    for seed in range(10):
        np.random.seed(seed)
        weak_tf, strong_tf, strong_image = views(m, image)
        weak_h, weak_w = weak_tf.apply_image(image).shape[:2]
        assert weak_h == 128  # the weak view keeps INPUT.MIN_SIZE_TRAIN
        h, w = strong_image.shape[:2]
        assert 64 <= h <= 96
        short_sides.add(h)
        weak_boxes = weak_tf.apply_box(BOXES)
        expected = weak_boxes * np.array([w / weak_w, h / weak_h, w / weak_w, h / weak_h])
        mapped = map_boxes(weak_to_strong_matrix(weak_tf, strong_tf), weak_boxes, h, w)
        np.testing.assert_allclose(mapped, expected, atol=1e-6)
    assert len(short_sides) > 3  # drawn from the range, not fixed


def test_rotation_and_shear_boxes_enclose_the_transformed_corners_exactly():
    rotation = FilledRotationTransform(100, 100, 90.0)
    # a 90 degree turn about the centre (50, 50) sends (x, y) to (y, 100 - x)
    np.testing.assert_allclose(rotation.apply_box(np.array([[10.0, 20.0, 30.0, 60.0]])),
                               [[20.0, 70.0, 60.0, 90.0]], atol=1e-6)
    shear = AffineTransform([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0]], 100, 100)
    # x' = x + 0.5 y: corners (10,20)->20, (30,20)->40, (10,60)->40, (30,60)->60
    np.testing.assert_allclose(shear.apply_box(np.array([[10.0, 20.0, 30.0, 60.0]])),
                               [[20.0, 20.0, 60.0, 60.0]], atol=1e-9)


@pytest.mark.parametrize("transform", [
    AffineTransform([[1.0, 0.3, 5.0], [0.2, 1.1, -7.0]], 120, 90),
    FilledRotationTransform(120, 90, 17.0),
])
def test_geometric_inverse_undoes_the_coordinate_map(transform):
    points = np.array([[3.0, 4.0], [80.0, 110.0], [45.5, 60.25]])
    np.testing.assert_allclose(transform.inverse().apply_coords(transform.apply_coords(points)),
                               points, atol=1e-9)


def test_geometric_ops_keep_shape_dtype_and_fill_uncovered_pixels():
    image = np.full((64, 96, 3), 200, np.uint8)
    out = AffineTransform([[1, 0, 20.0], [0, 1, 0]], 64, 96, fill=125).apply_image(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[:, :20] == 125).all() and (out[:, 21:] == 200).all()
    np.random.seed(0)
    for op in GEOMETRIC_OPS:
        t = RandomGeometricOp(ops=[op])(T.AugInput(image.copy()))
        assert t.apply_image(image).shape == image.shape


@pytest.mark.parametrize("op", list(COLOR_OPS))
def test_colour_ops_keep_shape_and_dtype_and_never_move_boxes(op):
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    np.random.seed(1)
    t = RandomColorOp(ops=[op])(T.AugInput(image.copy()))
    out = t.apply_image(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(t.apply_box(BOXES), BOXES)


@pytest.mark.parametrize("magnitude,expected", [(1, 28), (5, 100), (9, 172)])
def test_brightness_factor_is_magnitude_times_0_18_plus_0_1(magnitude, expected):
    image = np.full((8, 8, 3), 100, np.uint8)
    t = RandomColorOp((magnitude, magnitude), ops=["brightness"])(T.AugInput(image.copy()))
    assert int(t.apply_image(image)[0, 0, 0]) == expected


def test_solarize_and_posterize_magnitudes():
    image = np.array([[[200, 100, 20]]], np.uint8)
    solarize = RandomColorOp((5, 5), ops=["solarize"], image_format="RGB")
    # threshold 128: 200 -> 55, below stays
    out = solarize(T.AugInput(image.copy())).apply_image(image)
    assert out.tolist() == [[[55, 100, 20]]]
    posterize = RandomColorOp((9, 9), ops=["posterize"], image_format="RGB")
    # 4 - int(3.6) = 1 bit kept
    assert posterize(T.AugInput(image.copy())).apply_image(image).tolist() == [[[128, 0, 0]]]


def test_colour_ops_see_bgr_images_as_rgb():
    rgb = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    for_rgb = RandomColorOp((2, 2), ops=["color"], image_format="RGB")(T.AugInput(rgb.copy()))
    for_bgr = RandomColorOp((2, 2), ops=["color"], image_format="BGR")(T.AugInput(bgr.copy()))
    np.testing.assert_array_equal(for_bgr.apply_image(bgr)[..., ::-1], for_rgb.apply_image(rgb))


def test_erasing_fills_squares_within_the_size_limit_and_never_moves_boxes():
    image = np.zeros((100, 150, 3), np.uint8)
    np.random.seed(3)
    for _ in range(20):
        t = RandomErase(num_patches=(1, 4), max_size=0.2, fill=125)(T.AugInput(image.copy()))
        assert 1 <= len(t.rects) <= 4
        for x0, y0, x1, y1 in t.rects:
            assert x1 - x0 == y1 - y0 <= 20 and 0 <= x0 and x1 <= 150 and y1 <= 100
        out = t.apply_image(image)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert (out == 125).any(axis=2).sum() == len(
            {(x, y) for x0, y0, x1, y1 in t.rects for x in range(x0, x1) for y in range(y0, y1)}
        )
        np.testing.assert_array_equal(t.apply_box(BOXES), BOXES)


def test_map_boxes_works_on_tensors_like_on_arrays():
    import torch

    matrix = np.array([[0.9, 0.3, 4.0], [-0.2, 1.1, 2.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(
        map_boxes(matrix, torch.tensor(BOXES), 100, 120).numpy(), map_boxes(matrix, BOXES, 100, 120)
    )


def test_map_boxes_with_one_matrix_and_size_per_box_equals_mapping_each_box_alone():
    import torch

    matrices = np.array([
        [[0.9, 0.3, 4.0], [-0.2, 1.1, 2.0], [0.0, 0.0, 1.0]],
        [[1.5, 0.0, -30.0], [0.0, 1.5, -10.0], [0.0, 0.0, 1.0]],
        [[-1.0, 0.0, 200.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    ])
    heights, widths = np.array([100.0, 90.0, 200.0]), np.array([120.0, 100.0, 180.0])
    batched = map_boxes(torch.tensor(matrices), torch.tensor(BOXES), torch.tensor(heights), torch.tensor(widths))
    for i in range(len(BOXES)):
        np.testing.assert_allclose(batched[i].numpy(), map_boxes(matrices[i], BOXES[i:i + 1], heights[i], widths[i])[0])
    # box 1 scaled by 1.5 and shifted: (60, 40, 90, 110) -> (60, 50, 105, 155), clipped to 100 x 90
    np.testing.assert_allclose(batched[1].numpy(), [60.0, 50.0, 100.0, 90.0])


def test_with_input_crop_both_views_show_the_weak_views_crop(tmp_path):
    import cv2

    cfg = load_config(config_path("Shapes", "Base-Shapes-R18-FPN.yaml"))
    cfg.INPUT.CROP.ENABLED, cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE = True, "absolute", (60, 80)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.RANDOM_FLIP = (60,), "none"  # the crop is not resized
    cfg.INPUT.STRONG.GEOMETRIC_OPS = ("translate_x",)
    cfg.INPUT.STRONG.TRANSLATE = 0.0
    cfg.INPUT.STRONG.ERASE_PATCHES = (0, 0)
    m = WeakStrongDatasetMapper(cfg, is_train=True)
    m.strong_augmentations = T.AugmentationList(list(m.strong_augmentations.augs)[:1])  # the resize: no colour op
    # every pixel names its place: blue = x, green = y
    ys, xs = np.mgrid[0:160, 0:224]
    image = np.stack([xs, ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    path = str(tmp_path / "image.png")
    cv2.imwrite(path, image)
    record = {"file_name": path, "image_id": 1, "height": 160, "width": 224,
              "annotations": [{"bbox": [100.0, 70.0, 10.0, 10.0], "bbox_mode": 1, "category_id": 0}]}
    for seed in range(5):
        np.random.seed(seed)
        out = m(record)
        weak, strong = out["weak"]["image"].numpy(), out["strong"]["image"].numpy()
        assert weak.shape == strong.shape == (3, 60, 80)
        np.testing.assert_array_equal(weak, strong)  # the same part of the image
        x0, y0 = int(weak[0, 0, 0]), int(weak[1, 0, 0])  # where the crop starts
        np.testing.assert_allclose(out["weak_to_strong"], np.eye(3), atol=1e-6)
        expected = np.clip([[100 - x0, 70 - y0, 110 - x0, 80 - y0]], 0, [80, 60, 80, 60])
        visible = (expected[:, 2] > expected[:, 0]) & (expected[:, 3] > expected[:, 1])
        boxes = out["unlabeled_gt_instances"].gt_boxes.tensor.numpy()
        np.testing.assert_allclose(boxes, expected[visible], atol=1e-4)  # the box moved with the crop
