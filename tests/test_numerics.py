"""Properties of the integer primitives in mmfree/numerics.py (docs/numerics.md)."""

from __future__ import annotations

import ast
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from mmfree import numerics as nx

RNG_SEED = 20240611


@pytest.fixture
def rng():
    return np.random.default_rng(RNG_SEED)


def floor_div_pow2_half(v: int, s: int) -> int:
    """floor(v / 2^s + 1/2) in exact rational arithmetic."""
    return math.floor(Fraction(v, 1) / Fraction(2) ** s + Fraction(1, 2))


# --------------------------------------------------------------------------
# shifts and rounding

def test_rshr_matches_exact_rounding(rng):
    v = rng.integers(-(1 << 40), 1 << 40, size=4000)
    s = rng.integers(-8, 30, size=4000)
    got = nx.rshr(v, s)
    want = [floor_div_pow2_half(int(a), int(b)) for a, b in zip(v, s)]
    assert got.dtype == np.int64
    assert got.tolist() == want


def test_rshr_ties_round_up():
    # exact halves go toward +inf, for both signs
    assert nx.rshr(np.array([1, 3, -1, -3, 5, -5]), 1).tolist() == [1, 2, 0, -1, 3, -2]
    assert nx.rshr(-6, 2) == -1      # -1.5 -> -1
    assert nx.rshr(6, 2) == 2        # 1.5 -> 2
    assert nx.rshr(7, 0) == 7
    assert nx.rshr(-7, -3) == -56    # negative shift: exact left shift


def test_rshr_per_row_shifts(rng):
    v = rng.integers(-(1 << 35), 1 << 35, size=(16, 33))
    s = rng.integers(-4, 20, size=16)
    got = nx.rshr(v, s[:, None])
    for r in range(16):
        assert got[r].tolist() == [floor_div_pow2_half(int(a), int(s[r])) for a in v[r]]


def test_shr_floor(rng):
    v = rng.integers(-(1 << 40), 1 << 40, size=3000)
    s = rng.integers(-10, 30, size=3000)
    got = nx.shr_floor(v, s)
    want = [math.floor(Fraction(int(a)) / Fraction(2) ** int(b)) for a, b in zip(v, s)]
    assert got.tolist() == want
    # per-row shifts broadcast
    m = rng.integers(-(1 << 30), 1 << 30, size=(5, 7))
    sh = np.array([-2, 0, 1, 5, 17])
    assert np.array_equal(nx.shr_floor(m, sh[:, None]),
                          np.array([[math.floor(Fraction(int(a)) / 2 ** int(s)) for a in row] for row, s in zip(m, sh)]))


def test_sat():
    assert nx.sat(np.array([1 << 31, -(1 << 31) - 1, 5, -5])).tolist() == [(1 << 31) - 1, -(1 << 31), 5, -5]
    assert nx.sat(np.array([200, -200]), 8).tolist() == [127, -128]


def test_bitlen_matches_python(rng):
    xs = [0, 1, 2, 3]
    for k in range(1, 53):
        xs += [(1 << k) - 1, 1 << k, (1 << k) + 1]
    xs += rng.integers(0, 1 << 53, size=5000).tolist()
    xs += (rng.integers(0, 1 << 53, size=2000) >> rng.integers(0, 53, size=2000)).tolist()
    xs = [x for x in xs if x < (1 << 53)]
    got = nx.bitlen(np.array(xs, dtype=np.int64))
    assert got.tolist() == [int(x).bit_length() for x in xs]


def test_isqrt_matches_math(rng):
    xs = [0, 1, 2, 3, 4, 15, 16, 17, (1 << 52), (1 << 53) - 1]
    for k in range(1, 27):
        xs += [k * k - 1, k * k, k * k + 1, (1 << (2 * k)) - 1, 1 << (2 * k)]
    s = rng.integers(0, 1 << 26, size=3000)   # perfect squares and neighbours near 2^52
    xs += (s * s).tolist() + (s * s - 1).clip(0).tolist() + (s * s + 2 * s).tolist()
    xs += rng.integers(0, 1 << 53, size=5000).tolist()
    xs = [x for x in xs if 0 <= x < (1 << 53)]
    assert nx.isqrt(np.array(xs, dtype=np.int64)).tolist() == [math.isqrt(x) for x in xs]


# --------------------------------------------------------------------------
# pseudo-floats and folded vectors

def test_pf_from_float_invariants(rng):
    xs = np.concatenate([10.0 ** rng.uniform(-30, 30, size=3000), [1.0, 2.0, 0.5, 3.0, 65535.5, 65535.4,
                         1 - 2 ** -20, 2 ** -1074, 1e300]])
    for x in xs:
        m, e = nx.pf_from_float(float(x))
        assert (1 << 15) <= m < (1 << 16), (x, m)
        assert abs(math.ldexp(m, e) / x - 1) <= 2 ** -16, x
        assert nx.pf_to_float((m, e)) == math.ldexp(m, e)
    assert nx.pf_from_float(0.0) == (0, 0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            nx.pf_from_float(bad)


def test_pf_from_float_rounds_to_nearest():
    # 1 + 2^-16 is exactly halfway between mantissas 2^15 (2^-15 steps): half up
    m, e = nx.pf_from_float(1 + 2 ** -16)
    assert math.ldexp(m, e) == 1 + 2 ** -15
    # just below a power of two rounds up with a carry into the exponent
    m, e = nx.pf_from_float(2 - 2 ** -20)
    assert (m, e) == (1 << 15, -14)


def test_pf_normalize_invariants(rng):
    p = np.concatenate([rng.integers(1, 1 << 50, size=4000) >> rng.integers(0, 50, size=4000),
                        [1, 2, 3, (1 << 16) - 1, 1 << 16, (1 << 17) - 1, (1 << 40) - 1]])
    p = np.maximum(p, 1)
    e_in = rng.integers(-40, 40, size=p.size)
    m, e = nx.pf_normalize(p, e_in)
    assert ((m >= 1 << 15) & (m < 1 << 16)).all()
    for pi, ei, mi, eo in zip(p.tolist(), e_in.tolist(), m.tolist(), e.tolist()):
        exact = Fraction(pi) * Fraction(2) ** ei
        got = Fraction(mi) * Fraction(2) ** eo
        assert abs(got / exact - 1) <= Fraction(1, 1 << 16)
        # round half up at the 16-bit mantissa: the exact value is within half a step
        assert abs(got - exact) <= Fraction(2) ** eo / 2
    zm, ze = nx.pf_normalize(np.array([0, 0]), np.array([5, -7]))
    assert zm.tolist() == [0, 0] and ze.tolist() == [0, 0]
    # carry out of the mantissa: 2^17 - 1 rounds to 2^16 -> renormalized
    m, e = nx.pf_normalize(np.array([(1 << 17) - 1]), np.array([0]))
    assert (m[0], e[0]) == (1 << 15, 2)


def test_c16_from_float_ranges(rng):
    for _ in range(300):
        n = int(rng.integers(1, 300))
        w = rng.normal(size=n) * 10.0 ** rng.uniform(-6, 4)
        if rng.random() < 0.3:
            w = np.abs(w)
        if rng.random() < 0.2:   # values just below a power of two
            w[0] = np.nextafter(2.0 ** int(rng.integers(-10, 10)), 0) * np.sign(w[0] or 1)
            w[1:] = w[1:] / np.abs(w[1:]).max() * abs(w[0]) * 0.9 if n > 1 else w[1:]
        c, e = nx.c16_from_float(w)
        assert c.dtype == np.int64
        assert (1 << 14) <= np.abs(c).max() < (1 << 15), (np.abs(c).max(), e)
        assert np.abs(c - w * 2.0 ** e).max() <= 0.5
    c, e = nx.c16_from_float(np.zeros(5))
    assert e == 0 and not c.any()
    c, e = nx.c16_from_float(np.array([1.0, -1.0, 0.5]))
    assert c.tolist() == [1 << 14, -(1 << 14), 1 << 13] and e == 14


# --------------------------------------------------------------------------
# int8 activation quantizer

def _official_codes(v):
    v = np.asarray(v, dtype=np.float64)
    m = np.abs(v).max(axis=-1, keepdims=True)
    return np.where(m > 0, np.clip(np.round(v * 127 / np.where(m > 0, m, 1)), -128, 127), 0)


def _v32_like(rng, rows=400, n=512):
    """V32 vectors as the input stage produces them: ``bs * cv`` with bs, cv up to 2^15."""
    bs = rng.normal(size=(rows, n)) * rng.uniform(0.05, 1, size=(rows, 1))
    bs = np.round(bs / np.abs(bs).max(-1, keepdims=True) * ((1 << 15) - 1)).astype(np.int64)
    cv = np.round(rng.uniform(0.5, 1.0, size=n) * ((1 << 15) - 1)).astype(np.int64)
    return bs * cv


def test_quantize_a8_matches_official_rule_within_one(rng):
    vs = [_v32_like(rng),
          rng.integers(-(1 << 30), 1 << 30, size=(300, 256)) >> rng.integers(0, 30, size=(300, 1)),
          np.round(rng.standard_cauchy(size=(200, 300)) * 1e5).clip(-(1 << 30), 1 << 30).astype(np.int64)]
    for v in vs:
        q, m16, sh = nx.quantize_a8(v)
        ref = _official_codes(v)
        assert np.abs(q - ref).max() <= 1
        assert q.min() >= -128 and q.max() <= 127
        nz = np.abs(v).max(-1) > 0
        # the largest element maps to exactly +-127 in every non-zero row
        assert (np.abs(q[nz]).max(-1) == 127).all()
        assert ((m16[nz] >= 1 << 15) & (m16[nz] < 1 << 16)).all()
        assert np.array_equal(m16[nz], np.abs(v[nz]).max(-1) >> sh[nz].clip(0) << (-sh[nz]).clip(0))


def test_quantize_a8_exact_rate_and_where_it_differs(rng):
    """Codes equal the official rule except next to a rounding boundary.

    The spec truncates ``v`` to 16 bits (floor) before multiplying by the
    15-bit reciprocal, so a code may differ from ``round(v * 127 / M)`` only
    when the exact value lies within about ``2 * 127 / 2^15`` of a half-integer.
    """
    v = _v32_like(rng, rows=800, n=1024)
    q, _, _ = nx.quantize_a8(v)
    f = v * 127 / np.abs(v).max(-1, keepdims=True)
    ref = np.round(f)
    diff = q != ref
    dist = np.abs(np.abs(f - np.floor(f)) - 0.5)   # distance from the rounding boundary
    assert dist[diff].max() < 2 * 127 / 2 ** 15
    assert diff.mean() < 0.002, f"{100 * diff.mean():.3f} % of codes differ from the official rule"


@pytest.mark.xfail(strict=True, reason="spec truncates v to 16 bits (floor): about 99.89 % exact on V32-like data, "
                   "below the 99.9 % asked in issue 2; see the test report")
def test_quantize_a8_exact_rate_999(rng):
    v = _v32_like(rng, rows=800, n=1024)
    q, _, _ = nx.quantize_a8(v)
    assert (q == _official_codes(v)).mean() >= 0.999


def test_quantize_a8_zero_rows_and_small_values():
    v = np.array([[0, 0, 0, 0], [1, -1, 0, 1], [0, 0, 5, 0], [-3, 1, 2, 0]])
    q, m16, sh = nx.quantize_a8(v)
    assert q[0].tolist() == [0, 0, 0, 0] and m16[0] == 0
    assert q[1].tolist() == [127, -127, 0, 127]
    assert q[2].tolist() == [0, 0, 127, 0]
    assert q[3].tolist() == [-127, 42, 85, 0]   # 127/3 = 42.33, 254/3 = 84.67
    # batched leading axes work
    q3, _, _ = nx.quantize_a8(v.reshape(2, 2, 4))
    assert np.array_equal(q3.reshape(4, 4), q)


# --------------------------------------------------------------------------
# nonlinear functions

def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_sigmoid_q_accuracy_and_monotone():
    x = np.arange(-20 * nx.ONE, 20 * nx.ONE + 1, 3, dtype=np.int64)
    y = nx.sigmoid_q(x)
    assert y.dtype == np.int64
    assert y.min() >= 0 and y.max() <= nx.ONE
    err = np.abs(y / nx.ONE - _sig(x / nx.ONE))
    assert err.max() <= 2 / 65536, err.max() * 65536
    assert (np.diff(y) >= 0).all()
    # saturation outside the table
    assert nx.sigmoid_q(np.array([-40 * nx.ONE, 40 * nx.ONE])).tolist() == [0, nx.ONE]
    assert nx.sigmoid_q(np.array([0]))[0] == nx.ONE // 2


def test_sigmoid_table():
    t = nx.SIG_TABLE
    assert t.shape == (nx.SIG_ENTRIES,) == (1025,)
    assert t[0] == 0 and t[-1] == nx.ONE and t[512] == nx.ONE // 2
    assert (np.diff(t) >= 0).all()


def test_silu_q_close_to_float():
    x = np.arange(-20 * nx.ONE, 20 * nx.ONE + 1, 5, dtype=np.int64)
    y = nx.silu_q(x)
    xf = x / nx.ONE
    err = np.abs(y / nx.ONE - xf * _sig(xf))
    # |x| * (sigmoid error <= 2 LSB) + one rounding step
    assert (err <= (np.abs(xf) * 2 + 1) / 65536).all()
    assert err.max() < 1e-3


def test_mul_p16_and_mul_v32(rng):
    a = rng.integers(-(1 << 31), 1 << 31, size=2000)
    p = rng.integers(0, nx.ONE + 1, size=2000)
    assert nx.mul_p16(a, p).tolist() == [floor_div_pow2_half(int(x) * int(y), 16) for x, y in zip(a, p)]
    b = rng.integers(-(1 << 31), 1 << 31, size=2000)
    want = [max(min(floor_div_pow2_half(int(x) * int(y), 16), (1 << 31) - 1), -(1 << 31)) for x, y in zip(a, b)]
    assert nx.mul_v32(a, b).tolist() == want
    assert nx.mul_p16(np.array([12345]), np.array([nx.ONE]))[0] == 12345


# --------------------------------------------------------------------------
# RMS statistic, output scale, dequantization

def test_sumsq_sqrt_relative_error(rng):
    t = np.concatenate([rng.integers(1, 1 << 52, size=5000) >> rng.integers(0, 50, size=5000),
                        [1, 2, 3, (1 << 30) - 1, 1 << 31, (1 << 32) - 1, (1 << 52) - 1]])
    t = np.maximum(t, 1)
    s, et = nx.sumsq_sqrt(t)
    assert (et % 2 == 0).all()
    assert ((s >= 1 << 15) & (s < 1 << 16)).all()
    approx = s * 2.0 ** (et / 2)
    assert np.abs(approx / np.sqrt(t.astype(np.float64)) - 1).max() < 1e-4
    # t >> et is in [2^30, 2^32) and s is its exact integer square root
    red = nx.shr_floor(t, et)
    assert ((red >= 1 << 30) & (red < 1 << 32)).all()
    assert s.tolist() == [math.isqrt(int(x)) for x in red]
    assert [int(x[0]) for x in nx.sumsq_sqrt(np.array([0]))] == [0, 0]


def test_output_scale_matches_real_formula(rng):
    n = 20000
    v_max = rng.integers(1, 1 << 31, size=n) >> rng.integers(0, 25, size=n)
    v_max = np.maximum(v_max, 1)
    t = np.maximum(rng.integers(1, 1 << 47, size=n) >> rng.integers(0, 40, size=n), 1)
    k = nx.pf_from_float(0.123456)
    sh = nx.bitlen(v_max) - 16
    m16 = nx.shr_floor(v_max, sh)
    s, et = nx.sumsq_sqrt(t)
    sm, se = nx.output_scale(k, m16, sh, s, et)
    assert ((sm >= 1 << 15) & (sm < 1 << 16)).all()
    real = nx.pf_to_float(k) * v_max / np.sqrt(t.astype(np.float64))
    got = sm * np.exp2(se.astype(np.float64))
    assert np.abs(got / real - 1).max() < 1e-4
    zm, ze = nx.output_scale(k, np.array([0, 40000]), np.array([0, 0]), np.array([40000, 0]), np.array([0, 0]))
    assert zm.tolist() == [0, 0]
    zm, _ = nx.output_scale((0, 0), np.array([40000]), np.array([0]), np.array([40000]), np.array([0]))
    assert zm.tolist() == [0]


def test_dequantize(rng):
    acc = rng.integers(-(1 << 23), 1 << 23, size=(4, 50))
    m = rng.integers(1 << 15, 1 << 16, size=4)
    e = np.array([-20, -16, -5, 2])
    got = nx.dequantize(acc, m, e)
    for r in range(4):
        want = [max(min(floor_div_pow2_half(int(a) * int(m[r]), -int(e[r])), (1 << 31) - 1), -(1 << 31))
                for a in acc[r]]
        assert got[r].tolist() == want
    # saturation
    assert nx.dequantize(np.array([[1 << 23]]), np.array([1 << 15]), np.array([10]))[0, 0] == (1 << 31) - 1


# --------------------------------------------------------------------------
# the ternary matrix-vector product

def _exact_matvec(t, q):
    return np.asarray(q, dtype=np.int64) @ np.asarray(t, dtype=np.int64).T


def test_ternary_matvec_random(rng):
    for rows, k, b in ((1, 1, 1), (7, 33, 3), (256, 1000, 4), (64, 5000, 2)):
        t = rng.integers(-1, 2, size=(rows, k)).astype(np.int8)
        q = rng.integers(-128, 128, size=(b, k))
        got = nx.ternary_matvec(t, q)
        assert got.dtype == np.int64
        assert np.array_equal(got, _exact_matvec(t, q))
        # float32 codes (the golden model's fast path) give the same
        assert np.array_equal(nx.ternary_matvec(t.astype(np.float32), q), got)


def test_ternary_matvec_extremes_exact():
    """Sums up to 127 * MAX_K < 2^23 are exact through float32 BLAS."""
    k = nx.MAX_K
    assert 127 * k < (1 << 23) <= 127 * (k + 1)
    t = np.ones((4, k), dtype=np.int8)
    t[1] = -1
    t[2, ::2] = -1           # alternating signs: partial sums swing
    t[3, : k // 2] = 0
    q = np.full((2, k), 127, dtype=np.int64)
    q[1, ::3] = -127
    got = nx.ternary_matvec(t, q)
    want = _exact_matvec(t, q)
    assert np.array_equal(got, want)
    assert got[0, 0] == 127 * k and got[0, 1] == -127 * k
    # odd values at the top of the range: 127*(k-1) + 1 needs all 23 bits
    q2 = np.full((1, k), 127, dtype=np.int64)
    q2[0, -1] = 1
    assert nx.ternary_matvec(t[:1], q2)[0, 0] == 127 * (k - 1) + 1
    # random signs near MAX_K
    rng = np.random.default_rng(1)
    t = rng.integers(-1, 2, size=(16, k - 3)).astype(np.int8)
    q = rng.choice(np.array([-127, 127, 126, -1, 1]), size=(3, k - 3))
    assert np.array_equal(nx.ternary_matvec(t, q), _exact_matvec(t, q))


def test_ternary_matvec_rejects_too_long():
    with pytest.raises(ValueError, match="accumulator"):
        nx.ternary_matvec(np.zeros((1, nx.MAX_K + 1), np.int8), np.zeros((1, nx.MAX_K + 1), np.int64))


# --------------------------------------------------------------------------
# the contract modules stay at the bottom of the import graph

PROJECT_PACKAGES = ("model", "compiler", "hw", "host", "sim")


def _imported_modules(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                out.append((base, node.level))
                out += [((base + "." if base else "") + a.name, node.level) for a in node.names]
            else:
                out.append((base, 0))
                out += [(f"{base}.{a.name}", 0) for a in node.names]
    return out


def test_contract_modules_import_nothing_above_them():
    pkg = Path(nx.__file__).resolve().parent
    modules = sorted(p for p in pkg.glob("*.py") if p.name not in ("cli.py", "__main__.py"))
    names = {p.name for p in modules}
    assert {"numerics.py", "config.py", "errors.py", "compiled.py"} <= names
    for path in modules:
        for name, level in _imported_modules(path):
            if level:       # relative import inside mmfree/: must be a sibling module, not a subpackage
                head = name.split(".")[0]
                assert head not in PROJECT_PACKAGES, f"{path.name} imports .{name}"
            else:
                parts = name.split(".")
                bad = parts[0] in PROJECT_PACKAGES or (parts[0] == "mmfree" and len(parts) > 1
                                                       and parts[1] in PROJECT_PACKAGES)
                assert not bad, f"{path.name} imports {name}"
