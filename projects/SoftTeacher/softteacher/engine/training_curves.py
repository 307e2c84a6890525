"""A picture of training that the output folder keeps up to date: AP of the teacher and the student
(or of the supervised model) at every evaluation, and pseudo-box precision and recall per branch
against the unlabeled images' hidden ground truth, when they have it. Written to
``OUTPUT_DIR/training_curves.png`` after every evaluation; at the end the AP table is logged."""

import logging
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from detectron2.engine import HookBase  # noqa: E402
from detectron2.utils import comm  # noqa: E402

logger = logging.getLogger(__name__)

MODELS = {"teacher": "teacher/bbox/AP", "student": "student/bbox/AP", "model": "bbox/AP"}
BRANCHES = ("rpn", "cls", "reg")


def moving_average(values, window):
    if len(values) < window:
        return np.asarray(values, dtype=float)
    return np.convolve(values, np.ones(window) / window, mode="valid")


def evaluated_ap(storage, max_iter=None):
    """{model: [(iteration, AP)]} of every evaluation so far (at the iteration count it followed:
    detectron2 logs periodic evaluations one iteration before, the final one at MAX_ITER)."""
    histories = storage.histories()
    cap = max_iter if max_iter is not None else float("inf")
    return {
        model: [(int(min(it + 1, cap)), value) for value, it in histories[key].values()]
        for model, key in MODELS.items()
        if key in histories
    }


def plot_training_curves(path, storage, max_iter=None, window=20):
    histories = storage.histories()
    quality = {
        (kind, branch): histories[f"semi/{kind}_{branch}"].values()
        for kind in ("precision", "recall")
        for branch in BRANCHES
        if f"semi/{kind}_{branch}" in histories
    }
    fig, axes = plt.subplots(1, 2 if quality else 1, figsize=(12 if quality else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for model, points in evaluated_ap(storage, max_iter).items():
        ax.plot(*zip(*points), marker="o", label=model)
    ax.set(xlabel="iteration", ylabel="bbox AP", title="AP at each evaluation")
    ax.legend()
    if quality:
        ax = axes[0, 1]
        for (kind, branch), points in quality.items():
            values, iters = zip(*points)
            smooth = moving_average(values, window)
            ax.plot(np.asarray(iters[len(iters) - len(smooth):]) + 1, smooth,
                    "-" if kind == "precision" else "--", label=f"{kind} {branch}")
        ax.set(xlabel="iteration", ylabel="at IoU 0.5", ylim=(0, 1),
               title=f"pseudo-box quality (moving average of {window})")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class TrainingCurvesHook(HookBase):
    def __init__(self, output_dir):
        self.path = os.path.join(output_dir, "training_curves.png")
        self.evaluations_seen = 0

    def after_step(self):
        if not comm.is_main_process():
            return
        evaluations = sum(len(v) for v in evaluated_ap(self.trainer.storage).values())
        if evaluations > self.evaluations_seen:  # an EvalHook just added results
            self.evaluations_seen = evaluations
            plot_training_curves(self.path, self.trainer.storage, self.trainer.max_iter)

    def after_train(self):
        if not comm.is_main_process():
            return
        results = evaluated_ap(self.trainer.storage, self.trainer.max_iter)
        if not results:
            return
        plot_training_curves(self.path, self.trainer.storage, self.trainer.max_iter)
        iterations = sorted({it for points in results.values() for it, _ in points})
        lines = ["iteration | " + " | ".join(f"{m} AP" for m in results)]
        for it in iterations:
            cells = [next((f"{ap:.1f}" for i, ap in results[m] if i == it), "-") for m in results]
            lines.append(f"{it:>9} | " + " | ".join(f"{c:>{len(m) + 3}}" for c, m in zip(cells, results)))
        logger.info("AP over training (%s):\n%s", self.path, "\n".join(lines))
