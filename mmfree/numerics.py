"""The accelerator's arithmetic, exactly: formats, rounding, tables, primitives.

``docs/numerics.md`` is the prose form of this module; the two must agree.
Every function here is integer-exact (numpy ``int64`` or Python ``int``)
and is the definition the hardware is held to bit for bit. The integer
golden model (:mod:`mmfree.model.golden`) is a composition of these
primitives; the compiler uses the ``*_from_float`` helpers to build
constants. This module imports nothing from the rest of the project.

Formats
-------
``V32``   int32, two's complement, 16 fractional bits (Q15.16): every vector
          value (residual stream, state, projection outputs, products).
``P16``   unsigned Q0.16 in [0, 65536]: sigmoid outputs, gates, lower bounds.
``A8``    int8 activation codes in [-128, 127] (the TAC array's input).
``T2``    ternary weights in {-1, 0, +1}.
``ACC``   int24 accumulators: ``|acc| <= 127 * K < 2^23`` for K <= 66051 inputs.
``C16``   int16 folded norm-weight vectors with an exponent folded elsewhere.
``PF``    scalar pseudo-float ``(m, e)``: value ``m * 2**e``, ``m`` in
          [2^15, 2^16) or 0. Used for per-token and per-matrix scales.
"""

from __future__ import annotations

import math

import numpy as np

FRAC = 16                   #: fractional bits of V32
ONE = 1 << FRAC             #: 1.0 in V32 and P16
V_MIN, V_MAX = -(1 << 31), (1 << 31) - 1
ACC_BITS = 24               #: accumulator width
MAX_K = ((1 << (ACC_BITS - 1)) - 1) // 127   #: largest input length the ACC width covers
A_MIN, A_MAX = -128, 127    #: activation code range (official clamp)
C16_TOP = 14                #: folded vectors are scaled so max|c| lies in [2^14, 2^15)
BS_BITS = 15                #: block-float inputs: max|bs| lies in [2^14, 2^15)
Q_SHIFT = 23                #: quantizer reciprocal: R = round(127 * 2^23 / M16)
MANT_BITS = 16              #: PF mantissa width

# Sigmoid table: P16 samples at x = -16 + k/32, k = 0..1024, linear interpolation.
SIG_X_MIN = -16             #: table domain start (real units)
SIG_STEP_LOG2 = 5           #: 32 samples per unit
SIG_ENTRIES = (2 * -SIG_X_MIN << SIG_STEP_LOG2) + 1    #: 1025
SIG_FRAC_BITS = FRAC - SIG_STEP_LOG2                   #: 11 interpolation bits


# --------------------------------------------------------------------------
# rounding, shifting, saturation. Shift counts may be arrays (one per row,
# broadcast against the data); a negative count shifts left, exactly.

def _i64(x):
    return np.asarray(x, dtype=np.int64)


def rshr(v, s):
    """Arithmetic shift right by ``s`` with round-half-up: ``floor(v / 2^s + 1/2)``."""
    v, s = _i64(v), _i64(s)
    right = np.maximum(s, 0)
    half = np.where(right > 0, np.left_shift(1, np.maximum(right - 1, 0)), 0)
    return np.where(s > 0, (v + half) >> right, v << np.maximum(-s, 0))


def shr_floor(v, s):
    """Arithmetic shift right by ``s`` (floor); a negative ``s`` shifts left."""
    v, s = _i64(v), _i64(s)
    return np.where(s >= 0, v >> np.maximum(s, 0), v << np.maximum(-s, 0))


def sat(v, bits: int = 32):
    """Saturate to a signed ``bits``-bit range."""
    return np.clip(_i64(v), -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def bitlen(x):
    """Position of the leading one of non-negative integers below 2^53 (0 for 0)."""
    return np.frexp(_i64(x).astype(np.float64))[1].astype(np.int64)


def maxabs(v):
    """``max |v|`` over the last axis."""
    return np.abs(_i64(v)).max(axis=-1)


# --------------------------------------------------------------------------
# pseudo-float scalars

def pf_normalize(p, e):
    """Round the non-negative integers ``p * 2^e`` to PF ``(m, e)`` (half up); 0 -> (0, 0)."""
    p, e = _i64(p), _i64(e)
    s = bitlen(p) - MANT_BITS
    m = rshr(p, s)
    carry = m == (1 << MANT_BITS)
    m = np.where(carry, m >> 1, m)
    e = e + s + carry
    zero = p == 0
    return np.where(zero, 0, m), np.where(zero, 0, e)


def pf_from_float(x: float) -> tuple[int, int]:
    """The PF nearest a non-negative float (compiler constants)."""
    if not (x >= 0 and math.isfinite(x)):
        raise ValueError(f"PF constant must be finite and >= 0, got {x!r}")
    if x == 0:
        return 0, 0
    f, e = math.frexp(x)                 # x = f * 2^e, f in [0.5, 1)
    m = math.floor(f * (1 << MANT_BITS) + 0.5)
    e -= MANT_BITS
    if m == 1 << MANT_BITS:
        m >>= 1
        e += 1
    return m, e


def pf_to_float(pf: tuple[int, int]) -> float:
    m, e = pf
    return math.ldexp(m, e)


# --------------------------------------------------------------------------
# folded weight vectors

def c16_from_float(w: np.ndarray) -> tuple[np.ndarray, int]:
    """Quantize a per-channel weight vector to ``C16`` codes and exponent ``e``.

    ``c = round(w * 2^e)`` with ``e`` the largest integer such that
    ``max|c| < 2^15`` (so ``max|c|`` lands in [2^14, 2^15)). An all-zero
    vector gets ``e = 0``.
    """
    w = np.asarray(w, dtype=np.float64)
    m = float(np.abs(w).max()) if w.size else 0.0
    if m == 0.0:
        return np.zeros(w.shape, dtype=np.int64), 0
    e = C16_TOP - math.floor(math.log2(m))
    c = np.floor(w * 2.0 ** e + 0.5)
    if np.abs(c).max() >= 1 << 15:
        e -= 1
        c = np.floor(w * 2.0 ** e + 0.5)
    return c.astype(np.int64), e


# --------------------------------------------------------------------------
# the sigmoid table and the functions built on it

def sigmoid_table() -> np.ndarray:
    """``T[k] = round(65536 * sigmoid(-16 + k/32))`` for k = 0..1024 (P16, int64)."""
    x = SIG_X_MIN + np.arange(SIG_ENTRIES, dtype=np.float64) / (1 << SIG_STEP_LOG2)
    return np.floor(ONE / (1.0 + np.exp(-x)) + 0.5).astype(np.int64)


SIG_TABLE = sigmoid_table()


def sigmoid_q(x: np.ndarray) -> np.ndarray:
    """Sigmoid of V32 values as P16: table lookup with linear interpolation.

    ``x`` is clamped to [-16, 16 - 2^-16]; ``xo = x + 16*2^16``,
    ``idx = xo >> 11``, ``frac = xo & 2047``;
    ``y = T[idx] + rshr((T[idx+1] - T[idx]) * frac, 11)``.
    """
    xo = np.clip(x, SIG_X_MIN * ONE, -SIG_X_MIN * ONE - 1) - SIG_X_MIN * ONE
    idx = xo >> SIG_FRAC_BITS
    frac = xo & ((1 << SIG_FRAC_BITS) - 1)
    t0 = SIG_TABLE[idx]
    t1 = SIG_TABLE[idx + 1]
    return t0 + rshr((t1 - t0) * frac, SIG_FRAC_BITS)


def silu_q(x):
    """SiLU of V32 values: ``rshr(x * sigmoid_q(x), 16)`` (V32, never saturates)."""
    return rshr(x * sigmoid_q(x), FRAC)


def mul_p16(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """V32 times P16: ``rshr(x * p, 16)``."""
    return rshr(x * p, FRAC)


def mul_v32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """V32 times V32: ``sat32(rshr(a * b, 16))`` (the exact product fits 63 bits)."""
    return sat(rshr(a * b, FRAC))


# --------------------------------------------------------------------------
# the BitLinear input stage: block-float, RMS statistic, int8 quantization

def block_shift(b):
    """Per-row shift ``sb`` that puts ``max|b >> sb|`` in [2^14, 2^15) (0 for a zero row)."""
    m = maxabs(b)
    return np.where(m > 0, bitlen(m) - BS_BITS, 0)


def quantize_a8(v):
    """Int8 codes of each row of ``v`` by the absmax rule, as the hardware computes them.

    ``M = max|v|``; ``sh = bitlen(M) - 16``; ``v16 = v >> sh`` (floor; left
    shift if ``sh < 0``); ``M16 = M >> sh`` in [2^15, 2^16);
    ``R = round(127 * 2^23 / M16)``; ``q = clamp((v16 * R + 2^22) >> 23, -128, 127)``.

    Returns ``(q, M16, sh)``; a zero row gives zero codes and ``M16 = 0``.
    """
    v = _i64(v)
    m = maxabs(v)
    nz = m > 0
    sh = np.where(nz, bitlen(m) - MANT_BITS, 0)
    v16 = shr_floor(v, sh[..., None])
    m16 = shr_floor(m, sh)
    r = ((127 << (Q_SHIFT + 1)) + m16) // np.maximum(2 * m16, 1)
    q = (v16 * r[..., None] + (1 << (Q_SHIFT - 1))) >> Q_SHIFT
    q = np.where(nz[..., None], np.clip(q, A_MIN, A_MAX), 0)
    return q, m16, sh


def isqrt(x):
    """Exact integer square root (floor) of non-negative integers below 2^53."""
    x = _i64(x)
    s = np.floor(np.sqrt(x.astype(np.float64))).astype(np.int64)
    s = np.where(s * s > x, s - 1, s)
    return np.where((s + 1) * (s + 1) <= x, s + 1, s)


def sumsq_sqrt(t):
    """``sqrt(t) ~= s * 2^(et/2)`` with ``s`` in [2^15, 2^16), by integer square root.

    ``et`` is even; ``t >> et`` lies in [2^30, 2^32); ``s = isqrt(t >> et)``.
    Returns ``(s, et)``; ``t = 0`` gives ``(0, 0)``.
    """
    t = _i64(t)
    et = bitlen(t) - 32
    et = et + (et & 1)
    et = np.where(t > 0, et, 0)
    return isqrt(shr_floor(t, et)), et


def output_scale(k_pf, m16, sh, sqrt_t, et):
    """Per-token dequantization scale ``S = K * M / sqrt(t)`` as a PF.

    ``Qr = (M16 << 16) // sqrt_t`` (17 bits); ``S = pf_normalize(Qr * mK)``
    with exponent ``eK + sh - et/2 - 16``. Zero if ``M16``, ``sqrt_t`` or ``mK`` is.
    """
    mk, ek = k_pf
    m16, sqrt_t = _i64(m16), _i64(sqrt_t)
    qr = (m16 << 16) // np.maximum(sqrt_t, 1)
    qr = np.where(sqrt_t > 0, qr, 0)
    return pf_normalize(qr * mk, ek + _i64(sh) - _i64(et) // 2 - 16)


def dequantize(acc, s_m, s_e):
    """ACC rows times their PF scales into V32: ``sat32(rshr(acc * m, -e))``."""
    s_m, s_e = _i64(s_m), _i64(s_e)
    return sat(rshr(_i64(acc) * s_m[..., None], -s_e[..., None]))


def ternary_matvec(t: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The TAC array's job: ``acc[r] = sum_j t[r, j] * q[j]`` (add, subtract or skip).

    Rows of ``q`` are independent tokens. Computed through float32 BLAS,
    which is exact here: every partial sum is an integer below 2^23 < 2^24.
    """
    if q.shape[-1] > MAX_K:
        raise ValueError(f"input length {q.shape[-1]} exceeds the {ACC_BITS}-bit accumulator range ({MAX_K})")
    tf = t if t.dtype == np.float32 else t.astype(np.float32)
    return (q.astype(np.float32) @ tf.T).astype(np.int64)
