"""Keyed random draws for many devices at once.

Every draw of the simulated world is keyed by (seed, round, device, stream),
so it does not depend on which other devices take part or on the order in
which replies arrive, and a resumed run draws exactly what an uninterrupted
one does. The key's draw is the first double of
`np.random.default_rng([seed, round, device, stream])`; `keyed_uniforms`
returns exactly those doubles for a whole array of devices.

Why not call default_rng per device: hashing a SeedSequence costs about 12 us,
0.12 s a round for 10,000 devices. `keyed_uniforms` runs numpy's
SeedSequence mixing (uint32 arithmetic) and PCG64's first output (128-bit
arithmetic on 64-bit limbs) on arrays instead: the same bits, about a
millisecond for 10,000 devices. A test pins it to numpy's own generator.

Streams: 0 availability (bernoulli), 1 Poisson failure delay, 2 failure
chance and point, 3 and 4 speed jitter, 5 and 6 (at round 0) the first
on/off period (fleet.world.availability), 7 the order of simultaneous arrivals.
"""

from __future__ import annotations

import math

import numpy as np

ONLINE, POISSON, FAILURE, JITTER_A, JITTER_B = 0, 1, 2, 3, 4
TIE = 7  # the order of arrivals at the same instant

# numpy.random.SeedSequence's constants (bit_generator.pyx) and PCG64's multiplier (pcg64.h).
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_M32, _M64 = (1 << 32) - 1, (1 << 64) - 1
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645
_POOL = 4  # SeedSequence's pool size: a key of four 32-bit words fills it exactly


def _hash_constants(init: int, mult: int, n: int) -> list[np.uint32]:
    """The running hash constant of SeedSequence after each of n steps (it does not depend on the data)."""
    out, h = [], init
    for _ in range(n):
        h = (h * mult) & _M32
        out.append(np.uint32(h))
    return out


_HASH_A = _hash_constants(_INIT_A, _MULT_A, _POOL + _POOL * (_POOL - 1))
_XOR_A = [np.uint32(_INIT_A)] + _HASH_A[:-1]
_HASH_B = _hash_constants(_INIT_B, _MULT_B, 2 * _POOL)
_XOR_B = [np.uint32(_INIT_B)] + _HASH_B[:-1]


def _seed_words(words: list[np.ndarray]) -> list[np.ndarray]:
    """SeedSequence(entropy of four uint32 words).generate_state(8) for arrays of keys."""
    step = iter(range(len(_HASH_A)))

    def hashmix(value: np.ndarray) -> np.ndarray:
        i = next(step)
        value = (value ^ _XOR_A[i]) * _HASH_A[i]
        return value ^ (value >> np.uint32(16))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        result: np.ndarray = np.uint32(_MIX_L) * x - np.uint32(_MIX_R) * y
        return result ^ (result >> np.uint32(16))

    pool = [hashmix(w) for w in words]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    state = []
    for i in range(2 * _POOL):
        value = (pool[i % _POOL] ^ _XOR_B[i]) * _HASH_B[i]
        state.append(value ^ (value >> np.uint32(16)))
    return state


def _mul64(x: np.ndarray, y: int) -> tuple[np.ndarray, np.ndarray]:
    """The full 128-bit product of uint64 array x and constant y, as (high, low) words."""
    m32 = np.uint64(_M32)
    x0, x1 = x & m32, x >> np.uint64(32)
    y0, y1 = np.uint64(y & _M32), np.uint64(y >> 32)
    p00, p01, p10, p11 = x0 * y0, x0 * y1, x1 * y0, x1 * y1
    mid = (p00 >> np.uint64(32)) + (p01 & m32) + (p10 & m32)
    low = (p00 & m32) | (mid << np.uint64(32))
    high = p11 + (p01 >> np.uint64(32)) + (p10 >> np.uint64(32)) + (mid >> np.uint64(32))
    return high, low


def _mulmod128(high: np.ndarray, low: np.ndarray, y: int) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) * y mod 2**128."""
    h, lo = _mul64(low, y & _M64)
    return h + low * np.uint64(y >> 64) + high * np.uint64(y & _M64), lo


def _add128(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    low = a[1] + b[1]
    return a[0] + b[0] + (low < a[1]).astype(np.uint64), low


def _pcg64_first_double(state: list[np.ndarray]) -> np.ndarray:
    """PCG64 seeded with generate_state's words, then its first random() double."""
    as64 = [s0.astype(np.uint64) | (s1.astype(np.uint64) << np.uint64(32)) for s0, s1 in zip(state[::2], state[1::2])]
    init = (as64[0], as64[1])
    inc = ((as64[2] << np.uint64(1)) | (as64[3] >> np.uint64(63)), (as64[3] << np.uint64(1)) | np.uint64(1))
    s = _add128(inc, init)                          # state = 0; step; state += initstate
    s = _add128(_mulmod128(*s, _PCG_MULT), inc)     # step
    s = _add128(_mulmod128(*s, _PCG_MULT), inc)     # the step of the first draw
    high, low = s
    rot = high >> np.uint64(58)
    x = high ^ low
    out = (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))
    return (out >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def keyed_uniforms(seed: int, server_round: int, devices, stream: int) -> np.ndarray:
    """`np.random.default_rng([seed, server_round, d, stream]).random()` for every d in `devices`."""
    ids = np.asarray(devices, dtype=np.int64).reshape(-1)
    if ids.size == 0:
        return np.zeros(0)
    keys = (seed, server_round, stream)
    if min(keys) < 0 or max(keys) > _M32 or ids.min() < 0 or ids.max() > _M32:  # not one word each: the slow way
        return np.array([np.random.default_rng([seed, server_round, int(d), stream]).random() for d in ids])
    words = [np.full(ids.size, seed, np.uint32), np.full(ids.size, server_round, np.uint32),
             ids.astype(np.uint32), np.full(ids.size, stream, np.uint32)]
    with np.errstate(over="ignore"):
        return _pcg64_first_double(_seed_words(words))


def keyed_normals(seed: int, server_round: int, devices, streams: tuple[int, int]) -> np.ndarray:
    """Standard normal draws (Box-Muller over two keyed uniforms)."""
    u1 = keyed_uniforms(seed, server_round, devices, streams[0])
    u2 = keyed_uniforms(seed, server_round, devices, streams[1])
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * math.pi * u2)


__all__ = ["FAILURE", "JITTER_A", "JITTER_B", "ONLINE", "POISSON", "keyed_normals", "keyed_uniforms"]
