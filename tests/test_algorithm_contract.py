"""Every registered algorithm keeps the plugin contract (smoke training, checkpoint round
trip, determinism), on the real matrix backend."""

import pytest

from harness import registry
from harness.testing import check_algorithm


@pytest.mark.parametrize("name", registry.algorithm_names())
def test_algorithm_contract(name: str) -> None:
    check_algorithm(name)


def test_contract_catches_a_nondeterministic_algorithm() -> None:
    """The check itself can fail: an algorithm that explores from the global RNG breaks it."""
    import numpy as np

    base = registry.get_algorithm("iql")

    class Sloppy(base):  # type: ignore[misc, valid-type]
        def act(self, step, memory, explore):  # type: ignore[no-untyped-def]
            actions, memory = super().act(step, memory, explore)
            if explore:
                actions = np.random.randint(0, step.avail_actions.shape[-1], size=actions.shape)
            return actions, memory

    Sloppy.name = "sloppy"
    with pytest.raises(AssertionError):
        check_algorithm(Sloppy)
