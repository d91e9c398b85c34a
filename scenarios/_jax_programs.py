"""Compiling JAX programs that run small batches on the CPU (imported only with JAX installed).

JAX lowers the Threefry-2x32 hash behind every `jax.random` draw, on the CPU, as a loop of
five blocks of rounds. Each pass of that loop runs a few tiny kernels, and at the small
batches of an environment step such kernels cost their fixed launch time, not their
arithmetic: in SMAX's step (its own draws and JaxMARL's) the loops take a sixth (5 v 5, 32
envs) to a third (3 v 3) of the time. `compile_program` compiles a function with the hash
written out straight instead, the form JAX itself uses on GPUs: the same numbers, bit for
bit, faster to run (and, for SMAX's step, to compile). The override applies to that one
program; the rest of the process keeps JAX's lowering.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir

# Threefry-2x32 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): 20
# rounds in 5 blocks of 4, the rotation distances alternating between the two rows, a
# subkey (and the block number) added after every block.
ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
KEY_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x: jax.Array, bits: int) -> jax.Array:
    return (x << np.uint32(bits)) | (x >> np.uint32(32 - bits))


def threefry2x32(key1: jax.Array, key2: jax.Array, x1: jax.Array, x2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 hash of the counter words (x1, x2) under the key (key1, key2), uint32
    arrays broadcast together, as straight-line code."""
    key1, key2, x1, x2 = jnp.broadcast_arrays(key1, key2, x1, x2)
    subkeys = (key1, key2, key1 ^ key2 ^ KEY_PARITY)
    x1, x2 = x1 + subkeys[0], x2 + subkeys[1]
    for block in range(5):
        for bits in ROTATIONS[block % 2]:
            x1 = x1 + x2
            x2 = _rotate_left(x2, bits) ^ x1
        x1 = x1 + subkeys[(block + 1) % 3]
        x2 = x2 + subkeys[(block + 2) % 3] + np.uint32(block + 1)
    return x1, x2


STRAIGHT_THREEFRY = ((threefry2x32_p, mlir.lower_fun(threefry2x32, multiple_results=True)),)


def compile_program(fun: Callable[..., Any], *args: Any, static_argnums: tuple[int, ...] = ()) -> Any:
    """`fun` compiled for `args` (arrays or `jax.ShapeDtypeStruct`s; static ones as values) with
    the straight-line hash. Call the result without the static arguments."""
    traced = jax.jit(fun, static_argnums=static_argnums).trace(*args)
    try:
        lowered = traced.lower(_private_parameters=mlir.LoweringParameters(override_lowering_rules=STRAIGHT_THREEFRY))
    except TypeError:  # a JAX whose lowering takes no overrides: its own hash, slower, same numbers
        lowered = traced.lower()
    return lowered.compile()
