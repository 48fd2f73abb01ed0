"""Checkpoint IO: everything the next step depends on, written so that a killed run resumes with
bit-identical losses, and read so that a crafted file cannot run code.

A checkpoint holds the model, optimizer and scheduler states, every RNG state of every rank, the
sampler, the loop's bookkeeping and the best weights so far (`save`). It holds only tensors and
plain data, written to a temporary file then renamed (lstmc.files.atomic_write), and is read with
torch.load(weights_only=True) (`load_checkpoint`); anything else raises CheckpointError, one line.
`restore` loads one into a fresh run after checking that it was written by the same run."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from ..files import atomic_write
from .config import TrainConfig, config_dict
from .distributed import Dist

CKPT_VERSION = 2   # 2: RNG states as tensors and plain lists, loadable with weights_only=True

# what may differ between a run and the run it resumes
_RESUME_FREE = {"resume", "out", "stop_at", "progress", "steps", "patience", "validate", "threads", "target",
                "time_budget",
                "eval_every", "checkpoint_every"}


def rng_state() -> dict:
    """Every RNG state as tensors and plain Python data (what torch.load(weights_only=True) reads)."""
    import torch

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    s = {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
         "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    import torch

    torch.set_rng_state(s["torch"])
    name, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(s["python"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def seed_all(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class CheckpointError(ValueError):
    """A checkpoint file lstmc cannot or will not load (truncated, corrupted, not lstmc's, or
    holding objects that unpickling would have to run code for). The message is one line: which
    file, what is wrong, what to do."""


_CKPT_KEYS = ("version", "config", "world_size", "model", "optimizer", "scheduler", "rng", "sampler", "loop",
              "best_model")


def load_checkpoint(path) -> dict:
    """A checkpoint.pt as a dict, loaded with torch.load(weights_only=True): tensors and plain
    Python data only, so a crafted file cannot run code while it is read. Anything else, and any
    file that is not a complete checkpoint of this format, raises CheckpointError."""
    import pickle
    import re
    import zipfile

    import torch

    path = Path(path)
    not_ours = f"{path} is not a readable lstmc checkpoint"
    fresh = "delete it (or choose another --out) to start afresh"
    try:
        size = path.stat().st_size
        complete = zipfile.is_zipfile(path)     # torch.save writes a zip archive; its directory comes last
    except FileNotFoundError:
        raise
    except OSError as e:
        raise CheckpointError(f"{not_ours} ({_first_line(e)}); check its permissions") from None
    if not complete:
        what = "an empty file" if size == 0 else f"{size} bytes, not a complete PyTorch file"
        raise CheckpointError(f"{not_ours} ({what}): it is truncated or corrupted; {fresh}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(f"{not_ours}: it holds Python objects other than tensors and plain data "
                                  f"({', '.join(sorted(set(found)))}), which could run code when loaded, so lstmc "
                                  f"refuses it. Load only checkpoints you wrote; one from an older lstmc cannot be "
                                  f"resumed: {fresh}") from None
        raise CheckpointError(f"{not_ours} ({_first_line(e)}): it is truncated or corrupted; {fresh}") from None
    except Exception as e:      # torch's zip reader, EOFError, KeyError...: a damaged or foreign file
        raise CheckpointError(f"{not_ours} ({_first_line(e)}): it is truncated or corrupted; {fresh}") from None
    if not isinstance(ck, dict) or "version" not in ck:
        raise CheckpointError(f"{not_ours}: it is a PyTorch file, but not one lstmc train wrote; {fresh}")
    if ck["version"] != CKPT_VERSION:
        raise CheckpointError(f"{not_ours}: it has format version {ck['version']!r}, this lstmc reads version "
                              f"{CKPT_VERSION}; {fresh}")
    missing = [k for k in _CKPT_KEYS if k not in ck]
    if missing:
        raise CheckpointError(f"{not_ours}: it lacks {', '.join(missing)}; {fresh}")
    return ck


def _first_line(e: BaseException) -> str:
    """An exception as a short phrase: its type and the first sentence of its message."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = text.split(". ")[0][:160]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _plain(obj):
    """`obj` with NumPy scalars and arrays turned into Python numbers and lists (exactly), so that a
    checkpoint holds nothing torch.load(weights_only=True) would refuse."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    return obj


def _check_resume(saved: dict, cfg: TrainConfig) -> None:
    now = config_dict(cfg)
    if now.get("data") is not None and saved.get("data") == now["data"] and saved.get("data_sha256") != now["data_sha256"]:
        raise ValueError(f"--resume: the data file {now['data']} changed since the checkpoint was written (sha256 "
                         f"{str(saved.get('data_sha256'))[:12]}... then, {now['data_sha256'][:12]}... now); restore "
                         f"it, or start afresh with another --out")
    diff = [k for k in now if k not in _RESUME_FREE and saved.get(k) != now[k]]
    if diff:
        what = ", ".join(f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in diff)
        raise ValueError(f"--resume: the checkpoint was written by a different run ({what}); "
                         f"use the same options or another --out")



def restore(path: Path, cfg: TrainConfig, d: Dist, model, opt, sched) -> tuple[dict, dict | None]:
    """Load the checkpoint at `path` into `model`, `opt`, `sched` and this rank's RNGs, after checking
    that the same run (same options, as many processes) wrote it. Returns the loop's bookkeeping and
    the best weights so far. CheckpointError (one line) for anything but a good checkpoint."""
    ck = load_checkpoint(path)
    _check_resume(ck["config"], cfg)
    if ck["world_size"] != d.world:
        raise ValueError(f"{path} was written by {ck['world_size']} processes; resume with as many "
                         f"(now {d.world}) to continue exactly")
    try:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if sched is not None and ck["scheduler"] is not None:
            sched.load_state_dict(ck["scheduler"])
        loop = ck["loop"]
        best_state = ck["best_model"]
        set_rng_state(ck["rng"][d.rank])
        if not isinstance(loop, dict) or not {"step", "history", "train_losses"} <= loop.keys():
            raise KeyError("loop: the training loop's bookkeeping")
    except (RuntimeError, KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path} is not a readable lstmc checkpoint: its contents do not fit this "
                              f"run ({_first_line(e)}); delete it (or choose another --out) to start "
                              f"afresh") from None
    return loop, best_state


def gather_rng_states(d: Dist) -> list:
    """Every rank's RNG states, in rank order (a collective: every rank calls it)."""
    import torch.distributed as dist

    rngs = [rng_state()]
    if d.world > 1:
        rngs = [None] * d.world
        dist.all_gather_object(rngs, rng_state())
    return rngs


def save(path: Path, cfg: TrainConfig, d: Dist, model, opt, sched, sampler, loop: dict, best_state, rngs: list) -> None:
    """Write a checkpoint (rank 0 only; `rngs` from gather_rng_states)."""
    import torch

    ck = {"version": CKPT_VERSION, "config": config_dict(cfg), "world_size": d.world,
          "model": model.state_dict(), "optimizer": opt.state_dict(),
          "scheduler": sched.state_dict() if sched is not None else None,
          "rng": rngs, "sampler": sampler.state_dict(), "loop": _plain(loop), "best_model": best_state}
    atomic_write(path, lambda f: torch.save(ck, f))


def save_model(path: Path, cfg: TrainConfig, model, step: int, task=None) -> None:
    """Write model.pt: the config, the weights (those of `step`, the best validation) and, for a task
    read from a data file, `data`: its columns, normalisation and classes (lstmc.datafile's
    task.data_info), what applying the model to new rows needs."""
    import torch

    ck = {"config": config_dict(cfg), "model": model.state_dict(), "step": step}
    info = getattr(task, "data_info", None)
    if info is not None:
        ck["data"] = _plain(info)
    atomic_write(path, lambda f: torch.save(ck, f))
