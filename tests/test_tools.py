"""The user's last mile: predict on a folder, pre-annotation export, what to label next."""

import json
import os
import shutil

import cv2
import pytest
import torch
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.modeling import build_model
from pycocotools.coco import COCO

from softteacher import load_config
from softteacher.annotation import binary_entropy
from softteacher.export import export_plain_model
from softteacher.inference import ImageReader, find_images
from softteacher.modeling import PseudoLabeler
from softteacher.tools import label_next, predict, pseudo_label

from conftest import config_path

CONFIG = config_path("Shapes", "soft_teacher_R18_FPN_10pct.yaml")
OPTS = ["DATASETS.TEST", "('tiny_shapes_val',)", "MODEL.DEVICE", "cpu", "SEMI.PSEUDO_SCORE_THRESH", "0.0"]


@pytest.fixture(scope="module")
def checkpoint(tiny_shapes, tmp_path_factory):
    """A training checkpoint (random weights: a random head scores every class about 1/6, so it
    detects plenty) and a folder of the tiny validation images plus one corrupt file."""
    root = tmp_path_factory.mktemp("tools")
    cfg = load_config(CONFIG, OPTS)
    torch.manual_seed(11)
    student, teacher = build_model(cfg), build_model(cfg)
    torch.save({"model": student.state_dict(), "teacher": teacher.state_dict()}, root / "model_final.pth")
    images = root / "my_images"
    shutil.copytree(os.path.join(tiny_shapes, "val"), images)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return root


def by_file(records, key=lambda r: r):
    return sorted(((r["file_name"], r["category_id"], *[round(v, 3) for v in r["bbox"]], round(r["score"], 5))
                   for r in map(key, records)))


def test_predict_json_on_a_folder_equals_what_the_evaluator_scores(checkpoint, tiny_shapes, tmp_path):
    out = tmp_path / "predictions"
    predictions = predict.main(["--weights", str(checkpoint / "model_final.pth"), "--config-file", CONFIG,
                                "--input", str(checkpoint / "my_images"), "--output", str(out),
                                "--confidence-threshold", "0.05", *OPTS])
    cfg = load_config(CONFIG, OPTS)
    model = build_model(cfg)
    model.load_state_dict(torch.load(checkpoint / "model_final.pth", weights_only=True)["teacher"])
    model.eval()
    evaluator = COCOEvaluator("tiny_shapes_val", output_dir=str(tmp_path / "eval"))
    inference_on_dataset(model, build_detection_test_loader(cfg, "tiny_shapes_val"), evaluator)
    with open(tmp_path / "eval" / "coco_instances_results.json") as f:
        scored = json.load(f)
    with open(os.path.join(tiny_shapes, "annotations", "instances_val.json")) as f:
        names = {im["id"]: im["file_name"] for im in json.load(f)["images"]}
    assert len(predictions) > 50
    assert by_file(predictions) == by_file(scored, lambda r: {**r, "file_name": names[r["image_id"]]})
    with open(out / "predictions.json") as f:
        assert json.load(f) == predictions
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert pictures == sorted(n.replace(".jpg", ".png") for n in names.values())  # broken.jpg skipped


def test_predict_reads_an_exported_model_without_a_config(checkpoint, tmp_path):
    cfg = load_config(CONFIG, OPTS)
    export_plain_model(cfg, str(checkpoint / "model_final.pth"), "teacher", str(tmp_path / "exported"),
                       ["a", "b", "c", "d", "e"], [3, 5, 7, 9, 11])
    predictions = predict.main(["--weights", str(tmp_path / "exported"), "--input",
                                str(checkpoint / "my_images" / "val_0000*.jpg"), "--output", str(tmp_path / "out"),
                                "--confidence-threshold", "0.05", "--no-pictures", "MODEL.DEVICE", "cpu"])
    assert predictions and {p["category_id"] for p in predictions} <= {3, 5, 7, 9, 11}
    # the pseudo-labeller runs on a plain detectron2 model too (StandardROIHeads in its config)
    coco = pseudo_label.main(["--weights", str(tmp_path / "exported"), "--input", str(checkpoint / "my_images"),
                              "--output", str(tmp_path / "pre.json"), "--min-score", "0.05", "MODEL.DEVICE", "cpu"])
    assert coco["annotations"] and {c["name"] for c in coco["categories"]} == {"a", "b", "c", "d", "e"}


def labeller_reference(cfg, checkpoint, records):
    """The pseudo-labeller's own detections on the tools' inputs (same order, same jitter noise)."""
    model = build_model(cfg)
    model.load_state_dict(torch.load(checkpoint / "model_final.pth", weights_only=True)["teacher"])
    model.eval()
    labeler, reader = PseudoLabeler(cfg, model), ImageReader(cfg)
    torch.manual_seed(0)
    out = {}
    for record in records:
        inputs = reader(record)
        if inputs is not None:
            out[record["rel_name"]] = labeler.label([inputs])[0][0]
    return out


def test_pre_annotations_load_in_pycocotools_with_the_pseudo_labellers_keep_flags(checkpoint, tmp_path):
    folder = str(checkpoint / "my_images")
    records = find_images([folder])
    # thresholds inside the score and uncertainty range, so that each flag is both set and not
    probe = labeller_reference(load_config(CONFIG, OPTS), checkpoint, records)
    scores = torch.cat([d.scores for d in probe.values()])
    uncertainty = torch.cat([d.uncertainty for d in probe.values()])
    opts = OPTS + ["SEMI.RPN_PSEUDO_THRESH", f"{scores.quantile(0.5).item():.6f}",
                   "SEMI.CLS_PSEUDO_THRESH", f"{scores.quantile(0.8).item():.6f}",
                   "SEMI.REG_UNCERTAINTY_THRESH", f"{uncertainty.quantile(0.5).item():.6f}"]
    reference = labeller_reference(load_config(CONFIG, opts), checkpoint, records)

    output = tmp_path / "pre.json"
    pseudo_label.main(["--weights", str(checkpoint / "model_final.pth"), "--config-file", CONFIG,
                       "--input", folder, "--output", str(output), *opts])
    coco = COCO(str(output))
    assert len(coco.getImgIds()) == len(reference) and coco.dataset["info"]["skipped_images"][0]["file_name"].endswith(
        "broken.jpg")
    flags = {b: [] for b in ("rpn", "cls", "reg")}
    for image in coco.dataset["images"]:
        expected = reference[image["file_name"]]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert len(anns) == len(expected)
        for ann, i in zip(anns, range(len(expected))):
            used = set(ann["used_by"].split(",")) - {""}
            for branch in flags:
                assert (branch in used) == bool(expected.get(f"keep_{branch}")[i]), (image["file_name"], i, branch)
                flags[branch].append(branch in used)
            assert ann["score"] == pytest.approx(float(expected.scores[i]), abs=1e-4)
            assert ann["jitter_uncertainty"] == pytest.approx(float(expected.uncertainty[i]), abs=1e-5)
            assert ann["attributes"]["used_by"] == ann["used_by"]
            assert ann["category_id"] == int(expected.pred_classes[i]) + 1
    assert all(any(f) and not all(f) for f in flags.values())


def test_pre_annotations_leave_out_what_training_would_only_ignore(checkpoint, tmp_path):
    folder = str(checkpoint / "my_images")
    probe = labeller_reference(load_config(CONFIG, OPTS), checkpoint, find_images([folder]))
    cut = torch.cat([d.scores for d in probe.values()]).quantile(0.5).item()
    opts = OPTS[:-2] + ["SEMI.PSEUDO_SCORE_THRESH", f"{cut:.6f}", "SEMI.IGNORE_UNCERTAIN", "True",
                        "SEMI.IGNORE_MIN_SCORE", "0.0", "MODEL.PROPOSAL_GENERATOR.NAME", "PseudoLabelRPN"]
    output = tmp_path / "pre.json"
    pseudo_label.main(["--weights", str(checkpoint / "model_final.pth"), "--config-file", CONFIG,
                       "--input", folder, "--output", str(output), *opts])
    with open(output) as f:
        scores = [a["score"] for a in json.load(f)["annotations"]]
    assert scores and min(scores) > cut - 1e-4  # (scores written to 4 decimals) the rest: ignored regions only


def test_label_next_ranks_by_summed_score_entropy_and_draws_a_contact_sheet(checkpoint, tmp_path):
    folder = str(checkpoint / "my_images")
    entries = label_next.main(["--weights", str(checkpoint / "model_final.pth"), "--config-file", CONFIG,
                               "--input", folder, "--output", str(tmp_path), "--top", "3", "--sheet", "4", *OPTS])
    reference = labeller_reference(load_config(CONFIG, OPTS), checkpoint, find_images([folder]))
    expected = {name: binary_entropy(d.scores).sum().item() for name, d in reference.items()}
    assert len(entries) == len(expected) == 6
    for entry in entries:
        assert entry["uncertainty"] == pytest.approx(expected[os.path.relpath(entry["file_name"], folder)], abs=1e-3)
    assert [e["uncertainty"] for e in entries] == sorted((e["uncertainty"] for e in entries), reverse=True)
    with open(tmp_path / "ranking.json") as f:
        ranking = json.load(f)
    assert [e["file_name"] for e in ranking["images"]] == [e["file_name"] for e in entries]
    assert ranking["skipped"][0]["file_name"].endswith("broken.jpg")
    assert (tmp_path / "label_next.txt").read_text().split() == [e["file_name"] for e in entries[:3]]
    sheet = cv2.imread(str(tmp_path / "label_next.png"))
    assert sheet is not None and sheet.shape[1] > 4 * label_next.SHEET_SIDE * 0.9  # 4 panels a row
