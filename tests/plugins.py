"""Algorithms that misbehave on purpose, loaded by tests as `plugins:Class`."""

from __future__ import annotations

from harness import registry

VDN = registry.get_algorithm("vdn")


class ExplodingVDN(VDN):  # type: ignore[misc, valid-type]
    """Learns normally, then reports a NaN loss (as a diverging learner would)."""

    def update(self) -> dict[str, float]:
        metrics = super().update()
        return {**metrics, "loss": float("nan")} if metrics else metrics


class CrashingVDN(VDN):  # type: ignore[misc, valid-type]
    """Raises inside acting, like a bug in a plugin."""

    def act(self, step, memory, explore):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom: a bug in the plugin")


class ExitingVDN(VDN):  # type: ignore[misc, valid-type]
    """Calls sys.exit inside acting, as a careless plugin might."""

    def act(self, step, memory, explore):  # type: ignore[no-untyped-def]
        import sys

        sys.exit(3)


class HardExitingVDN(VDN):  # type: ignore[misc, valid-type]
    """Ends its process with os._exit inside acting: what a segfault in a native extension does."""

    def act(self, step, memory, explore):  # type: ignore[no-untyped-def]
        import os

        os._exit(7)


class TerminatingVDN(VDN):  # type: ignore[misc, valid-type]
    """Sends SIGTERM to its own process inside acting: from outside, the same as the pool shutting
    an innocent neighbour down."""

    def act(self, step, memory, explore):  # type: ignore[no-untyped-def]
        import os
        import signal

        os.kill(os.getpid(), signal.SIGTERM)


class LateExitingVDN(VDN):  # type: ignore[misc, valid-type]
    """At its first update, leaves a timer that ends its worker process half a second later: the
    worker dies in this run, while idle after it, or in the next run, by timing."""

    def update(self) -> dict[str, float]:
        import os
        import threading

        if not getattr(self, "_timer_set", False):
            self._timer_set = True
            threading.Timer(0.5, os._exit, (9,)).start()
        return super().update()


class InterruptingVDN(VDN):  # type: ignore[misc, valid-type]
    """Raises KeyboardInterrupt from its update with no Ctrl-C anywhere."""

    def update(self) -> dict[str, float]:
        raise KeyboardInterrupt
