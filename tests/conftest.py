import os
import tempfile

# Generated kernels go to a per-run cache so tests never depend on (or pollute) the user's cache;
# set LSTMC_CACHE_DIR yourself to reuse one between runs.
os.environ.setdefault("LSTMC_CACHE_DIR", os.path.join(tempfile.gettempdir(), "lstmc-test-cache"))
