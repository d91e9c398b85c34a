"""SMAX backend throughput vs raw jitted-and-vmapped SMAX stepping, at the same batch size.

Raw: JaxMARL's transition alone, vmapped and jitted, random actions drawn inside the compiled
function, nothing copied to the host (`scenarios.smax.JittedSmaxLoop`). Backend: `SmaxBackend.step`
as the runner calls it, random available actions chosen in numpy, every Step array copied to
numpy. Only env steps of running episodes count for the backend (an env whose battle ended
waits for the batch's next reset), so the ratio is the share of raw speed a learner gets.

`rollout/smax_3m`: JaxMARL's map 3m on both sides, the backend playing continuous episodes
(finished battles restart inside its step; each restart step is not counted).

`train/<algorithm>@protoss16|32` and `run/qmix@protoss`: training and whole runs on
zero_shot_smacv2's protoss task against the raw 5 v 5 step (see `harness.bench`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness import bench

pytestmark = pytest.mark.benchmark


def test_smax_backend_vs_raw_jitted_smax(measured: Callable[[str], dict[str, Any]]) -> None:
    measured("rollout/smax")


def test_smax_3m_continuous_vs_raw_jitted_3m(measured: Callable[[str], dict[str, Any]]) -> None:
    measured("rollout/smax_3m")


# zero_shot_smacv2's protoss task: too slow to smoke-test in the default run (each compiles SMAX
# and fills a replay before it times anything), so only `tox -e bench` (or -m slow) runs them.
@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, f in bench.FIGURES.items() if "zero_shot_smacv2" in f.tags])
def test_zero_shot_smacv2_training_and_whole_run_vs_raw_jitted_smax(measured: Callable[[str], dict[str, Any]],
                                                                 name: str) -> None:
    measured(name)
