"""Where a run executes: the torch device of this process (`torch_device`) and the CPU threads that
torch and the BLAS library may use (`thread_budget`)."""

from __future__ import annotations

import os

from .config import TrainConfig
from .distributed import Dist


def torch_device(name: str, d: Dist):
    """The torch device `name` (cpu, cuda, cuda:N, auto) means for this process: under DDP, CUDA
    runs use the GPU of the local rank."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device cuda was asked for, but torch sees no CUDA GPU")
        return torch.device("cuda", d.local_rank if d.world > 1 else (torch.device(name).index or 0))
    return torch.device(name)


def thread_budget(cfg: TrainConfig, d: Dist):
    """Threads for a CPU run of a compiled cell (a context that restores the BLAS pools after).

    The compiled kernels call OpenBLAS for their GEMMs; torch runs the rest (head, loss, Adam) on its
    own pool. Measured on 2 cores: torch's pool spinning beside BLAS made steps 3x slower, and with one
    core busy elsewhere, 2 BLAS threads made steps 10-36x slower than 1 (idle, 2 threads gained at
    most 1.3x). So by default torch gets 1 thread and BLAS half the cores per process (1 on 2 cores);
    --threads N gives both N. torch.nn ("native") and GPU runs keep the libraries' defaults."""
    import contextlib

    import scipy.linalg  # noqa: F401 - loads the OpenBLAS that Numba's np.dot calls, so the limit reaches it
    import torch
    from threadpoolctl import threadpool_limits

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
        return threadpool_limits(limits=cfg.threads, user_api="blas")
    if cfg.backend == "native" or torch_device(cfg.device, d).type != "cpu":
        return contextlib.nullcontext()
    torch.set_num_threads(1)
    return threadpool_limits(limits=max(1, (os.cpu_count() or 1) // (2 * d.world)), user_api="blas")
