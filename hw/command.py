"""The command decoder: link frames in, replies out, the accelerator core driven in between.

It sits between :class:`~mmfree.hw.framer.FrameDecoder` and
:class:`~mmfree.hw.framer.FrameEncoder` and is the master of the core's
ports (:class:`mmfree.hw.coreif.CoreSignature`). Every command of
``docs/protocol.md`` section 3 is handled here; the byte layouts are those of
:mod:`mmfree.protocol`.

Contract
--------
* **One reply per frame, in order.** Every frame that leaves the frame
  decoder gets exactly one reply (GENERATE: ``count`` TOPK replies and a
  GENERATE_DONE), and every receive error on the decoder's ``error`` stream
  gets one ERROR reply with ``command = 0xFF`` and ``detail = 0`` (the
  hardware error stream carries only the code). A ``line_error`` pulse (UART
  framing error or overrun) gives one ERROR ``LINE_ERROR`` reply; pulses
  arriving while one is pending are merged.
* **Checks, in this order**, at the frame header: BUSY while a GENERATE runs
  (for *every* frame, whatever its opcode: the frame is consumed and
  answered so the link never stalls), UNKNOWN_COMMAND (``detail`` = opcode),
  BAD_LENGTH (``detail`` = length; lengths: PING any, INFO / RESET_STATE /
  READ_COUNTERS 0, STEP 2, GENERATE 4, SET_MODEL 20, LOAD at least 5).
  The payload of a rejected frame is read and dropped before the reply.
* **LOAD** ``mem u8, offset u32, data``: ``mem`` must name one of the
  target's memories (else BAD_ARGUMENT, ``detail`` = mem). The word size is
  ``wb = ceil(width / 8)`` bytes. ``offset`` must be a multiple of ``wb``
  (else BAD_ARGUMENT, ``detail`` = offset), ``len(data)`` too (else
  BAD_ARGUMENT, ``detail`` = ``len(data)``), and ``offset + len(data)`` must
  not pass the end of the memory (``depth * wb`` bytes; else BAD_ARGUMENT,
  ``detail`` = ``offset + len(data)``). All checks happen before the first
  word is written: a rejected LOAD writes nothing. An accepted LOAD (even
  one with no data) clears the model flag, assembles each ``wb`` bytes into
  one little-endian word and writes it through ``core.load`` at word address
  ``offset / wb + i``; the reply counts the data bytes. (One serial divider
  by ``wb`` takes the offset in 32 cycles, then the data length in as many
  cycles as ``max_payload`` has bits: words of the ``sim`` and ``ulx3s-85f``
  weight memory are 52 bytes. The range check compares byte addresses.)
* **SET_MODEL** ``hash[16], vocab u32``: ``vocab`` must be in
  ``1 .. 65536`` (else BAD_ARGUMENT, ``detail`` = vocab); sets the model
  flag, the hash and the vocabulary size. These three registers are
  ``reset_less``: a reset (a new simulator client, the reset button) keeps
  them, as it keeps the memories they describe; only a LOAD clears the flag.
* **STEP** ``token u16``: NO_MODEL before SET_MODEL, BAD_TOKEN
  (``detail`` = token) if ``token >= vocab``; else one ``core.cmd`` (reset
  0), then the ``topk`` result beats are collected and sent as one TOPK:
  ``k`` = the beats with ``present`` set (the core sends present ones
  first), ``scale_m`` = ``m``, ``scale_e`` = the low 16 bits of ``e``,
  ``ids``, ``accs`` sign-extended to 32 bits. If ``core.error`` is set after
  the step, the reply is ERROR INTERNAL (``detail`` 1) instead; no present
  beat gives INTERNAL ``detail`` 2. While a STEP runs, frames wait in the
  frame decoder (they are not BUSY).
* **GENERATE** ``token u16, count u16``: the same checks as STEP, then
  ``count`` steps; each sends one TOPK and feeds its ``ids[0]`` to the next
  step; then GENERATE_DONE with the number of TOPK replies sent.
  ``count = 0`` sends GENERATE_DONE(0) at once. A step that fails
  (INTERNAL as for STEP, or ``ids[0] >= vocab``: INTERNAL ``detail`` 3)
  sends its ERROR reply instead of the TOPK and ends the run: the stream
  always ends with GENERATE_DONE. While it runs, every frame gets an ERROR
  BUSY reply (``command`` = its opcode) and receive errors their ERROR
  replies, interleaved between the TOPK replies.
* **RESET_STATE**: one ``core.cmd`` with ``reset = 1``; the empty reply is
  sent once ``core.busy`` is low again.
* **READ_COUNTERS**: ``n = len(core.counters)``, then each counter as u64
  (zero-extended), each sampled once when its first byte is sent.
* **INFO**: build-time constants (protocol version, ``hw_version``,
  ``max_payload``, the target's ``rows``, ``cols``, ``vec_lanes``, ``topk``,
  ``clock_hz`` (0 when unknown, e.g. the ``sim`` target) and its memories
  in id order) plus the model flag and hash.

It never hangs on any input: every state that waits on the link or the
frame decoder has a bounded amount of input to consume, and the only other
waits are on the core (``cmd.ready``, ``load.ready``, result beats, ``busy``)
and on the frame encoder.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree.numerics import ACC_BITS
from mmfree.protocol import (LOAD_HEADER_BYTES, MAX_PAYLOAD, MIN_MAX_PAYLOAD, MODEL_HASH_BYTES, PROTOCOL_VERSION,
                             Command, ErrorCode, Info, MemoryId, MemoryInfo, Reply)

from .coreif import ADDR_BITS, CoreSignature
from .framer import HeaderLayout, PayloadLayout

__all__ = ["CommandDecoder", "HW_VERSION", "check_parameters", "INTERNAL_CORE_ERROR", "INTERNAL_NO_RESULT", "INTERNAL_BAD_NEXT_TOKEN",
           "command_lengths", "memory_table"]

#: INFO ``hw_version`` of this command decoder and SoC.
HW_VERSION = 1

#: ERROR INTERNAL details.
INTERNAL_CORE_ERROR = 1       #: core.error was set after the step
INTERNAL_NO_RESULT = 2        #: no result beat had ``present`` set
INTERNAL_BAD_NEXT_TOKEN = 3   #: GENERATE: ids[0] >= vocab, cannot be fed back

_SET_MODEL_BYTES = MODEL_HASH_BYTES + 4
_ARG_WORDS = LOAD_HEADER_BYTES  # argument bytes kept in registers (SET_MODEL's vocab reuses the first 4)
_INFO_HASH = 17                 # offset of model_hash in the INFO payload


def command_lengths() -> dict[Command, tuple[int, bool]]:
    """Payload length per command: ``(n, exact)``; ``exact=False`` means "at least n"."""
    return {Command.PING: (0, False), Command.INFO: (0, True), Command.LOAD: (LOAD_HEADER_BYTES, False),
            Command.RESET_STATE: (0, True), Command.STEP: (2, True), Command.GENERATE: (4, True),
            Command.READ_COUNTERS: (0, True), Command.SET_MODEL: (_SET_MODEL_BYTES, True)}


def memory_table(target, memories=None) -> list[MemoryInfo]:
    """The loadable memories (those named like a :class:`MemoryId`) in id order, with width and depth.

    ``memories`` (name -> (width, depth), e.g. ``Core.memories``) overrides the target's.
    """
    shapes = {m.name: (m.width, m.depth) for m in target.memories}
    if memories is not None:
        shapes.update({k: tuple(v) for k, v in dict(memories).items()})
    table = []
    for mid in MemoryId:
        name = mid.name.lower()
        if name not in shapes:
            continue
        width, depth = shapes[name]
        if depth is None:
            raise ValueError(f"target {target.name}: memory {name} has no depth; size the target first "
                             f"(e.g. mmfree.sim.harness.target_from_compiled)")
        if not 0 < depth <= 1 << ADDR_BITS:
            raise ValueError(f"memory {name}: depth {depth} is outside 1 .. 2**{ADDR_BITS}")
        table.append(MemoryInfo(int(mid), width, depth))
    if not table:
        raise ValueError(f"target {target.name}: no loadable memory")
    return table


def check_parameters(target, *, max_payload: int = MAX_PAYLOAD, data_bits: int | None = None,
                     memories=None) -> int:
    """Check a command decoder's parameters without building one; returns ``data_bits`` (resolved)."""
    if isinstance(max_payload, bool) or not isinstance(max_payload, int) \
            or not MIN_MAX_PAYLOAD <= max_payload <= MAX_PAYLOAD:
        raise ValueError(f"max_payload must be an integer in [{MIN_MAX_PAYLOAD}, {MAX_PAYLOAD}], "
                         f"got {max_payload!r}")
    mems = memory_table(target, memories)
    widest = max(m.width for m in target.memories)
    if memories is not None:
        widest = max([widest, *(w for w, _ in dict(memories).values())])
    data_bits = widest if data_bits is None else data_bits
    if any(m.width > data_bits for m in mems):
        raise ValueError(f"data_bits {data_bits} is narrower than a memory word ({max(m.width for m in mems)} bits)")
    if not 1 <= target.topk <= 255:
        raise ValueError(f"topk must be in 1..255, got {target.topk}")
    return data_bits


class _K(enum.IntEnum):
    """What the reply payload bytes come from."""
    NONE = 0
    PONG = 1
    INFO = 2
    LOAD = 3
    TOPK = 4
    DONE = 5
    COUNTERS = 6
    ERROR = 7


class CommandDecoder(wiring.Component):
    """Protocol commands to core operations and replies (see the module docstring for the contract).

    Parameters
    ----------
    target : mmfree.targets.Target
        Tile shape, ``topk``, ``clock_hz`` and memories (depths set) that
        INFO reports and LOAD checks against.
    max_payload : int
        The frame decoder's ``max_payload`` (reported by INFO).
    data_bits : int, optional
        Width of ``core.load.payload.data``; default the widest memory word.
    memories : mapping, optional
        name -> (width, depth) overriding the target's (``Core.memories``).
    clock_hz : int, optional
        INFO ``clock_hz``; default ``target.clock_hz`` (0 if None).
    hw_version : int
        INFO ``hw_version``.

    Members
    -------
    header, payload, error : In
        The frame decoder's outputs (:data:`~mmfree.hw.framer.HeaderLayout`,
        :data:`~mmfree.hw.framer.PayloadLayout`, 8-bit error codes). A
        header's length must not exceed ``max_payload`` (the frame decoder
        of the same ``max_payload`` guarantees it): lengths are kept in
        registers of ``max_payload``'s width.
    tx_header, tx_payload : Out
        The frame encoder's inputs.
    core : ``In(CoreSignature(data_bits))``
        The core's ports, flipped: ``load`` and ``cmd`` out, ``result``,
        ``busy``, ``error``, ``counters`` in.
    line_error : In(1)
        Pulse: bytes were lost on the line (UART framing error, overrun).
    idle : Out(1)
        Nothing in progress and nothing waiting (for a simulator to sleep).
    model_set : Out(1)
        The model flag (for a status LED).
    active : Out(1)
        A STEP or GENERATE is in progress (for a status LED).
    """

    def __init__(self, target, *, max_payload: int = MAX_PAYLOAD, data_bits: int | None = None, memories=None,
                 clock_hz: int | None = None, hw_version: int = HW_VERSION):
        self.data_bits = check_parameters(target, max_payload=max_payload, data_bits=data_bits, memories=memories)
        self.target = target
        self.max_payload = max_payload
        self.mems = memory_table(target, memories)
        self.topk = target.topk
        self.clock_hz = int(target.clock_hz or 0) if clock_hz is None else int(clock_hz)
        self.hw_version = hw_version
        super().__init__({
            "header": In(stream.Signature(HeaderLayout)),
            "payload": In(stream.Signature(PayloadLayout)),
            "error": In(stream.Signature(8)),
            "tx_header": Out(stream.Signature(HeaderLayout)),
            "tx_payload": Out(stream.Signature(PayloadLayout)),
            "core": In(CoreSignature(self.data_bits)),
            "line_error": In(1),
            "idle": Out(1),
            "model_set": Out(1),
            "active": Out(1),
        })

    # ------------------------------------------------------------------ constants

    def info_template(self) -> bytes:
        """INFO payload with the flags and hash zeroed (the hardware fills them in)."""
        t = self.target
        return Info(PROTOCOL_VERSION, self.hw_version, 0, self.max_payload, t.rows, t.cols, t.vec_lanes,
                    self.topk, self.clock_hz, bytes(MODEL_HASH_BYTES), tuple(self.mems)).pack()

    def elaborate(self, platform):
        m = Module()
        core = self.core
        k = self.topk
        n_ctr = len(core.counters)

        # -------------------------------------------------------------- registers
        # lengths and byte counts need only max_payload's width (the frame decoder checks the length)
        reply_max = max(self.max_payload, len(self.info_template()), 5 + 6 * k, 1 + 8 * n_ctr, 7)
        op = Signal(8)
        length = Signal(range(self.max_payload + 1))  # LOAD: the data length (less the header) from LOAD_CHECK
        cnt = Signal(range(self.max_payload + 1))     # payload bytes taken of the current frame
        # argument bytes 0..4 (STEP token, GENERATE token and count, LOAD mem and offset); SET_MODEL's
        # vocab (payload bytes 16..19) lands in bytes 0..3 and its hash goes to the INFO memory
        args = Signal(8 * _ARG_WORDS)

        r_op = Signal(8)
        r_len = Signal(range(reply_max + 1))
        r_kind = Signal(_K)
        idx = Signal(range(reply_max + 1))       # reply payload bytes sent
        post = Signal()                          # after this reply: continue the STEP/GENERATE
        slot = Signal(range(max(k, n_ctr) + 1))
        sub = Signal(3)
        tph = Signal(2)                          # TOPK phase: 0 head, 1 ids, 2 accs

        err_code = Signal(8)
        err_cmd = Signal(8)
        err_detail = Signal(32)
        line_err = Signal()

        model_set = Signal(reset_less=True)
        hbank = Signal(reset_less=True)          # which half of the INFO memory holds the model hash
        vocab = Signal(17, reset_less=True)

        active = Signal()
        gen = Signal()
        issue = Signal()
        failed = Signal()
        token = Signal(16)
        remaining = Signal(16)
        done = Signal(16)

        ids = Array(Signal(16, name=f"id{j}") for j in range(k))
        accs = Array(Signal(signed(ACC_BITS), name=f"acc{j}") for j in range(k))
        n_res = Signal(range(k + 1))
        scale_m = Signal(16)
        scale_e = Signal(signed(18))

        c_snap = Signal(64)

        # LOAD: mem = args[:8], offset = args[8:40], data length = length (rewritten in LOAD_CHECK)
        wb_max = max((mi.width + 7) // 8 for mi in self.mems)
        l_off = args[8:40]
        l_wb_last = Signal(range(wb_max))
        waddr = Signal(max(1, (max(mi.depth for mi in self.mems) - 1).bit_length()))
        word = Signal(8 * wb_max)
        bpos = Signal(range(wb_max))
        l_pending = Signal()
        l_last = Signal()
        div_d = Signal(range(wb_max + 1))
        div_i = Signal(range(33 + len(length)))
        rem = Signal(range(max(wb_max, 2)))
        off_bad = Signal()
        len_bad = Signal()

        m.d.comb += [self.model_set.eq(model_set), self.active.eq(active)]

        with m.If(self.line_error):
            m.d.sync += line_err.eq(1)

        # memory id tables (ids 0..3)
        valid_ids = [0] * 4
        wb_last_t = [0] * 4
        limit_t = [0] * 4                        # memory size in bytes
        for mi in self.mems:
            valid_ids[mi.mem] = 1
            wb_last_t[mi.mem] = (mi.width + 7) // 8 - 1
            limit_t[mi.mem] = mi.depth * ((mi.width + 7) // 8)
        valid_a = Array(Const(v, 1) for v in valid_ids)
        wb_last_a = Array(Const(v, range(wb_max)) for v in wb_last_t)
        limit_a = Array(Const(v, range(max(limit_t) + 1)) for v in limit_t)

        # -------------------------------------------------------------- reply payload bytes
        tx_byte = Signal(8)
        # INFO comes from a memory of two copies of the template: the model hash of SET_MODEL is written
        # into the copy not in use, which replaces the other once the command is accepted (a rejected
        # SET_MODEL changes nothing). Like the registers it replaces, the memory keeps the hash over a reset.
        info = list(self.info_template())
        info_len = len(info)
        ia_bits = (info_len - 1).bit_length()
        assert info[_INFO_HASH:_INFO_HASH + MODEL_HASH_BYTES] == [0] * MODEL_HASH_BYTES
        m.submodules.info_mem = info_mem = memory.Memory(shape=8, depth=2 << ia_bits,
                                                         init=(info + [0] * ((1 << ia_bits) - info_len)) * 2)
        info_rd = info_mem.read_port(domain="sync")
        info_wr = info_mem.write_port()
        idx_inc = Signal.like(idx)
        idx_next = Signal.like(idx)              # idx after this cycle (the INFO memory's read address)
        m.d.comb += [idx_inc.eq(idx + 1), idx_next.eq(idx),
                     info_rd.addr.eq(Cat(idx_next[:ia_bits], hbank))]
        acc32 = Signal(signed(32))
        k8 = Signal(8)
        m.d.comb += [acc32.eq(accs[slot]), k8.eq(n_res)]
        with m.Switch(r_kind):
            with m.Case(_K.INFO):
                m.d.comb += tx_byte.eq(Mux(idx == 3, Cat(model_set, Const(0, 7)), info_rd.data))
            with m.Case(_K.LOAD):
                m.d.comb += tx_byte.eq(Cat(args[:40], length, Const(0, 8)).word_select(idx[:3], 8))
            with m.Case(_K.DONE):
                m.d.comb += tx_byte.eq(done.word_select(idx[0], 8))
            with m.Case(_K.ERROR):
                m.d.comb += tx_byte.eq(Cat(err_code, err_cmd, err_detail, Const(0, 16)).word_select(idx[:3], 8))
            with m.Case(_K.COUNTERS):
                with m.If(idx == 0):
                    m.d.comb += tx_byte.eq(n_ctr)
                with m.Else():
                    m.d.comb += tx_byte.eq(c_snap.word_select(sub, 8))
            with m.Case(_K.TOPK):
                with m.Switch(tph):
                    with m.Case(0):
                        m.d.comb += tx_byte.eq(Cat(k8, scale_m, scale_e[:16], Const(0, 24)).word_select(idx[:3], 8))
                    with m.Case(1):
                        m.d.comb += tx_byte.eq(ids[slot].word_select(sub[0], 8))
                    with m.Default():
                        m.d.comb += tx_byte.eq(acc32.word_select(sub[:2], 8))

        ctr_a = Array(core.counters[j] for j in range(n_ctr))
        c_idx = Signal(range(n_ctr + 1))         # the counter that c_snap samples (one mux for both places)

        # -------------------------------------------------------------- helpers (sync actions)
        def reply(opcode, nbytes, kind, *, after_step=False):
            m.d.sync += [r_op.eq(opcode), r_len.eq(nbytes), r_kind.eq(kind), idx.eq(0), slot.eq(0), sub.eq(0),
                         tph.eq(0), post.eq(after_step)]

        def error(code, command, detail=0, *, after_step=False):
            m.d.sync += [err_code.eq(code), err_cmd.eq(command), err_detail.eq(detail)]
            reply(Reply.ERROR, 6, _K.ERROR, after_step=after_step)

        def drain_then_send(more):
            """Read the rest of the frame's payload (if ``more``), then send the prepared reply."""
            with m.If(more):
                m.next = "DRAIN"
            with m.Else():
                m.next = "SEND_HDR"

        def finish():
            with m.If(post):
                m.next = "POST"
            with m.Else():
                m.next = "IDLE"

        lengths = command_lengths()
        hdr_op = self.header.payload.opcode
        hdr_len = self.header.payload.length
        known = Signal()
        len_ok = Signal()
        h_known = Signal()                       # known / len_ok of the header taken, registered
        h_len_ok = Signal()
        m.d.comb += known.eq(hdr_op < len(Command))
        with m.Switch(hdr_op):
            for c, (n, exact) in lengths.items():
                with m.Case(int(c)):
                    m.d.comb += len_ok.eq((hdr_len == n) if exact else (hdr_len >= n))

        a_token = args[:16]
        a_count = args[16:32]
        a_vocab = args[:32]

        # -------------------------------------------------------------- FSM
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.idle.eq(~active & ~line_err & ~self.error.valid & ~self.header.valid)
                with m.If(active & issue):
                    m.d.comb += [core.cmd.valid.eq(1), core.cmd.payload.reset.eq(0),
                                 core.cmd.payload.token.eq(token)]
                    with m.If(core.cmd.ready):
                        m.d.sync += issue.eq(0)
                with m.Elif(active & core.result.valid):
                    m.d.sync += n_res.eq(0)
                    m.next = "COLLECT"
                with m.Elif(~active | gen):
                    with m.If(self.error.valid):
                        m.d.comb += self.error.ready.eq(1)
                        error(self.error.payload, 0xFF)
                        m.next = "SEND_HDR"
                    with m.Elif(line_err):
                        m.d.sync += line_err.eq(0)
                        error(ErrorCode.LINE_ERROR, 0xFF)
                        m.next = "SEND_HDR"
                    with m.Elif(self.header.valid):
                        # the header and its checks are registered; HEADER acts on them a cycle later
                        m.d.comb += self.header.ready.eq(1)
                        m.d.sync += [op.eq(hdr_op), length.eq(hdr_len), cnt.eq(0), h_known.eq(known),
                                     h_len_ok.eq(len_ok)]
                        m.next = "HEADER"

            with m.State("HEADER"):
                more = length != 0
                with m.If(active):
                    error(ErrorCode.BUSY, op)
                    drain_then_send(more)
                with m.Elif(~h_known):
                    error(ErrorCode.UNKNOWN_COMMAND, op, op)
                    drain_then_send(more)
                with m.Elif(~h_len_ok):
                    error(ErrorCode.BAD_LENGTH, op, length)
                    drain_then_send(more)
                with m.Elif(op == Command.PING):
                    reply(Reply.PONG, length, _K.PONG)
                    m.next = "SEND_HDR"
                with m.Elif(more):
                    m.next = "ARGS"
                with m.Else():
                    m.next = "EXEC"

            with m.State("DRAIN"):
                m.d.comb += self.payload.ready.eq(1)
                with m.If(self.payload.valid & self.payload.payload.last):
                    m.next = "SEND_HDR"

            with m.State("ARGS"):
                m.d.comb += self.payload.ready.eq(1)
                with m.If(self.payload.valid):
                    data_in = self.payload.payload.data
                    with m.If(cnt < _ARG_WORDS):
                        m.d.sync += args.word_select(cnt[:3], 8).eq(data_in)
                    with m.Elif((cnt >= MODEL_HASH_BYTES) & (cnt < _SET_MODEL_BYTES)):
                        m.d.sync += args.word_select(cnt[:2], 8).eq(data_in)
                    # hash bytes (SET_MODEL) into the unused INFO copy; harmless for other commands
                    m.d.comb += [info_wr.addr.eq(Cat((cnt[:4] + _INFO_HASH)[:ia_bits], ~hbank)), info_wr.data.eq(data_in),
                                 info_wr.en.eq(cnt < MODEL_HASH_BYTES)]
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If((op == Command.LOAD) & (cnt == LOAD_HEADER_BYTES - 1)):
                        m.next = "LOAD_CHECK"
                    with m.Elif(self.payload.payload.last):
                        m.next = "EXEC"

            with m.State("EXEC"):
                with m.Switch(op):
                    with m.Case(Command.INFO):
                        reply(Reply.INFO, info_len, _K.INFO)
                        m.next = "SEND_HDR"
                    with m.Case(Command.RESET_STATE):
                        m.next = "RST_CMD"
                    with m.Case(Command.STEP, Command.GENERATE):
                        is_gen = op == Command.GENERATE
                        m.next = "SEND_HDR"
                        with m.If(~model_set):
                            error(ErrorCode.NO_MODEL, op)
                        with m.Elif(a_token >= vocab):
                            error(ErrorCode.BAD_TOKEN, op, a_token)
                        with m.Elif(is_gen & (a_count == 0)):
                            m.d.sync += done.eq(0)
                            reply(Reply.GENERATE_DONE, 2, _K.DONE)
                        with m.Else():
                            m.d.sync += [active.eq(1), gen.eq(is_gen), issue.eq(1), failed.eq(0),
                                         token.eq(a_token), remaining.eq(Mux(is_gen, a_count, 1)), done.eq(0)]
                            m.next = "IDLE"
                    with m.Case(Command.READ_COUNTERS):
                        reply(Reply.COUNTERS, 1 + 8 * n_ctr, _K.COUNTERS)
                        m.next = "SEND_HDR"
                    with m.Case(Command.SET_MODEL):
                        m.next = "SEND_HDR"
                        with m.If((a_vocab == 0) | (a_vocab > (1 << 16))):
                            error(ErrorCode.BAD_ARGUMENT, op, a_vocab)
                        with m.Else():
                            m.d.sync += [model_set.eq(1), hbank.eq(~hbank), vocab.eq(a_vocab)]
                            reply(Reply.SET_MODEL, 0, _K.NONE)
                    with m.Default():       # unreachable: checked at the header
                        error(ErrorCode.INTERNAL, op, 0)
                        m.next = "SEND_HDR"

            # ---------------------------------------------------------- RESET_STATE
            with m.State("RST_CMD"):
                m.d.comb += [core.cmd.valid.eq(1), core.cmd.payload.reset.eq(1), core.cmd.payload.token.eq(0)]
                with m.If(core.cmd.ready):
                    m.next = "RST_WAIT"
            with m.State("RST_WAIT"):
                with m.If(~core.busy):
                    reply(Reply.RESET_STATE, 0, _K.NONE)
                    m.next = "SEND_HDR"

            # ---------------------------------------------------------- LOAD
            with m.State("LOAD_CHECK"):
                mem8 = args[:8]
                mid = mem8[:2]
                dlen = length - LOAD_HEADER_BYTES
                m.d.sync += length.eq(dlen)
                with m.If((mem8 >= 4) | ~valid_a[mid]):
                    error(ErrorCode.BAD_ARGUMENT, Command.LOAD, mem8)
                    drain_then_send(dlen != 0)
                with m.Else():
                    m.d.sync += [l_wb_last.eq(wb_last_a[mid]), div_d.eq(wb_last_a[mid] + 1), div_i.eq(0),
                                 rem.eq(0)]
                    m.next = "LOAD_DIV"

            with m.State("LOAD_DIV"):
                # one serial divider by the word size, first over the offset (32 cycles: its quotient
                # is the first word address), then over the data length (len(length) cycles: only the
                # remainder counts). Each operand is rotated in place, so it is intact afterwards.
                len_phase = div_i[5]
                r2 = Cat(Mux(len_phase, length[-1], l_off[31]), rem)
                ge = r2 >= div_d
                r_new = Mux(ge, r2 - div_d, r2)
                m.d.sync += [rem.eq(r_new), div_i.eq(div_i + 1)]
                with m.If(len_phase):
                    m.d.sync += length.eq(Cat(length[-1], length[:-1]))
                with m.Else():
                    m.d.sync += [l_off.eq(Cat(l_off[31], l_off[:31])), waddr.eq(Cat(ge, waddr[:-1]))]
                with m.If(div_i == 31):
                    m.d.sync += [off_bad.eq(r_new != 0), rem.eq(0)]
                with m.If(div_i == 31 + len(length)):
                    m.d.sync += len_bad.eq(r_new != 0)
                    m.next = "LOAD_RANGE"

            with m.State("LOAD_RANGE"):
                more = length != 0
                # offset and length are whole words here, so the byte end is past the memory's end
                # exactly when the word end is
                l_end = Signal(33)
                m.d.comb += l_end.eq(l_off + length)
                with m.If(off_bad):
                    error(ErrorCode.BAD_ARGUMENT, Command.LOAD, l_off)
                    drain_then_send(more)
                with m.Elif(len_bad):
                    error(ErrorCode.BAD_ARGUMENT, Command.LOAD, length)
                    drain_then_send(more)
                with m.Elif(l_end > limit_a[args[:2]]):
                    error(ErrorCode.BAD_ARGUMENT, Command.LOAD, l_end[:32])
                    drain_then_send(more)
                with m.Else():
                    m.d.sync += [model_set.eq(0), bpos.eq(0), word.eq(0), l_pending.eq(0), l_last.eq(~more)]
                    m.next = "LOAD_DATA"

            with m.State("LOAD_DATA"):
                m.d.comb += [core.load.valid.eq(l_pending), core.load.payload.mem.eq(args[:2]),
                             core.load.payload.addr.eq(waddr), core.load.payload.data.eq(word),
                             self.payload.ready.eq((~l_pending | core.load.ready) & ~l_last)]
                # a word leaving and the next word's first byte arriving may share a cycle: the byte's
                # statements come later and win (one byte per cycle, whatever the word size)
                with m.If(core.load.valid & core.load.ready):
                    m.d.sync += [l_pending.eq(0), waddr.eq(waddr + 1), word.eq(0)]
                with m.If(self.payload.valid & self.payload.ready):
                    m.d.sync += word.word_select(bpos, 8).eq(self.payload.payload.data)
                    with m.If(bpos == l_wb_last):
                        m.d.sync += [bpos.eq(0), l_pending.eq(1)]
                    with m.Else():
                        m.d.sync += bpos.eq(bpos + 1)
                    with m.If(self.payload.payload.last):
                        m.d.sync += l_last.eq(1)
                with m.If(l_last & ~l_pending):
                    reply(Reply.LOAD, 7, _K.LOAD)
                    m.next = "SEND_HDR"

            # ---------------------------------------------------------- results of a step
            with m.State("COLLECT"):
                m.d.comb += core.result.ready.eq(1)
                res = core.result.payload
                with m.If(core.result.valid):
                    with m.If(res.present & (n_res < k)):
                        m.d.sync += [ids[n_res].eq(res.id), accs[n_res].eq(res.acc), n_res.eq(n_res + 1),
                                     scale_m.eq(res.m), scale_e.eq(res.e)]
                    with m.If(res.last):
                        m.next = "CHECK"

            with m.State("CHECK"):
                run_op = Mux(gen, Command.GENERATE, Command.STEP)
                m.next = "SEND_HDR"
                with m.If(core.error):
                    m.d.sync += failed.eq(1)
                    error(ErrorCode.INTERNAL, run_op, INTERNAL_CORE_ERROR, after_step=True)
                with m.Elif(n_res == 0):
                    m.d.sync += failed.eq(1)
                    error(ErrorCode.INTERNAL, run_op, INTERNAL_NO_RESULT, after_step=True)
                with m.Elif(gen & (ids[0] >= vocab)):
                    m.d.sync += failed.eq(1)
                    error(ErrorCode.INTERNAL, run_op, INTERNAL_BAD_NEXT_TOKEN, after_step=True)
                with m.Else():
                    reply(Reply.TOPK, 5 + 6 * n_res, _K.TOPK, after_step=True)

            with m.State("POST"):
                m.d.sync += post.eq(0)
                with m.If(~failed):
                    m.d.sync += done.eq(done + 1)
                with m.If(gen & ~failed & (remaining > 1)):
                    m.d.sync += [remaining.eq(remaining - 1), token.eq(ids[0]), issue.eq(1)]
                    m.next = "IDLE"
                with m.Elif(gen):
                    m.d.sync += [active.eq(0), gen.eq(0)]
                    reply(Reply.GENERATE_DONE, 2, _K.DONE)
                    m.next = "SEND_HDR"
                with m.Else():
                    m.d.sync += active.eq(0)
                    m.next = "IDLE"

            # ---------------------------------------------------------- reply sender
            with m.State("SEND_HDR"):
                m.d.comb += [self.tx_header.valid.eq(1), self.tx_header.payload.opcode.eq(r_op),
                             self.tx_header.payload.length.eq(r_len)]
                with m.If(self.tx_header.ready):
                    with m.If(r_kind == _K.COUNTERS):
                        m.d.sync += c_snap.eq(ctr_a[c_idx])
                    with m.If(r_len == 0):
                        finish()
                    with m.Else():
                        m.next = "SEND_BODY"

            with m.State("SEND_BODY"):
                last = idx == r_len - 1
                m.d.comb += self.tx_payload.payload.last.eq(last)
                with m.If(r_kind == _K.PONG):
                    m.d.comb += [self.tx_payload.valid.eq(self.payload.valid),
                                 self.tx_payload.payload.data.eq(self.payload.payload.data),
                                 self.payload.ready.eq(self.tx_payload.ready)]
                with m.Else():
                    m.d.comb += [self.tx_payload.valid.eq(1), self.tx_payload.payload.data.eq(tx_byte)]
                m.d.comb += c_idx.eq(slot + 1)
                with m.If(self.tx_payload.valid & self.tx_payload.ready):
                    m.d.comb += idx_next.eq(idx_inc)
                    m.d.sync += idx.eq(idx_inc)
                    with m.Switch(r_kind):
                        with m.Case(_K.COUNTERS):
                            with m.If(idx != 0):
                                m.d.sync += sub.eq(sub + 1)
                                with m.If((sub == 7) & (slot < n_ctr - 1)):
                                    m.d.sync += [slot.eq(slot + 1), c_snap.eq(ctr_a[c_idx])]
                        with m.Case(_K.TOPK):
                            with m.Switch(tph):
                                with m.Case(0):
                                    with m.If(idx == 4):
                                        m.d.sync += [tph.eq(1), slot.eq(0), sub.eq(0)]
                                with m.Case(1):
                                    m.d.sync += sub.eq(sub[0] ^ 1)
                                    with m.If(sub[0]):
                                        m.d.sync += slot.eq(slot + 1)
                                        with m.If(slot == n_res - 1):
                                            m.d.sync += [tph.eq(2), slot.eq(0)]
                                with m.Default():
                                    m.d.sync += sub.eq(sub[:2] + 1)
                                    with m.If(sub[:2] == 3):
                                        m.d.sync += [slot.eq(slot + 1), sub.eq(0)]
                    with m.If(last):
                        finish()

        return m
