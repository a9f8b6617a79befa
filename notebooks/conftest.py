"""nbval runs each notebook in a kernel started from this process: give it the same environment the stored
outputs were produced with (see run_notebooks.py)."""

from run_notebooks import apply_kernel_env

apply_kernel_env()
