"""Weight packings, tile order and memory-image word formats: the one definition.

The compiler packs with these functions, the golden machine
(:mod:`mmfree.model.machine`) unpacks with them, and the hardware's weight
decoder and memory initialisation follow them; docs/isa.md is the prose form.

Trit packings (one tile word = ``rows * cols`` trits):

``b3``  base 3, five trits per byte: ``byte = sum_i digit_i * 3^i`` over the
        trits ``5b .. 5b+4`` (first trit least significant), digit 0, 1, 2
        for trit 0, +1, -1. A word is ``ceil(rows*cols / 5)`` bytes, byte 0
        least significant; unused trits are 0. Bytes 243..255 are invalid.
``2b``  two bits per trit: trit ``i`` in bits ``[2i+1:2i]`` as ``00``,
        ``01``, ``11`` for 0, +1, -1 (``10`` is invalid); unused bits 0.

Tile order (docs/architecture.md): for a LINEAR whose segments are matrices
``W_0 .. W_{k-1}`` of equal shape ``[rows, n]``, zero padded to multiples of
``R`` rows and ``C`` columns::

    for rb in row blocks:  for s in segments:  for cb in column blocks:
        tile W_s[rb*R:(rb+1)*R, cb*C:(cb+1)*C]        trit (r, c) at index r*C + c

Words and files: a memory word of ``width`` bits is held as
``ceil(width / 8)`` bytes, least significant byte first (``uint8 [N, nbytes]``).
``.hex`` files have one word per line, ``ceil(width / 4)`` lowercase hex
digits, most significant first (``$readmemh``, and ``ecpbram``/``icebram``
patch files); ``.bin`` files are the words' bytes back to back, little endian.

Everything is vectorized numpy: a 370M-parameter model has ~370M trits.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .errors import MmfreeError

PACKINGS = ("b3", "2b")
B3_TRITS_PER_BYTE = 5
B3_MAX_BYTE = 3 ** B3_TRITS_PER_BYTE - 1     #: 242; larger bytes are invalid
TRITS_PER_2B_BYTE = 4
_POW3 = (1, 3, 9, 27, 81)


class PackingError(MmfreeError):
    """A packed word or image is malformed (invalid code, wrong size, non-ternary input)."""


# --------------------------------------------------------------------------
# sizes

def _check_packing(packing: str) -> None:
    if packing not in PACKINGS:
        raise PackingError(f"unknown packing {packing!r}; known: {', '.join(PACKINGS)}")


def packed_bytes(ntrits: int, packing: str) -> int:
    """Bytes that ``ntrits`` trits take in ``packing``."""
    _check_packing(packing)
    per = B3_TRITS_PER_BYTE if packing == "b3" else TRITS_PER_2B_BYTE
    return -(-ntrits // per)


def word_bits(lanes: int, packing: str) -> int:
    """Width in bits of one tile word of ``lanes`` trits."""
    _check_packing(packing)
    return 8 * packed_bytes(lanes, "b3") if packing == "b3" else 2 * lanes


def word_bytes(width: int) -> int:
    """Bytes of one memory word of ``width`` bits."""
    return -(-width // 8)


def hex_digits(width: int) -> int:
    """Hex digits of one memory word of ``width`` bits in a ``.hex`` file."""
    return -(-width // 4)


# --------------------------------------------------------------------------
# trit packings

def _check_trits(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t)
    if t.dtype != np.int8:
        if t.size and (t.min() < -1 or t.max() > 1):
            raise PackingError(f"trits must be -1, 0 or +1; got values in [{t.min()}, {t.max()}]")
        t = t.astype(np.int8)
    elif t.size and (t.min() < -1 or t.max() > 1):
        raise PackingError(f"trits must be -1, 0 or +1; got values in [{t.min()}, {t.max()}]")
    return t


def _pad_last(a: np.ndarray, to: int) -> np.ndarray:
    n = a.shape[-1]
    if n == to:
        return a
    out = np.zeros(a.shape[:-1] + (to,), dtype=a.dtype)
    out[..., :n] = a
    return out


def pack_b3(t: np.ndarray) -> np.ndarray:
    """Trits ``[..., n]`` -> base-3 bytes ``[..., ceil(n/5)]`` (uint8)."""
    t = _check_trits(t)
    n = t.shape[-1]
    nb = packed_bytes(n, "b3")
    # digit: 0 -> 0, +1 -> 1, -1 (0xff) -> 3 - 1 = 2
    d = t.view(np.uint8) & np.uint8(3)
    d -= d >> np.uint8(1)
    d = _pad_last(d, nb * B3_TRITS_PER_BYTE).reshape(t.shape[:-1] + (nb, B3_TRITS_PER_BYTE))
    out = d[..., 4] * np.uint8(81)
    for i in (3, 2, 1):
        out += d[..., i] * np.uint8(_POW3[i])
    out += d[..., 0]
    return out


def _b3_tables() -> tuple[np.ndarray, np.ndarray]:
    b = np.arange(256)
    digits = np.stack([(b // p) % 3 for p in _POW3], axis=1)
    trits = np.where(digits == 2, -1, digits).astype(np.int8)
    trits[B3_MAX_BYTE + 1:] = 0
    return trits, b <= B3_MAX_BYTE


_B3_TRITS, _B3_VALID = _b3_tables()


def unpack_b3(b: np.ndarray, n: int) -> np.ndarray:
    """Base-3 bytes ``[..., nb]`` -> ``n`` trits ``[..., n]`` (int8); invalid bytes raise."""
    b = np.asarray(b, dtype=np.uint8)
    nb = b.shape[-1]
    if nb != packed_bytes(n, "b3"):
        raise PackingError(f"{n} trits take {packed_bytes(n, 'b3')} base-3 bytes, got {nb}")
    bad = b > B3_MAX_BYTE
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise PackingError(f"invalid base-3 byte 0x{int(b[tuple(idx)]):02x} at {tuple(int(i) for i in idx)} "
                           f"(bytes above {B3_MAX_BYTE} encode no 5 trits)")
    rem = n - (nb - 1) * B3_TRITS_PER_BYTE
    if nb and rem < B3_TRITS_PER_BYTE and (b[..., -1] >= 3 ** rem).any():
        raise PackingError(f"base-3 padding trits are not zero (last byte must be < {3 ** rem})")
    t = _B3_TRITS[b].reshape(b.shape[:-1] + (nb * B3_TRITS_PER_BYTE,))
    return t[..., :n]


def pack_2b(t: np.ndarray) -> np.ndarray:
    """Trits ``[..., n]`` -> 2-bit codes ``[..., ceil(n/4)]`` (uint8)."""
    t = _check_trits(t)
    n = t.shape[-1]
    nb = packed_bytes(n, "2b")
    c = _pad_last(t.view(np.uint8) & np.uint8(3), nb * TRITS_PER_2B_BYTE)
    c = c.reshape(t.shape[:-1] + (nb, TRITS_PER_2B_BYTE))
    out = c[..., 3] << np.uint8(6)
    out |= c[..., 2] << np.uint8(4)
    out |= c[..., 1] << np.uint8(2)
    out |= c[..., 0]
    return out


def _2b_tables() -> tuple[np.ndarray, np.ndarray]:
    b = np.arange(256)
    codes = np.stack([(b >> (2 * i)) & 3 for i in range(TRITS_PER_2B_BYTE)], axis=1)
    trits = np.select([codes == 1, codes == 3], [1, -1], 0).astype(np.int8)
    return trits, ~(codes == 2).any(axis=1)


_2B_TRITS, _2B_VALID = _2b_tables()


def unpack_2b(b: np.ndarray, n: int) -> np.ndarray:
    """2-bit codes ``[..., nb]`` -> ``n`` trits ``[..., n]`` (int8); code ``10`` raises."""
    b = np.asarray(b, dtype=np.uint8)
    nb = b.shape[-1]
    if nb != packed_bytes(n, "2b"):
        raise PackingError(f"{n} trits take {packed_bytes(n, '2b')} 2-bit-code bytes, got {nb}")
    bad = ~_2B_VALID[b]
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise PackingError(f"invalid 2-bit trit code 10 in byte 0x{int(b[tuple(idx)]):02x} at "
                           f"{tuple(int(i) for i in idx)}")
    rem = n - (nb - 1) * TRITS_PER_2B_BYTE
    if nb and rem < TRITS_PER_2B_BYTE and (b[..., -1] >> np.uint8(2 * rem)).any():
        raise PackingError("2-bit padding bits are not zero")
    t = _2B_TRITS[b].reshape(b.shape[:-1] + (nb * TRITS_PER_2B_BYTE,))
    return t[..., :n]


def pack(t: np.ndarray, packing: str) -> np.ndarray:
    """Trits ``[..., n]`` -> packed bytes in ``packing`` (``"b3"`` or ``"2b"``)."""
    _check_packing(packing)
    return pack_b3(t) if packing == "b3" else pack_2b(t)


def unpack(b: np.ndarray, n: int, packing: str) -> np.ndarray:
    """Packed bytes ``[..., nb]`` -> ``n`` trits per row (int8)."""
    _check_packing(packing)
    return unpack_b3(b, n) if packing == "b3" else unpack_2b(b, n)


# --------------------------------------------------------------------------
# tile order

def n_tiles(rows: int, n: int, nseg: int, R: int, C: int) -> int:
    """Tiles of a LINEAR with ``nseg`` segments of ``rows x n`` on an ``R x C`` array."""
    return -(-rows // R) * nseg * -(-n // C)


def tile_stream(segments: list[np.ndarray], R: int, C: int) -> np.ndarray:
    """Segments (each ``[rows, n]`` ternary) -> tiles ``[ntiles, R*C]`` int8 in stream order."""
    if not segments:
        raise PackingError("a tile stream needs at least one segment")
    rows, n = segments[0].shape
    for s in segments:
        if s.shape != (rows, n):
            raise PackingError(f"segments must have equal shapes, got {[tuple(x.shape) for x in segments]}")
    nseg, nrb, ncb = len(segments), -(-rows // R), -(-n // C)
    buf = np.zeros((nseg, nrb * R, ncb * C), dtype=np.int8)
    for i, s in enumerate(segments):
        buf[i, :rows, :n] = _check_trits(s)
    buf = buf.reshape(nseg, nrb, R, ncb, C).transpose(1, 0, 3, 2, 4)
    return np.ascontiguousarray(buf).reshape(nrb * nseg * ncb, R * C)


def untile_stream(tiles: np.ndarray, nseg: int, rows: int, n: int, R: int, C: int) -> np.ndarray:
    """Inverse of :func:`tile_stream`: tiles ``[ntiles, R*C]`` -> ``[nseg, rows, n]``."""
    nrb, ncb = -(-rows // R), -(-n // C)
    if tiles.shape != (nrb * nseg * ncb, R * C):
        raise PackingError(f"expected {nrb * nseg * ncb} tiles of {R * C} trits, got {list(tiles.shape)}")
    buf = tiles.reshape(nrb, nseg, ncb, R, C).transpose(1, 0, 3, 2, 4).reshape(nseg, nrb * R, ncb * C)
    return buf[:, :rows, :n]


def pack_tiles(tiles: np.ndarray, packing: str, width: int | None = None) -> np.ndarray:
    """Tiles ``[ntiles, R*C]`` -> wmem words ``uint8 [ntiles, word_bytes(width)]``.

    ``width`` defaults to :func:`word_bits` of the tile; a wider memory word
    is zero-extended.
    """
    lanes = tiles.shape[-1]
    wb = word_bits(lanes, packing)
    width = wb if width is None else width
    if width < wb:
        raise PackingError(f"a {lanes}-trit tile in {packing} needs {wb} bits, the memory word has {width}")
    p = pack(tiles, packing)
    return _pad_last(p, word_bytes(width))


def unpack_tiles(words: np.ndarray, lanes: int, packing: str) -> np.ndarray:
    """wmem words ``uint8 [N, nbytes]`` -> tiles ``[N, lanes]`` int8 (bytes beyond the packing must be 0)."""
    nb = packed_bytes(lanes, packing)
    if words.shape[-1] > nb and words[..., nb:].any():
        raise PackingError("tile word has non-zero bits above its packed trits")
    return unpack(words[..., :nb], lanes, packing)


# --------------------------------------------------------------------------
# memory words and image files

def int_words(values, width: int) -> np.ndarray:
    """Integers (signed values as two's complement) -> words ``uint8 [N, word_bytes(width)]``.

    Raises if a value fits neither ``width`` signed nor ``width`` unsigned bits.
    """
    if not 1 <= width <= 64:
        raise PackingError(f"int_words handles widths 1..64, got {width}")
    lo, hi = -(1 << (width - 1)), (1 << width) - 1
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu" and values.dtype != np.uint64:
        v = values.astype(np.int64).reshape(-1)
        if v.size and (v.min() < lo or int(v.max()) > hi):
            raise PackingError(f"values in [{v.min()}, {v.max()}] do not fit {width} bits")
        u = v.astype(np.uint64)
    else:
        ints = [int(x) for x in np.asarray(values, dtype=object).reshape(-1)]
        for x in ints:
            if not lo <= x <= hi:
                raise PackingError(f"value {x} does not fit {width} bits")
        u = np.array([x & ((1 << width) - 1) for x in ints], dtype=np.uint64)
    if width < 64:
        u = u & np.uint64((1 << width) - 1)
    return u.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :word_bytes(width)].copy()


def words_int(words: np.ndarray, width: int, signed: bool = False) -> np.ndarray:
    """Words ``uint8 [N, nbytes]`` -> integers (int64; uint64 for unsigned 64-bit words)."""
    if not 1 <= width <= 64:
        raise PackingError(f"words_int handles widths 1..64, got {width}")
    n, nb = words.shape
    buf = np.zeros((n, 8), dtype=np.uint8)
    buf[:, :nb] = words
    u = buf.view("<u8").reshape(n)
    if width < 64:
        u = u & np.uint64((1 << width) - 1)
        v = u.astype(np.int64)
        if signed:
            v = np.where(v >= 1 << (width - 1), v - (1 << width), v)
        return v
    return u.view(np.int64) if signed else u


def _check_width(words: np.ndarray, width: int) -> None:
    nb = word_bytes(width)
    if words.ndim != 2 or words.shape[1] != nb:
        raise PackingError(f"words of {width} bits take {nb} bytes, got array of shape {list(words.shape)}")
    top = width - 8 * (nb - 1)
    if top < 8 and len(words) and (words[:, -1] >> np.uint8(top)).any():
        raise PackingError(f"word has bits set above bit {width - 1}")


_HEX_CHARS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_BYTE_HEX = np.stack([_HEX_CHARS[np.arange(256) >> 4], _HEX_CHARS[np.arange(256) & 15]], axis=1)
_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i


def hex_text(words: np.ndarray, width: int) -> bytes:
    """Words -> ``.hex`` file content: one word per line, ``ceil(width/4)`` digits, MSB first."""
    _check_width(words, width)
    n, nb = words.shape
    nd = hex_digits(width)
    txt = _BYTE_HEX[words[:, ::-1]].reshape(n, 2 * nb)[:, 2 * nb - nd:]
    out = np.empty((n, nd + 1), dtype=np.uint8)
    out[:, :nd] = txt
    out[:, nd] = ord("\n")
    return out.tobytes()


def parse_hex(data: bytes, width: int, source: str = "hex image") -> np.ndarray:
    """``.hex`` content written by :func:`hex_text` -> words ``uint8 [N, word_bytes(width)]``."""
    nd, nb = hex_digits(width), word_bytes(width)
    a = np.frombuffer(data, dtype=np.uint8)
    if a.size % (nd + 1):
        raise PackingError(f"{source}: expected lines of {nd} hex digits ({width}-bit words)")
    a = a.reshape(-1, nd + 1)
    if (a[:, nd] != ord("\n")).any():
        raise PackingError(f"{source}: line {int(np.argmax(a[:, nd] != ord(chr(10)))) + 1}: "
                           f"expected {nd} hex digits")
    nib = _NIBBLE[a[:, :nd]]
    if (nib == 255).any():
        raise PackingError(f"{source}: line {int(np.argwhere(nib == 255)[0][0]) + 1}: not a hex digit")
    if nd % 2:
        nib = np.concatenate([np.zeros((len(nib), 1), np.uint8), nib], axis=1)
    be = (nib[:, 0::2] << np.uint8(4)) | nib[:, 1::2]
    words = np.ascontiguousarray(be[:, ::-1][:, :nb])
    _check_width(words, width)
    return words


def write_hex(path: str | Path, words: np.ndarray, width: int, chunk: int = 1 << 20) -> None:
    """Write a ``.hex`` file (chunked, so huge images need little extra memory)."""
    with open(path, "wb") as f:
        for i in range(0, len(words), chunk):
            f.write(hex_text(words[i:i + chunk], width))


def read_hex(path: str | Path, width: int) -> np.ndarray:
    return parse_hex(Path(path).read_bytes(), width, str(path))


def write_bin(path: str | Path, words: np.ndarray, width: int) -> None:
    """Write a ``.bin`` file: the words' little-endian bytes back to back."""
    _check_width(words, width)
    with open(path, "wb") as f:
        f.write(np.ascontiguousarray(words).data)


def read_bin(path: str | Path, width: int) -> np.ndarray:
    nb = word_bytes(width)
    a = np.fromfile(path, dtype=np.uint8)
    if a.size % nb:
        raise PackingError(f"{path}: {a.size} bytes is not a whole number of {nb}-byte ({width}-bit) words")
    words = a.reshape(-1, nb)
    _check_width(words, width)
    return words


def bram_placeholder(name: str, width: int, depth: int) -> np.ndarray:
    """The initial contents a bitstream is built with so that its memory ``name`` can be patched.

    ``ecpbram`` and ``icebram`` find a memory in a bitstream by its initial
    contents, so those must be unique: a deterministic pseudo-random image
    seeded by the memory's name and shape. Hardware builds initialise every
    patchable memory with exactly this (as a ``.hex`` *from* file); the
    compiler writes it next to the new contents (the *to* file).
    """
    seed = int.from_bytes(hashlib.sha256(f"mmfree-bram:{name}:{width}x{depth}".encode()).digest()[:8], "little")
    nb = word_bytes(width)
    words = np.random.default_rng(seed).integers(0, 256, size=(depth, nb), dtype=np.uint8)
    top = width - 8 * (nb - 1)
    if top < 8:
        words[:, -1] &= np.uint8((1 << top) - 1)
    return words
