"""Weight packings, tile order and image word formats (mmfree/packing.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mmfree import packing as pk
from mmfree.targets import TARGETS

SHAPES = [(1,), (4,), (5,), (6,), (9,), (20,), (256,), (3, 7), (2, 3, 13), (17, 256), (0,), (4, 0)]


@pytest.mark.parametrize("packing", pk.PACKINGS)
@pytest.mark.parametrize("shape", SHAPES)
def test_roundtrip_shapes(packing, shape):
    rng = np.random.default_rng(hash(shape) % 2**32)
    for dtype in (np.int8, np.int64, np.float32):
        t = rng.integers(-1, 2, size=shape).astype(dtype)
        b = pk.pack(t, packing)
        n = shape[-1]
        assert b.dtype == np.uint8
        assert b.shape == shape[:-1] + (pk.packed_bytes(n, packing),)
        u = pk.unpack(b, n, packing)
        assert u.dtype == np.int8
        np.testing.assert_array_equal(u, t.astype(np.int8))


@pytest.mark.parametrize("packing", pk.PACKINGS)
def test_roundtrip_random_property(packing):
    rng = np.random.default_rng(7)
    for _ in range(200):
        lead = tuple(rng.integers(1, 4, size=rng.integers(0, 3)))
        n = int(rng.integers(1, 70))
        p = rng.dirichlet([1, 1, 1])          # skewed trit distributions, all-zero and all -1 included
        t = rng.choice(np.array([-1, 0, 1], np.int8), size=lead + (n,), p=p)
        np.testing.assert_array_equal(pk.unpack(pk.pack(t, packing), n, packing), t)


def test_roundtrip_large():
    rng = np.random.default_rng(1)
    t = rng.integers(-1, 2, size=(4096, 256)).astype(np.int8)   # 1M trits
    for packing in pk.PACKINGS:
        np.testing.assert_array_equal(pk.unpack(pk.pack(t, packing), 256, packing), t)


def test_b3_known_bytes():
    # digits 0/1/2 for 0/+1/-1, first trit least significant
    assert pk.pack_b3(np.array([1, -1, 0, 0, 1])).tolist() == [1 + 2 * 3 + 1 * 81]
    assert pk.pack_b3(np.array([-1] * 5)).tolist() == [242]
    assert pk.pack_b3(np.array([0] * 5)).tolist() == [0]
    assert pk.pack_b3(np.array([1])).tolist() == [1]
    assert pk.pack_b3(np.array([-1])).tolist() == [2]
    assert pk.pack_b3(np.array([0, 0, 0, 0, 0, 0, -1])).tolist() == [0, 2 * 3]
    assert pk.pack_b3(np.array([0, 1, 0, 1, 0, 1, -1, -1])).tolist() == [3 + 27, 1 + 2 * 3 + 2 * 9]
    assert pk.unpack_b3(np.array([88], np.uint8), 5).tolist() == [1, -1, 0, 0, 1]


def test_2b_known_bytes():
    # 00, 01, 11 for 0, +1, -1; trit i in bits [2i+1:2i]
    assert pk.pack_2b(np.array([1, -1, 0, 1])).tolist() == [0b01_00_11_01]
    assert pk.pack_2b(np.array([-1])).tolist() == [0b11]
    assert pk.pack_2b(np.array([0, 0, 0, 0, 1])).tolist() == [0, 1]
    assert pk.unpack_2b(np.array([0b11_01_00_11], np.uint8), 4).tolist() == [-1, 0, 1, -1]


def test_invalid_codes_detected():
    with pytest.raises(pk.PackingError, match="10"):
        pk.unpack_2b(np.array([0b00_10_00_00], np.uint8), 4)
    with pytest.raises(pk.PackingError, match="10"):
        pk.unpack_2b(np.array([[0, 0], [0, 0b10]], np.uint8), 8)
    for bad in (243, 255):
        with pytest.raises(pk.PackingError, match="invalid base-3 byte"):
            pk.unpack_b3(np.array([0, bad], np.uint8), 10)
    # padding trits / bits must be zero
    with pytest.raises(pk.PackingError, match="padding"):
        pk.unpack_b3(np.array([9], np.uint8), 2)
    with pytest.raises(pk.PackingError, match="padding"):
        pk.unpack_2b(np.array([0b0100], np.uint8), 1)
    # wrong byte counts
    with pytest.raises(pk.PackingError, match="take"):
        pk.unpack_b3(np.zeros(3, np.uint8), 5)
    # non-ternary input
    with pytest.raises(pk.PackingError, match="-1, 0 or \\+1"):
        pk.pack_b3(np.array([0, 2, 1]))
    with pytest.raises(pk.PackingError, match="-1, 0 or \\+1"):
        pk.pack_2b(np.array([-2], np.int8))
    with pytest.raises(pk.PackingError, match="unknown packing"):
        pk.pack(np.zeros(3), "b4")


def test_word_bits_match_targets():
    for t in TARGETS.values():
        assert t.wmem_word_bits == pk.word_bits(t.lanes, t.packing)
        assert t.memory("wmem").width >= t.wmem_word_bits
    assert pk.word_bits(256, "b3") == 8 * 52
    assert pk.word_bits(20, "b3") == 32
    assert pk.word_bits(9, "2b") == 18


def test_tile_order_known():
    # two segments of 3 x 4 on a 2 x 3 array: 2 row blocks, 2 column blocks
    w0 = np.arange(12).reshape(3, 4) % 3 - 1
    w1 = -w0
    tiles = pk.tile_stream([w0, w1], 2, 3)
    assert tiles.shape == (2 * 2 * 2, 6)

    def tile(w, rb, cb):
        p = np.zeros((4, 6), np.int8)
        p[:3, :4] = w
        return p[rb * 2:rb * 2 + 2, cb * 3:cb * 3 + 3].reshape(-1)   # trit (r, c) at r*C + c

    want = [tile(w, rb, cb) for rb in range(2) for w in (w0, w1) for cb in range(2)]
    np.testing.assert_array_equal(tiles, np.stack(want))
    # trit (r, c) of tile 0 is at r*C + c
    assert tiles[0, 1 * 3 + 2] == w0[1, 2]
    np.testing.assert_array_equal(pk.untile_stream(tiles, 2, 3, 4, 2, 3), np.stack([w0, w1]))


def test_tile_roundtrip_random():
    rng = np.random.default_rng(3)
    for _ in range(50):
        nseg, rows, n = int(rng.integers(1, 4)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
        R, C = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        segs = [rng.integers(-1, 2, size=(rows, n)).astype(np.int8) for _ in range(nseg)]
        tiles = pk.tile_stream(segs, R, C)
        assert len(tiles) == pk.n_tiles(rows, n, nseg, R, C)
        for packing in pk.PACKINGS:
            width = pk.word_bits(R * C, packing)
            words = pk.pack_tiles(tiles, packing, width)
            assert words.shape == (len(tiles), pk.word_bytes(width))
            back = pk.unpack_tiles(words, R * C, packing)
            np.testing.assert_array_equal(pk.untile_stream(back, nseg, rows, n, R, C), np.stack(segs))


def test_pack_tiles_wider_word():
    t = np.ones((2, 20), np.int8)
    w = pk.pack_tiles(t, "b3", 48)        # 4 packed bytes, zero-extended to 6
    assert w.shape == (2, 6) and not w[:, 4:].any()
    np.testing.assert_array_equal(pk.unpack_tiles(w, 20, "b3"), t)
    w[0, 5] = 1
    with pytest.raises(pk.PackingError, match="non-zero bits"):
        pk.unpack_tiles(w, 20, "b3")
    with pytest.raises(pk.PackingError, match="needs"):
        pk.pack_tiles(t, "b3", 16)


def test_int_words_and_hex():
    w = pk.int_words(np.array([-1, 5, 0x8000]), 16)
    assert w.tolist() == [[0xFF, 0xFF], [5, 0], [0, 0x80]]
    assert pk.hex_text(w, 16) == b"ffff\n0005\n8000\n"
    np.testing.assert_array_equal(pk.parse_hex(b"ffff\n0005\n8000\n", 16), w)
    assert pk.words_int(w, 16, signed=True).tolist() == [-1, 5, -32768]
    assert pk.words_int(w, 16).tolist() == [65535, 5, 32768]
    w64 = pk.int_words([2**64 - 1, 0x0F], 64)
    assert pk.hex_text(w64, 64) == b"ffffffffffffffff\n000000000000000f\n"
    assert [int(x) for x in pk.words_int(w64, 64)] == [2**64 - 1, 15]
    w18 = pk.int_words(np.array([0x3FFFF, 1]), 18)
    assert pk.hex_text(w18, 18) == b"3ffff\n00001\n"
    np.testing.assert_array_equal(pk.parse_hex(pk.hex_text(w18, 18), 18), w18)
    with pytest.raises(pk.PackingError, match="fit"):
        pk.int_words(np.array([1 << 16]), 16)
    with pytest.raises(pk.PackingError, match="fit"):
        pk.int_words(np.array([-(1 << 15) - 1]), 16)


def test_hex_bin_files_roundtrip(tmp_path):
    rng = np.random.default_rng(5)
    for width in (16, 18, 32, 40, 64, 416):
        nb = pk.word_bytes(width)
        words = rng.integers(0, 256, size=(37, nb), dtype=np.uint8)
        top = width - 8 * (nb - 1)
        words[:, -1] &= np.uint8((1 << top) - 1)
        pk.write_hex(tmp_path / "a.hex", words, width, chunk=10)
        lines = (tmp_path / "a.hex").read_text().splitlines()
        assert len(lines) == 37 and all(len(s) == pk.hex_digits(width) for s in lines)
        assert int(lines[3], 16) == int.from_bytes(words[3].tobytes(), "little")
        np.testing.assert_array_equal(pk.read_hex(tmp_path / "a.hex", width), words)
        pk.write_bin(tmp_path / "a.bin", words, width)
        assert (tmp_path / "a.bin").stat().st_size == 37 * nb
        np.testing.assert_array_equal(pk.read_bin(tmp_path / "a.bin", width), words)


def test_hex_errors(tmp_path):
    with pytest.raises(pk.PackingError, match="hex digit"):
        pk.parse_hex(b"00g0\n", 16)
    with pytest.raises(pk.PackingError, match="lines of 4"):
        pk.parse_hex(b"000\n", 16)
    with pytest.raises(pk.PackingError, match="above bit"):
        pk.hex_text(np.array([[0xFF, 0xFF, 0xFF]], np.uint8), 18)
    (tmp_path / "x.bin").write_bytes(b"\0" * 5)
    with pytest.raises(pk.PackingError, match="whole number"):
        pk.read_bin(tmp_path / "x.bin", 16)


def test_bram_placeholder():
    a = pk.bram_placeholder("wmem", 416, 64)
    assert a.shape == (64, 52)
    np.testing.assert_array_equal(a, pk.bram_placeholder("wmem", 416, 64))
    assert not np.array_equal(a[:, :2], pk.bram_placeholder("cmem", 16, 64))
    b = pk.bram_placeholder("x", 18, 100)
    assert (b[:, -1] < 4).all()
    assert len({r.tobytes() for r in a}) == 64          # words unique: the patch tools can find them
