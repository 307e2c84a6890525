"""Write a starting config fitted to your data: read your labeled COCO json (and the unlabeled
json or folder), choose input size, anchors, classes, schedule and batch from what they hold, and
write a YAML whose every choice carries a comment saying why.

    python tools/init_config.py --name my_data \
        --labeled-json data/labeled.json --labeled-images data/images \
        --unlabeled-images data/unlabeled/ \
        --val-json data/val.json --val-images data/images \
        --output configs/my_data.yaml [--weights /path/to/R-50.pkl]

Without ``--weights``: the small ResNet-18-FPN with GroupNorm, trained from scratch (the
generated datasets' family, sized for a CPU). With ImageNet R-50 weights: the COCO family's
ResNet-50-FPN. Either way the recommended recipe of that family, on your files through
``DATASETS.CUSTOM``, with an absolute ``_BASE_`` so the config can live anywhere.
"""

import argparse
import math
import os
import statistics

from PIL import Image

from ..datasets.coco_files import count_images, load_image_folder
from ..datasets.splits import load_coco_dict

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
# the recommended recipe of each family (bench/README.md, section 18), trained LONGER times the
# schedule (mixing pseudo-labels did not beat plus given its compute in iterations): from scratch, plus
# without box jitter; pretrained R-50, the COCO "plus" recipe
SCRATCH_BASE = os.path.join("configs", "Shapes", "soft_teacher_plus_no_box_jitter_R18_FPN_10pct_1.7x.yaml")
PRETRAINED_BASE = os.path.join("configs", "COCO-SemiSupervised", "soft_teacher_plus_R_50_FPN_10pct_180k.yaml")
# the schedule measured on the generated datasets: 3,200 iterations for 2,000 training images,
# learning-rate steps at 75 % and 90 %, burn-in, evaluation and pictures every 25 %, checkpoints
# every 50 %
REFERENCE_ITERS, REFERENCE_IMAGES, MIN_ITERS = 3200, 2000, 1600
LONGER = 1.7  # the mixed recipe's unlabeled step over plus's (bench/cost.py)
STEP_FRACTIONS, BURN_IN_FRACTION, EVAL_FRACTION, CHECKPOINT_FRACTION = (0.75, 0.9), 0.25, 0.25, 0.5
MIN_ANCHOR = 8  # 2x the stride of FPN's finest level (4): smaller anchors match few positions
FPN_LEVELS = 5  # P2-P6: one anchor size per level, doubling


def round_to(value, step):
    return int(step * max(1, round(value / step)))


def short_side(images):
    """Median short side of a json's images (``height``/``width``)."""
    return statistics.median(min(im["height"], im["width"]) for im in images)


def box_sides(coco):
    """sqrt(area) of every box, in pixels of the original images."""
    return sorted(math.sqrt(a["bbox"][2] * a["bbox"][3]) for a in coco.get("annotations", [])
                  if a["bbox"][2] > 0 and a["bbox"][3] > 0)


def percentile(sorted_values, q):
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def anchor_sizes(sides, scale):
    """FPN_LEVELS doubling anchor sizes (powers of two) for boxes of ``sides`` resized by ``scale``:
    the smallest at or under the 1st percentile (not under MIN_ANCHOR); when the 1st-99th
    percentile range is wider than the anchors span, centred on it (geometric middle)."""
    low, high = percentile(sides, 1) * scale, percentile(sides, 99) * scale
    smallest = max(MIN_ANCHOR, 2 ** math.floor(math.log2(max(low, 1))))
    span = 2 ** (FPN_LEVELS - 1)
    if smallest * span < high:
        smallest = max(MIN_ANCHOR, 2 ** round(math.log2(math.sqrt(low * high) / math.sqrt(span))))
    return [smallest * 2**i for i in range(FPN_LEVELS)], (low, high)


def unlabeled_short_side(args, sample=50):
    """Median short side of the unlabeled images (a sample read from their headers), or None."""
    if args.unlabeled_json:
        images = load_coco_dict(args.unlabeled_json, require_categories=False)["images"]
        return short_side(images) if images and all("height" in im for im in images) else None
    files = [d["file_name"] for d in load_image_folder(args.unlabeled_images)]
    sides = []
    for path in files[:: max(1, len(files) // sample)][:sample]:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except OSError:  # an unreadable image: training skips and counts it
            continue
    return statistics.median(sides) if sides else None


def choose(args):
    """Every choice as (config lines, comment), from the files."""
    labeled = load_coco_dict(args.labeled_json)
    if not labeled["images"] or not labeled.get("annotations"):
        raise SystemExit(f"{args.labeled_json}: no images or no annotations: a labeled json needs both")
    classes = [c["name"] for c in sorted(labeled["categories"], key=lambda c: c["id"])]
    num_labeled, num_unlabeled = len(labeled["images"]), count_images(args.unlabeled_json, args.unlabeled_images)
    if num_unlabeled == 0:
        raise SystemExit("no unlabeled images found: give --unlabeled-json or --unlabeled-images with images")
    native = short_side(labeled["images"])
    other = unlabeled_short_side(args)
    size = args.short_side or round_to(native, 32)
    sides = box_sides(labeled)
    anchors, (low, high) = anchor_sizes(sides, size / native)
    total = num_labeled + num_unlabeled
    pretrained = bool(args.weights)
    iters = max(MIN_ITERS, round_to(LONGER * REFERENCE_ITERS * total / REFERENCE_IMAGES, 100))
    steps = tuple(round_to(iters * f, 100) for f in STEP_FRACTIONS)
    burn_in, period = round_to(iters * BURN_IN_FRACTION, 100), round_to(iters * EVAL_FRACTION, 100)
    checkpoint = round_to(iters * CHECKPOINT_FRACTION, 100)
    size_why = (f"--short-side {size}" if args.short_side else
                f"the labeled images' median short side, {native:g} px, rounded to 32")
    if other is not None and abs(other - native) > 0.1 * native:
        size_why += f" (the unlabeled images' is {other:g} px: they are resized to the same short side)"
    out = {
        "classes": classes, "num_labeled": num_labeled, "num_unlabeled": num_unlabeled, "short_side": size,
        "anchors": anchors, "iters": iters,
    }
    out["sections"] = [
        ("MODEL", [
            *([f'WEIGHTS: "{os.path.abspath(args.weights)}"'] if pretrained else []),
            ("ROI_HEADS:", f"  NUM_CLASSES: {len(classes)}",
             f"the labeled json's categories: {', '.join(classes)}"),
            ("ANCHOR_GENERATOR:", f"  SIZES: {[[a] for a in anchors]}",
             f"box sides (sqrt area) at the training size span {low:.0f}-{high:.0f} px (1st-99th "
             f"percentile); one size per FPN level, doubling, the smallest not under {MIN_ANCHOR} px"),
        ]),
        ("INPUT", [
            (f"MIN_SIZE_TRAIN: ({size},)" if not pretrained
             else f"MIN_SIZE_TRAIN: ({round_to(size / 2, 32)}, {round_to(size * 1.5, 32)})",
             f"MAX_SIZE_TRAIN: {2 * size if not pretrained else 2 * round_to(size * 1.5, 32)}",
             f"MIN_SIZE_TEST: {size}", f"MAX_SIZE_TEST: {2 * size}",
             "short side: " + size_why + ("" if not pretrained else
                                          "; training draws it from half to 1.5x, as COCO's 400-1200 around 800")
             + "; long side up to twice the short one"),
        ]),
        ("SOLVER", [
            (f"MAX_ITER: {iters}", f"STEPS: {steps}", f"CHECKPOINT_PERIOD: {checkpoint}",
             f"{total} training images: {REFERENCE_ITERS} iterations per {REFERENCE_IMAGES} images (the "
             f"generated datasets' measured schedule) times {LONGER:g} (the recommended recipe trains longer "
             f"instead of mixing pseudo-labels), at least {MIN_ITERS}; learning-rate steps at 75 % and 90 %"),
            *([("IMS_PER_BATCH_LABELED: 2", "IMS_PER_BATCH_UNLABELED: 8", "BASE_LR: 0.0025",
                "one GPU: 2 labeled + 8 unlabeled images a step, the COCO configs' per-GPU load, learning rate "
                "scaled with the batch (README: GPUs); multiply the three by your GPU count")] if pretrained else []),
        ]),
        ("TEST", [(f"EVAL_PERIOD: {period}", "teacher and student evaluated four times a run")]),
        ("SEMI", [
            (f"BURN_IN_ITERS: {burn_in}", f"VIS_PERIOD: {period}",
             "a quarter of the run supervised first: the teacher must be useful before it labels"
             if not pretrained else "a quarter of the run supervised first (the shipped small-data schedule)"),
        ]),
    ]
    return out


def render(args, choice):
    base = os.path.join(REPO, PRETRAINED_BASE if args.weights else SCRATCH_BASE)
    family = ("ResNet-50-FPN from your ImageNet weights, the COCO 'plus' recipe (uncertain detections "
              "ignored, box jitter on), trained longer rather than with mixed pseudo-labels" if args.weights else
              "ResNet-18-FPN with GroupNorm from scratch, the recommended recipe measured on the generated "
              "datasets (plus without box jitter, trained longer); with ImageNet R-50 weights, "
              "pass --weights for the COCO family")
    name = args.name
    lines = [
        f"# Written by tools/init_config.py from {os.path.abspath(args.labeled_json)}:",
        f"# {choice['num_labeled']} labeled and {choice['num_unlabeled']} unlabeled images, "
        f"{len(choice['classes'])} classes.",
        f"# Model and recipe: {family}.",
        "# First a 40-iteration smoke test: python train_net.py --config-file THIS SOLVER.MAX_ITER 40 "
        "TEST.EVAL_PERIOD 40 SEMI.BURN_IN_ITERS 20",
        f'_BASE_: "{base}"',
    ]
    for section, entries in choice["sections"]:
        lines.append(f"{section}:")
        for entry in entries:
            if isinstance(entry, str):
                lines.append(f"  {entry}")
                continue
            *values, why = entry
            lines.append(f"  # {why}")
            lines += [f"  {v}" for v in values]
    paths = [("LABELED_JSON", args.labeled_json), ("LABELED_IMAGES", args.labeled_images),
             ("UNLABELED_JSON", args.unlabeled_json), ("UNLABELED_IMAGES", args.unlabeled_images),
             ("VAL_JSON", args.val_json), ("VAL_IMAGES", args.val_images),
             ("TEST_JSON", args.test_json), ("TEST_IMAGES", args.test_images)]
    lines += ["DATASETS:", "  # your files, registered as NAME_labeled, NAME_unlabeled, NAME_val (and NAME_test)",
              "  CUSTOM:", f'    NAME: "{name}"']
    lines += [f'    {key}: "{os.path.abspath(path) if path else ""}"' for key, path in paths]
    lines += [f'  TRAIN_LABELED: ("{name}_labeled",)', f'  TRAIN_UNLABELED: ("{name}_unlabeled",)',
              f'  TEST: ("{name}_val",)',
              f'OUTPUT_DIR: "{args.output_dir or os.path.join("output", name)}"', ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="dataset name prefix (NAME_labeled, ...)")
    parser.add_argument("--labeled-json", required=True)
    parser.add_argument("--labeled-images", required=True)
    parser.add_argument("--unlabeled-json", default="", help="a COCO json of the unlabeled images (or a folder:)")
    parser.add_argument("--unlabeled-images", required=True, help="their folder")
    parser.add_argument("--val-json", required=True)
    parser.add_argument("--val-images", required=True)
    parser.add_argument("--test-json", default="", help="a held-out set to report on (optional)")
    parser.add_argument("--test-images", default="")
    parser.add_argument("--weights", default="", help="ImageNet R-50 weights (.pkl): the pretrained R-50 family")
    parser.add_argument("--short-side", type=int, default=0,
                        help="input short side in px (default: the labeled images' median, rounded to 32)")
    parser.add_argument("--output", required=True, help="the YAML to write")
    parser.add_argument("--output-dir", default="", help="the config's OUTPUT_DIR (default output/NAME)")
    args = parser.parse_args(argv)
    for flag, path in (("--labeled-json", args.labeled_json), ("--val-json", args.val_json),
                       ("--unlabeled-json", args.unlabeled_json), ("--test-json", args.test_json),
                       ("--weights", args.weights)):
        if path and not os.path.isfile(path):
            raise SystemExit(f"{flag} {path}: no such file")
    for flag, path in (("--labeled-images", args.labeled_images), ("--unlabeled-images", args.unlabeled_images),
                       ("--val-images", args.val_images), ("--test-images", args.test_images)):
        if path and not os.path.isdir(path):
            raise SystemExit(f"{flag} {path}: no such folder")
    choice = choose(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(render(args, choice))
    print(f"{args.output}: {len(choice['classes'])} classes, short side {choice['short_side']} px, anchors "
          f"{choice['anchors']}, {choice['iters']} iterations. Next:\n"
          f"  python train_net.py --config-file {args.output} SOLVER.MAX_ITER 40 TEST.EVAL_PERIOD 40 "
          "SEMI.BURN_IN_ITERS 20   # a smoke test\n"
          f"  python train_net.py --config-file {args.output}")
    return choice


if __name__ == "__main__":
    main()
