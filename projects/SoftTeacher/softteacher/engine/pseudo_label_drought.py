"""A warning when the teacher passes no pseudo-box for a while: the unsupervised loss is then 0
and the run trains as the supervised twin would (the report most often seen in semi-supervised
detectors' trackers: a threshold too high for a young teacher, or unlabeled images of other
classes)."""

import logging

import torch

logger = logging.getLogger(__name__)

QUANTILES = (0.5, 0.9, 0.99)


class PseudoLabelDrought:
    """Counts consecutive logging periods whose classification branch received no pseudo-box
    (``semi/pseudo_boxes_cls`` 0; burn-in periods log none and are not counted) and warns once
    after ``periods`` of them, with the teacher's score quantiles on the last batch."""

    def __init__(self, periods, log_period, cls_thresh, rpn_thresh):
        self.periods, self.log_period = periods, log_period
        self.cls_thresh, self.rpn_thresh = cls_thresh, rpn_thresh
        self.dry = 0
        self.warned = False

    @classmethod
    def from_config(cls, cfg):
        semi = cfg.SEMI
        return cls(semi.DROUGHT_WARN_PERIODS, semi.LOG_PERIOD, semi.CLS_PSEUDO_THRESH, semi.RPN_PSEUDO_THRESH)

    def update(self, iteration, logged, teacher_scores):
        """After a logging step's statistics (``logged``); returns the warning when it is given."""
        if self.periods <= 0 or self.warned or "semi/pseudo_boxes_cls" not in logged:
            return None
        self.dry = self.dry + 1 if logged["semi/pseudo_boxes_cls"] == 0 else 0
        if self.dry < self.periods:
            return None
        self.warned = True
        message = self.message(iteration, teacher_scores)
        logger.warning(message)
        return message

    def message(self, iteration, teacher_scores):
        """``teacher_scores``: the last batch's scores per image (the pseudo-labeller's), or None."""
        teacher_scores = torch.cat(teacher_scores) if teacher_scores else None
        if teacher_scores is None or teacher_scores.numel() == 0:
            scores = "the teacher detected nothing on the last batch (no score above MODEL.ROI_HEADS.SCORE_THRESH_TEST)"
        else:
            values = torch.quantile(teacher_scores.float().cpu(), torch.tensor(QUANTILES)).tolist()
            quantiles = ", ".join(f"{int(q * 100)} % {v:.2f}" for q, v in zip(QUANTILES, values))
            scores = (f"the teacher's detection scores on the last batch: {quantiles}, max "
                      f"{teacher_scores.max().item():.2f}")
        return (f"iteration {iteration + 1}: no pseudo-box reached the classification branch for {self.dry} "
                f"logging periods ({self.dry * self.log_period} iterations), so the unsupervised loss is 0. "
                f"{scores[0].upper()}{scores[1:]}, against SEMI.CLS_PSEUDO_THRESH {self.cls_thresh:g} and "
                f"SEMI.RPN_PSEUDO_THRESH {self.rpn_thresh:g}. Lower those two below the teacher's top scores, "
                "lengthen SEMI.BURN_IN_ITERS so the teacher is surer when pseudo-labels start, or check that "
                "the unlabeled images show the labeled classes. (SEMI.DROUGHT_WARN_PERIODS 0 silences this.)")
