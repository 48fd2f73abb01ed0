"""Shared set-up of the CPU benchmarks: one thread budget for every contender, the machine's description."""

import os
import platform

import pytest

THREADS = int(os.environ.get("LSTMC_BENCH_THREADS", "2"))


def pytest_configure(config):
    import torch

    import lstmc

    torch.set_num_threads(THREADS)
    lstmc.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def machine():
    import numba
    import numpy
    import threadpoolctl
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "threads": THREADS, "python": platform.python_version(),
        "numpy": numpy.__version__, "numba": numba.__version__, "torch": torch.__version__,
        "blas": sorted({f"{d['internal_api']} {d.get('version')} {d.get('architecture')}"
                        for d in threadpoolctl.threadpool_info()}),
    }
