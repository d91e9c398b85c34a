"""Overcooked throughput as a ratio measured in one run: the batched backend (entity encoding,
padding, random actions) against overcooked-ai's own OvercookedEnv loop at the same batch.

`tox -e bench` runs it with timing enabled; in the default test run it runs once, briefly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.benchmark


def test_backend_throughput_ratio(measured: Callable[[str], dict[str, Any]]) -> None:
    """Batched backend env steps/s divided by raw OvercookedEnv steps/s, both measured here."""
    figure = measured("rollout/overcooked")
    assert figure["ratio"] > 0.1  # the encoding costs about as much as the game; 10x slower would be a regression
