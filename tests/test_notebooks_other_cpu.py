"""Strict nbval on every notebook once more, with the float kernels of another processor forced.

The stored notebook outputs must hold on any CPU, not only on the one that produced them: float32 sums round
differently with AVX-512, AVX2 or plain kernels, and a learner's laptop, Colab or the next CI machine may have any of
them. The plain test run already checks the notebooks with this machine's kernels; this test re-runs the check in a
subprocess whose torch, MKL and oneDNN use a lower instruction set (read at start-up from the environment, so the
notebook kernels nbval starts inherit it): AVX2 on an AVX-512 machine, the portable kernels on an AVX2 machine. If a
printed digit, a ranking or a verdict depends on the rounding, this fails where the plain run passes.

Run it alone with ``pytest -m other_cpu``; skip it with ``-m "not other_cpu"`` (it takes as long as the nbval pass).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

KERNELS = {
    # this machine's best kernels -> what the subprocess is forced to use instead
    "AVX512": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"},
    "AVX2": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "DNNL_MAX_CPU_ISA": "SSE41"},
}


def other_kernels() -> dict[str, str]:
    """The environment that makes torch, MKL and oneDNN compute like a CPU one instruction-set level below this one."""
    here = torch.backends.cpu.get_cpu_capability()
    if here not in KERNELS:
        pytest.skip(f"this CPU's torch kernels are {here!r}: there is no lower level to force")
    return KERNELS[here]


@pytest.mark.other_cpu
def test_stored_notebook_outputs_hold_with_another_cpus_kernels():
    forced = other_kernels()
    env = os.environ | forced
    command = [sys.executable, "-m", "pytest", "notebooks", "-q", "-p", "no:cacheprovider", "-rf"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "(no output)"
    checked = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"nbval with {forced} (torch kernels: {checked}): {summary}")
    assert checked == forced["ATEN_CPU_CAPABILITY"].upper(), f"torch ignored {forced}: it used {checked}"
    assert result.returncode == 0, (
        f"strict nbval fails with another CPU's kernels ({forced}): a stored output depends on float rounding.\n"
        + result.stdout[-6000:]
        + result.stderr[-2000:]
    )
