"""Pseudo-label thresholds that follow the teacher during training (opt-in; not in the paper).

- :class:`ScoreMixtureThresholds`: a score threshold per class for the RPN and classification
  pseudo-labels. Each class keeps a window of the teacher's recent detection scores; a
  two-component 1-D Gaussian mixture is fitted to it (EM from the window's minimum and maximum;
  refitted whenever a tenth of the window is new), and the threshold is the mean of the
  high-score component, the policy of Consistent-Teacher (Wang et al., CVPR 2023), clamped to a
  range. A class with too few scores yet keeps the fixed threshold.
- :class:`LabelDistributionThresholds`: per-class score thresholds that make the pseudo-boxes of
  each class as many as the labeled class distribution expects (LabelMatch, CVPR 2022).
- :class:`UncertaintyQuantileThreshold`: box jitter's uncertainty threshold set to a quantile of
  the recent pseudo-boxes' jitter uncertainties, so that the least uncertain fraction of pseudo-boxes
  trains box regression whatever the image scale, teacher and stage (the published fixed value
  passes almost no box on small images).

All update from every rank's pseudo-labels of the step (gathered), so all ranks agree, and all
save their windows in checkpoints.
"""

import torch
from detectron2.utils import comm


def gather_across_ranks(tensor):
    """The concatenation of a 1-D CPU tensor over all ranks (itself on one process)."""
    if comm.get_world_size() == 1:
        return tensor
    return torch.cat(comm.all_gather(tensor))


class _Window:
    """Ring buffers of the most recent values, one row per group (class)."""

    def __init__(self, groups, size):
        self.values = torch.zeros(groups, size)
        self.count = torch.zeros(groups, dtype=torch.long)  # values ever added, per group

    def add(self, values, groups):
        size = self.values.shape[1]
        order = torch.argsort(groups, stable=True)  # by group, arrival order kept within one
        groups, values = groups[order], values[order]
        new = torch.bincount(groups, minlength=len(self.count))
        rank = torch.arange(len(groups)) - (new.cumsum(0) - new)[groups]  # arrival rank in its group
        last = rank >= new[groups] - size  # only the latest ``size`` of a group can stay
        slots = (self.count[groups] + rank) % size
        self.values[groups[last], slots[last]] = values[last]
        self.count += new

    def filled(self):
        """(groups,) number of valid values; valid values are the first ``filled`` of each row
        in ring order, which does not matter to the statistics taken of them."""
        return self.count.clamp(max=self.values.shape[1])

    def state_dict(self):
        return {"values": self.values.clone(), "count": self.count.clone()}

    def load_state_dict(self, state):
        self.values.copy_(state["values"])
        self.count.copy_(state["count"])


def fit_two_gaussians(values, valid, iterations=25, min_var=1e-4):
    """EM for a two-component 1-D Gaussian mixture, per row of ``values`` (G, N) over the entries
    where ``valid``; components start at each row's minimum and maximum with the row's variance
    and equal weights. Returns (means, variances, weights), each (G, 2), component 1 the higher."""
    x = values.float()
    m = valid.float()
    n = m.sum(1).clamp(min=1)
    big = torch.finfo(x.dtype).max
    low = torch.where(valid, x, big).min(1).values
    high = torch.where(valid, x, -big).max(1).values
    mean = (x * m).sum(1) / n
    var = (((x - mean[:, None]) ** 2 * m).sum(1) / n).clamp(min=min_var)
    means = torch.stack([low, high], 1)
    variances = torch.stack([var, var], 1)
    weights = torch.full_like(means, 0.5)
    def log_density(k):  # of component k, weighted, up to the constant both share
        return -0.5 * (x - means[:, k:k + 1]) ** 2 / variances[:, k:k + 1] + torch.log(
            weights[:, k:k + 1] / variances[:, k:k + 1].sqrt())

    for _ in range(iterations):
        high = torch.sigmoid(log_density(1) - log_density(0)) * m  # responsibility of the high one
        resp = torch.stack([m - high, high], 2)
        total = resp.sum(1).clamp(min=1e-12)
        weights = (total / n[:, None]).clamp(min=1e-6)
        means = torch.einsum("gnk,gn->gk", resp, x) / total
        squares = (x[:, :, None] - means[:, None, :]) ** 2
        variances = (torch.einsum("gnk,gnk->gk", resp, squares) / total).clamp(min=min_var)
    order = means.argsort(1)
    return means.gather(1, order), variances.gather(1, order), weights.gather(1, order)


class ScoreMixtureThresholds:
    """Per-class score thresholds: the mean of the high component of a two-Gaussian mixture of
    the class's recent teacher scores, clamped to ``value_range``; ``fixed`` until a class has
    ``min_scores`` scores."""

    def __init__(self, num_classes, fixed, window, min_scores, value_range):
        self.window = _Window(num_classes, window)
        self.fixed = float(fixed)
        self.min_scores = min_scores
        self.value_range = tuple(float(v) for v in value_range)
        self.thresholds = torch.full((num_classes,), self.fixed)
        self.fitted_at = torch.full((num_classes,), -window)  # window count at each class's last fit

    def update(self, scores, classes, num_images=None):
        """Add a step's teacher scores (all ranks') and refit the classes whose window has changed
        by a tenth since their last fit; returns the (C,) thresholds. (``num_images``: unused.)"""
        scores = gather_across_ranks(scores.detach().float().cpu())
        classes = gather_across_ranks(classes.detach().cpu())
        self.window.add(scores, classes)
        size = self.window.values.shape[1]
        filled = self.window.filled()
        ready = filled >= self.min_scores
        refit = ready & (self.window.count - self.fitted_at >= max(1, size // 10))
        if refit.any():
            valid = torch.arange(size)[None, :] < filled[refit, None]
            means, _, _ = fit_two_gaussians(self.window.values[refit], valid)
            self.thresholds[refit] = means[:, 1].float().clamp(*self.value_range)
            self.fitted_at[refit] = self.window.count[refit]
        return self.thresholds  # a class not ready yet keeps the fixed value it started with

    def state_dict(self):
        return {"window": self.window.state_dict(), "thresholds": self.thresholds.clone(),
                "fitted_at": self.fitted_at.clone()}

    def load_state_dict(self, state):
        self.window.load_state_dict(state["window"])
        self.thresholds.copy_(state["thresholds"])
        self.fitted_at.copy_(state["fitted_at"])


class UncertaintyQuantileThreshold:
    """Box jitter's threshold: the ``pass_fraction`` quantile of the last ``window`` pseudo-boxes'
    jitter uncertainties (the current step's included)."""

    def __init__(self, pass_fraction, window):
        self.pass_fraction = float(pass_fraction)
        self.window = _Window(1, window)
        self.threshold = float("inf")

    def update(self, uncertainties):
        uncertainties = gather_across_ranks(uncertainties.detach().float().cpu())
        self.window.add(uncertainties, torch.zeros(len(uncertainties), dtype=torch.long))
        filled = int(self.window.filled()[0])
        if filled:
            self.threshold = float(torch.quantile(self.window.values[0, :filled], self.pass_fraction))
        return self.threshold

    def state_dict(self):
        return {"window": self.window.state_dict(), "threshold": self.threshold}

    def load_state_dict(self, state):
        self.window.load_state_dict(state["window"])
        self.threshold = float(state["threshold"])


class LabelDistributionThresholds:
    """Per-class score thresholds from the labeled set's class distribution (LabelMatch, Chen et
    al., CVPR 2022): over the teacher's detections on the last ``window_images`` unlabeled images,
    a class is expected to have images x (labeled boxes per image) x (its share of the labeled
    boxes) objects; its threshold is its ``fraction`` x expected-th highest score, clamped to
    ``value_range`` (``fixed`` until ``window_images`` images are seen). A frequent class gets a
    low threshold, a rare one a high one, so pseudo-boxes follow the labeled class ratio."""

    def __init__(self, class_counts, num_images, fixed, fraction, window_images, value_range):
        counts = torch.as_tensor(class_counts, dtype=torch.float64)
        self.boxes_per_class_image = counts / max(num_images, 1)  # (C,) labeled boxes per image
        self.fixed = float(fixed)
        self.fraction = float(fraction)
        self.window_images = int(window_images)
        self.value_range = tuple(float(v) for v in value_range)
        self.thresholds = torch.full((len(counts),), self.fixed)
        self.steps = []  # (scores, classes, images) of the recent steps, images <= window_images in all

    @classmethod
    def from_dataset_dicts(cls, dataset_dicts, num_classes, **kwargs):
        counts = torch.zeros(num_classes)
        for record in dataset_dicts:
            for annotation in record.get("annotations", []):
                counts[annotation["category_id"]] += 1
        return cls(counts, len(dataset_dicts), **kwargs)

    def expected_objects(self, num_images):
        """(C,) objects of each class expected on ``num_images`` images like the labeled ones."""
        return self.boxes_per_class_image * num_images

    def update(self, scores, classes, num_images):
        """Add a step's teacher scores and classes on ``num_images`` images (all ranks') and set
        every class's threshold from the window; returns the (C,) thresholds."""
        scores = gather_across_ranks(scores.detach().float().cpu())
        classes = gather_across_ranks(classes.detach().cpu())
        images = int(gather_across_ranks(torch.tensor([num_images])).sum())
        self.steps.append((scores, classes, images))
        while sum(s[2] for s in self.steps) - self.steps[0][2] >= self.window_images:
            self.steps.pop(0)
        seen = sum(s[2] for s in self.steps)
        if seen < self.window_images:
            return self.thresholds
        all_scores = torch.cat([s[0] for s in self.steps])
        all_classes = torch.cat([s[1] for s in self.steps])
        ranks = (self.fraction * self.expected_objects(seen)).ceil().long().clamp(min=1)
        for c in range(len(self.thresholds)):
            ordered = all_scores[all_classes == c].sort(descending=True).values
            # fewer detections than the rank: every one of them passes down to the range's floor
            value = ordered[ranks[c] - 1] if len(ordered) >= ranks[c] else self.value_range[0]
            self.thresholds[c] = float(min(max(value, self.value_range[0]), self.value_range[1]))
        return self.thresholds

    def state_dict(self):
        return {"thresholds": self.thresholds.clone(), "steps": list(self.steps)}

    def load_state_dict(self, state):
        self.thresholds.copy_(state["thresholds"])
        self.steps = list(state["steps"])
