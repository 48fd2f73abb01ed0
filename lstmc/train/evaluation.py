"""Measuring a model: its loss and metric on a whole split (`evaluate`), and its gradients on one
batch against those of a float64 copy running the `reference` backend (`validate_gradients`)."""

from __future__ import annotations

import copy

import numpy as np

from ..tasks import Task


def evaluate(model, task: Task, split: str, device, batch: int = 512) -> tuple[float, float]:
    """(mean loss, metric) of `model` on a whole split, in eval mode. Consumes no random numbers."""
    import torch

    was = model.training
    model.eval()
    parts = {"loss": 0.0, "n": 0, "correct": 0}
    n = task.size(split)
    with torch.no_grad():
        for a in range(0, n, batch):
            idx = np.arange(a, min(n, a + batch))
            x, y = task.batch(split, idx)
            out = model(x.to(device), {k: v.to(device) for k, v in task.batch_inputs(split, idx).items()})
            for k, v in task.score_parts(out.cpu(), y).items():
                parts[k] += v
    model.train(was)
    return task.metric_from(parts)


def validate_gradients(model, task: Task, x, y, inputs: dict | None = None) -> dict:
    """One batch's gradients from the training model and from a float64 copy of it whose Recurrent
    runs the `reference` backend (NumPy, the living definition of the cell), compared parameter by
    parameter with lstmc.check.max_rel (absolute below 1, relative above). Both run in eval mode (no
    dropout, zoneout masks at their expectation) through torch.autograd.grad, so the training state
    (.grad, every RNG) is untouched. `inputs`: the batch's extra per-step inputs (task.batch_inputs)."""
    import torch

    from ..check import max_rel

    if not hasattr(model.rnn, "cell_params"):
        raise ValueError("--validate compares lstmc's compiled cell with its reference; backend 'native' "
                         "(torch.nn) has none")
    device = next(model.parameters()).device
    ref = copy.deepcopy(model).cpu().double()       # deepcopy: no initialisation, no random numbers
    ref.rnn.backend = "reference"
    grads = {}
    was = model.training
    try:
        runs = (("model", model, x.to(device), y.to(device), device), ("ref", ref, x.cpu(), y.cpu(), "cpu"))
        for name, m, xx, yy, where in runs:
            uu = {k: v.to(where) for k, v in (inputs or {}).items()}
            m.eval()
            if name == "ref":
                xx = xx.double() if xx.is_floating_point() else xx
                yy = yy.double() if yy.is_floating_point() else yy
            named = [(k, p) for k, p in m.named_parameters() if p.requires_grad]
            loss = task.loss_fn(m(xx, uu), yy)     # the model casts the inputs to its dtype
            g = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
            grads[name] = ({k: (gi.detach().cpu().double().numpy() if gi is not None else np.zeros(tuple(p.shape)))
                            for (k, p), gi in zip(named, g)}, float(loss.detach()))
    finally:
        model.train(was)
    worst, worst_name = 0.0, ""
    for k, g in grads["ref"][0].items():
        e = max_rel(grads["model"][0][k], g)
        if e >= worst:
            worst, worst_name = e, k
    return {"max_diff": worst, "param": worst_name, "loss": grads["model"][1],
            "loss_diff": abs(grads["model"][1] - grads["ref"][1]),
            "backend": getattr(model.rnn, "last_backend", None)}
