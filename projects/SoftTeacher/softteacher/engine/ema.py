"""The teacher as an exponential moving average of the student.

After each student step: teacher <- m * teacher + (1 - m) * student, m = min(M, t / (t + 1)),
t counting the updates (an implicit warm-up: the first update copies the student). Floating-point
buffers are averaged too (the running statistics of trainable batch norm, as Unbiased Teacher
does); those that never change (frozen batch norm, pixel mean) stay equal in both. Integer buffers
(batch counts) are copied. During a supervised burn-in the teacher follows the student exactly and
t stays 0.
"""

import torch
from detectron2.engine import HookBase


@torch.no_grad()
def ema_update(teacher, student, momentum):
    """teacher <- momentum * teacher + (1 - momentum) * student, for every parameter and
    floating-point buffer, in one multi-tensor call (teacher + (1 - m) * (student - teacher));
    integer buffers are copied."""
    teacher_tensors = {**dict(teacher.named_parameters()), **dict(teacher.named_buffers())}
    pairs = []
    for name, tensor in [*student.named_parameters(), *student.named_buffers()]:
        target = teacher_tensors[name]
        if target.is_floating_point():
            pairs.append((target, tensor.detach()))
        else:
            target.copy_(tensor)
    torch._foreach_lerp_([t for t, _ in pairs], [s for _, s in pairs], 1.0 - momentum)


def ema_momentum(step, max_momentum):
    return min(max_momentum, step / (step + 1.0))


class EMATeacherHook(HookBase):
    def __init__(self, teacher, student, max_momentum=0.999, burn_in_iters=0):
        """
        Args:
            teacher: the teacher module (never wrapped by DDP).
            student: the student module, unwrapped.
        """
        self.teacher = teacher
        self.student = student
        self.max_momentum = max_momentum
        self.burn_in_iters = burn_in_iters
        self.step = 0

    def before_train(self):
        if self.trainer.start_iter == 0:  # a fresh run; a resumed one loaded its teacher
            self.teacher.load_state_dict(self.student.state_dict())

    def after_step(self):
        if self.trainer.iter < self.burn_in_iters:
            momentum = 0.0
        else:
            momentum = ema_momentum(self.step, self.max_momentum)
            self.step += 1
        ema_update(self.teacher, self.student, momentum)
        self.trainer.storage.put_scalar("semi/ema_momentum", momentum, smoothing_hint=False)

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state_dict):
        self.step = int(state_dict["step"])
