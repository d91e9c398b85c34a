"""Contract test for the myalg plugin (scaffolded by `harness new algorithm myalg`)."""

from harness.testing import check_algorithm


def test_myalg_keeps_the_plugin_contract() -> None:
    check_algorithm("myalg")
