"""Every registered algorithm keeps the plugin contract (smoke training, checkpoint round
trip, determinism), on the real matrix backend."""

import pytest

from harness import registry
from harness.testing import check_algorithm


@pytest.mark.parametrize("name", registry.algorithm_names())
def test_algorithm_contract(name: str) -> None:
    check_algorithm(name)


@pytest.mark.parametrize("name", registry.algorithm_names())
def test_every_config_field_says_what_it_is(name: str) -> None:
    """`harness show algorithm=NAME` has a meaning to print for every field (an attribute
    docstring on the Config dataclass or one of its bases)."""
    from harness.api import config_fields

    undocumented = [f.name for f in config_fields(registry.get_algorithm(name).Config) if not f.doc]
    assert not undocumented, f"{name}: fields without a docstring: {undocumented}"


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


@pytest.mark.parametrize("name", registry.algorithm_names())
def test_every_algorithm_trains_on_the_gpu_and_its_policy_loads_on_the_cpu(name: str) -> None:
    """device=cuda trains every registered algorithm (skipped where torch sees no GPU)."""
    import torch

    from harness.testing import check_on_device

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    check_on_device(name, "cuda")


def test_the_device_check_itself_runs_on_the_cpu() -> None:
    """`check_on_device` on the CPU: the same check the GPU runs, so it is known to work."""
    from harness.testing import check_on_device

    check_on_device("qmix", "cpu")
    check_on_device("maddpg", "cpu")
