"""The optimizer and the learning-rate schedule a config names."""

from __future__ import annotations

from ..tasks import Task
from .config import TrainConfig


def make_optimizer(cfg: TrainConfig, params):
    import torch

    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainConfig, opt, task: Task):
    """(scheduler, per_step): per-step schedules step after every optimizer step; plateau after
    every evaluation, on the validation metric."""
    import torch

    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.steps // 3), gamma=0.1), True
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr * 0.01), True
    if cfg.schedule == "plateau":
        mode = "max" if task.higher_is_better else "min"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=2), False
    return None, True
