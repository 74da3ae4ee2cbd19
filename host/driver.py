"""Host driver: one client for a board (``/dev/ttyUSB0``) and the Verilator harness (``socket://HOST:PORT``).

:class:`Device` speaks the link protocol of :mod:`mmfree.protocol`
(``docs/protocol.md``) over any pyserial URL::

    with Device("socket://127.0.0.1:5555") as dev:
        info = dev.info()
        if not dev.loaded_matches(manifest):
            dev.load_compiled("out/")          # LOAD x n, then SET_MODEL
        dev.reset_state()
        for b in b"def ":
            top = dev.step(b)                  # protocol.TopK
        for top in dev.generate(top.ids[0], 20):
            ...

Every command has a deadline: ``timeout`` plus twice the wire time of the
request and its reply at ``baudrate`` (8N1: 10 bits a byte), plus
``step_timeout`` per decoding step for STEP and GENERATE (each TOPK of a
GENERATE stream gets its own deadline, so a long stream never times out as a
whole). A command that gets no reply in time, a garbled reply (bad CRC,
truncated frame) or a receive-error report of the device (ERROR with command
``0xFF``: BAD_CRC, BAD_LENGTH, TRUNCATED, LINE_ERROR) is retried after the
protocol's recovery rule: discard input until the line has been silent for
``settle`` seconds (at least one device inter-byte timeout), then resend.
PING, INFO, LOAD, RESET_STATE, READ_COUNTERS and SET_MODEL are idempotent and
simply resent; a STEP is resent after RESET_STATE and a replay of the tokens
fed since the last :meth:`Device.reset_state`, so the recurrent state is
right whether or not the lost STEP ran. GENERATE is not retried.

Failures raise :class:`mmfree.errors.LinkError` subclasses whose one-line
message names the port and the command: :class:`LinkTimeout` (no reply),
:class:`DeviceError` (an ERROR reply; ``.reply`` is the
:class:`~mmfree.protocol.ErrorReply`, its code name is in the message). A
compiled model that does not fit the device raises
:class:`mmfree.errors.CapacityError` (or :class:`~mmfree.errors.MmfreeError`
for a shape or word-width mismatch) naming the memory and the numbers before
anything is loaded.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import serial

from mmfree import protocol as P
from mmfree.errors import CapacityError, LinkError, MmfreeError
from mmfree.packing import word_bytes

__all__ = ["Device", "DeviceError", "LinkTimeout", "CompiledImages", "read_compiled", "check_fits",
           "model_hash", "IMAGE_MEMORIES", "DEFAULT_BAUDRATE"]

#: The boards' UART rate (``mmfree.hw.soc.BOARDS``: BoardTop runs its UART at 3 Mbaud, 8N1);
#: ignored by ``socket://`` URLs.
DEFAULT_BAUDRATE = 3_000_000
#: Memories loaded from a compiled directory, in load order (vmem has no image: it starts zeroed).
IMAGE_MEMORIES = ("wmem", "cmem", "pmem")
_MEM_IDS = {"wmem": P.MemoryId.WMEM, "cmem": P.MemoryId.CMEM, "vmem": P.MemoryId.VMEM, "pmem": P.MemoryId.PMEM}
#: Error codes the device's frame receiver reports (ERROR with command 0xFF): the frame was lost, resend.
_RECEIVE_ERRORS = frozenset({P.ErrorCode.BAD_CRC, P.ErrorCode.BAD_LENGTH, P.ErrorCode.TRUNCATED,
                             P.ErrorCode.LINE_ERROR})
_POLL = 0.02          # seconds a read blocks at most, so deadlines are kept to this granularity
_NO_COMMAND = 0xFF


class LinkTimeout(LinkError):
    """No (good) reply to a command within its deadline, after every retry."""


class DeviceError(LinkError):
    """The device answered a command with ERROR; ``reply`` is the :class:`~mmfree.protocol.ErrorReply`."""

    def __init__(self, message: str, reply: P.ErrorReply, command: int):
        super().__init__(message)
        self.reply = reply
        self.command = command

    @property
    def code(self):
        return self.reply.code


class _Retry(Exception):
    """Internal: this attempt failed in a way the recovery rule handles (timeout, garbled, receive error)."""

    def __init__(self, why: str, reply: P.ErrorReply | None = None, timeout: bool = False):
        super().__init__(why)
        self.reply, self.timeout = reply, timeout


def _name(command: int) -> str:
    return P.Command(command).name if command in P.Command._value2member_map_ else f"0x{command:02X}"


# --------------------------------------------------------------------------- compiled directories

class CompiledImages:
    """A compiled directory read for loading: its manifest and each image's bytes and word width."""

    def __init__(self, path: Path, manifest: dict, images: dict[str, tuple[int, bytes]]):
        self.path, self.manifest, self.images = path, manifest, images

    @property
    def hash(self) -> bytes:
        return model_hash(self.manifest)

    @property
    def vocab(self) -> int:
        return int(self.manifest["model"]["vocab_size"])

    @property
    def total_bytes(self) -> int:
        return sum(len(b) for _, b in self.images.values())


def model_hash(manifest: dict) -> bytes:
    """The 16-byte model name SET_MODEL carries: the first 16 bytes of the manifest's ``content_hash``."""
    try:
        return bytes.fromhex(manifest["content_hash"])[:P.MODEL_HASH_BYTES]
    except (KeyError, TypeError, ValueError):
        raise MmfreeError("manifest has no valid content_hash (not a compiled directory?)") from None


def read_compiled(path: str | Path) -> CompiledImages:
    """``manifest.json`` and the ``.bin`` image of each of wmem, cmem, pmem, checked against each other."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise MmfreeError(f"{path}: no manifest.json (not a compiled directory; see mmfree compile)") from None
    except (OSError, ValueError) as e:
        raise MmfreeError(f"{path / 'manifest.json'}: unreadable ({e})") from None
    images = {}
    for name in IMAGE_MEMORIES:
        try:
            img = manifest["images"][name]
            width, words, fname = int(img["width"]), int(img["words"]), img["bin"]
        except (KeyError, TypeError, ValueError):
            raise MmfreeError(f"{path / 'manifest.json'}: no images.{name} entry with width, words, bin") from None
        try:
            data = (path / fname).read_bytes()
        except OSError as e:
            raise MmfreeError(f"{path / fname}: cannot read the {name} image ({e.strerror or e})") from None
        if len(data) != words * word_bytes(width):
            raise MmfreeError(f"{path / fname}: {len(data)} bytes, the manifest says {words} words of "
                              f"{word_bytes(width)} bytes ({words * word_bytes(width)} bytes)")
        images[name] = (width, data)
    model_hash(manifest)
    return CompiledImages(path, manifest, images)


def check_fits(compiled: CompiledImages, info: P.Info) -> None:
    """Raise if ``compiled`` cannot run on the device ``info`` describes (every message names the numbers)."""
    if info.protocol_version != P.PROTOCOL_VERSION:
        raise MmfreeError(f"device speaks protocol version {info.protocol_version}, this host "
                          f"{P.PROTOCOL_VERSION}")
    t = compiled.manifest["target"]
    if (t["rows"], t["cols"]) != (info.rows, info.cols):
        raise MmfreeError(f"{compiled.path}: compiled for {t['rows']}x{t['cols']} TAC lanes ({t['name']}), the "
                          f"device has {info.rows}x{info.cols}; compile for a target with the device's lanes")
    if int(t.get("vec_lanes", info.vec_lanes)) % info.vec_lanes:
        raise MmfreeError(f"{compiled.path}: vectors aligned to {t['vec_lanes']} lanes, the device's core has "
                          f"{info.vec_lanes} vector lanes and needs a multiple of that; compile with "
                          f"--lanes {info.rows}x{info.cols}/{info.vec_lanes}")
    mems = {m.mem: m for m in info.memories}
    need = {name: (width, len(data) // word_bytes(width)) for name, (width, data) in compiled.images.items()}
    vmem = compiled.manifest.get("capacity", {}).get("vmem", {})
    need["vmem"] = (int(vmem.get("width", 32)), int(vmem.get("used_words", 0)))
    for name in ("wmem", "cmem", "vmem", "pmem"):
        width, words = need[name]
        m = mems.get(_MEM_IDS[name])
        if m is None:
            raise MmfreeError(f"device reports no {name} (memory id {int(_MEM_IDS[name])}) in INFO")
        if m.width != width:
            raise MmfreeError(f"{name}: compiled words are {width} bits, the device's {m.width} bits "
                              f"(compiled for {t['name']}, {t['packing']} packing)")
        if words > m.depth:
            raise CapacityError(f"{name}: the model needs {words} words of {width} bits, the device holds "
                                f"{m.depth}")
    limit = info.max_payload - P.LOAD_HEADER_BYTES
    for name, (width, _) in compiled.images.items():
        if word_bytes(width) > limit:
            raise MmfreeError(f"{name}: a {word_bytes(width)}-byte word does not fit one LOAD "
                              f"(device max_payload {info.max_payload} leaves {limit} data bytes)")
    if not 1 <= compiled.vocab <= P.MAX_TOKEN + 1:
        raise MmfreeError(f"vocabulary of {compiled.vocab} tokens does not fit the link's u16 token ids")


# --------------------------------------------------------------------------- the device

class Device:
    """An accelerator behind a pyserial URL.

    Parameters
    ----------
    url : str
        ``/dev/ttyUSB0``, ``COM3``, ``socket://127.0.0.1:5555``, ``loop://`` ...
    baudrate : int
        UART rate (ignored by ``socket://``, still used to scale deadlines).
    timeout : float
        Seconds allowed for any reply beyond its wire time.
    step_timeout : float
        Extra seconds per decoding step (STEP, each TOPK of a GENERATE).
    settle : float
        Silence awaited before a resend: at least the device's inter-byte
        timeout (20 byte times on the board; longer in wall time for a slow
        simulation).
    retries : int
        Resends after the first attempt of a retryable command.
    open : bool
        Open the port now (else call :meth:`open`).
    """

    def __init__(self, url: str, *, baudrate: int = DEFAULT_BAUDRATE, timeout: float = 1.0,
                 step_timeout: float = 2.0, settle: float = 0.1, retries: int = 2, open: bool = True):
        if timeout <= 0 or step_timeout < 0 or settle < 0 or retries < 0 or baudrate <= 0:
            raise ValueError("timeout must be > 0; step_timeout, settle, retries >= 0; baudrate > 0")
        self.url, self.baudrate = url, baudrate
        self.timeout, self.step_timeout, self.settle, self.retries = timeout, step_timeout, settle, retries
        self._ser = None
        self._dec = P.FrameDecoder(P.MAX_PAYLOAD)
        self._pending: collections.deque = collections.deque()
        self._last_rx = 0.0
        self._dirty = False                    # input may hold stale bytes (an abandoned stream): drain first
        self._info: P.Info | None = None
        self._context: list[int] | None = None  # tokens fed since RESET_STATE (None: unknown)
        self.resends = 0                        # how many times a command was sent again (diagnostics)
        if open:
            self.open()

    # ------------------------------------------------------------------ port
    def open(self) -> "Device":
        if self._ser is not None:
            return self
        try:
            ser = serial.serial_for_url(self.url, do_not_open=True)
            ser.baudrate, ser.timeout = self.baudrate, _POLL
            ser.write_timeout = self.timeout + self._wire(P.OVERHEAD + P.MAX_PAYLOAD)
            ser.open()
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open {self.url}: {e}") from None
        self._ser = ser
        try:
            ser.reset_input_buffer()
        except (serial.SerialException, OSError):
            pass
        self._reset_rx()
        self._context = None
        return self

    def close(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            try:
                ser.close()
            except (serial.SerialException, OSError):
                pass

    def reopen(self) -> "Device":
        """Close and open the port again (a board re-enumerated, a harness restarted)."""
        self.close()
        self._info = None
        return self.open()

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def __enter__(self) -> "Device":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Device({self.url!r}{'' if self.is_open else ', closed'})"

    # ------------------------------------------------------------------ bytes
    def _wire(self, nbytes: int) -> float:
        """Seconds ``nbytes`` take on the line (8N1), doubled for margin."""
        return 2 * nbytes * 10 / self.baudrate

    def _port(self):
        if self._ser is None:
            raise LinkError(f"{self.url}: the port is not open")
        return self._ser

    def _reset_rx(self) -> None:
        self._dec.reset()
        self._pending.clear()

    def _send(self, command: int, payload: bytes = b"") -> None:
        frame = P.encode_frame(command, payload)
        try:
            self._port().write(frame)
            self._port().flush()
        except serial.SerialTimeoutException:
            raise LinkTimeout(f"{self.url}: {_name(command)}: the port did not take the frame "
                              f"({len(frame)} bytes) in time") from None
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"{self.url}: {_name(command)}: write failed ({e})") from None

    def _read(self) -> bytes:
        ser = self._port()
        try:
            return ser.read(max(1, ser.in_waiting))
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"{self.url}: read failed ({e})") from None

    def _next_event(self, deadline: float, quiet: bool = False):
        """The next frame or receive error of the decoder; ``None`` when ``deadline`` passes first
        (or, with ``quiet``, once the line has been silent for ``settle`` seconds outside a frame)."""
        while not self._pending:
            now = time.monotonic()
            if now >= deadline or (quiet and not self._dec.in_frame and now - self._last_rx >= self.settle):
                return None
            data = self._read()
            now = time.monotonic()
            if data:
                self._last_rx = now
                self._pending.extend(self._dec.feed(data))
            elif self._dec.in_frame and now - self._last_rx >= self.settle:
                self._pending.extend(self._dec.timeout())      # a reply stopped halfway: TRUNCATED
        return self._pending.popleft()

    def _resync(self) -> None:
        """The recovery rule: discard input until ``settle`` seconds of silence, forget any partial frame."""
        start = quiet = time.monotonic()
        give_up = start + max(2.0, 20 * self.settle)      # a device that keeps talking is not waited for forever
        while True:
            data = self._read()
            now = time.monotonic()
            if data:
                quiet = now
            elif now - quiet >= self.settle or now >= give_up:
                break
        try:
            self._port().reset_input_buffer()
        except (serial.SerialException, OSError):
            pass
        self._reset_rx()
        self._dirty = False

    # ------------------------------------------------------------------ transactions
    def _expect(self, command: int, want: int, deadline: float,
                accept: Callable[[bytes], bool] | None = None, stream: bool = False) -> P.Frame:
        """The reply ``want`` to ``command``; error replies raise; timeouts and garbage raise :class:`_Retry`.

        A ``want`` frame whose payload ``accept`` refuses is a stale answer to an earlier command: skipped.
        ``stream`` (inside a GENERATE stream): a garbled frame is a lost step, at once; the device's
        receive-error reports concern line noise, not the stream, and are skipped.
        """
        ignored, garbled = [], None
        while True:
            # after a receive error the reply may still follow (the decoder hunts again); once the
            # line has gone quiet it was lost
            ev = self._next_event(deadline, quiet=garbled is not None)
            if ev is None and garbled is not None:
                raise _Retry(f"garbled reply to {_name(command)} ({garbled.code.name})")
            if ev is None:
                extra = f" (ignored unexpected replies {', '.join(ignored)})" if ignored else ""
                raise _Retry(f"no reply to {_name(command)}{extra}", timeout=True)
            if isinstance(ev, P.FrameError):
                if stream:
                    raise _Retry(f"garbled reply to {_name(command)} ({ev.code.name})")
                garbled = ev
                continue
            if ev.opcode == want and (accept is None or accept(ev.payload)):
                return ev
            if ev.opcode == P.Reply.ERROR:
                try:
                    er = P.ErrorReply.unpack(ev.payload)
                except P.ProtocolError as e:
                    raise _Retry(f"malformed ERROR reply to {_name(command)} ({e})") from None
                if er.command == command:
                    raise DeviceError(f"{self.url}: {_name(command)}: {er}", er, command)
                if er.command == _NO_COMMAND and er.code in _RECEIVE_ERRORS and stream:
                    continue
                if er.command == _NO_COMMAND and er.code in _RECEIVE_ERRORS:
                    raise _Retry(f"{_name(command)}: the device lost the frame: {er}", reply=er)
                if er.command == _NO_COMMAND:
                    raise DeviceError(f"{self.url}: {_name(command)}: {er}", er, command)
                ignored.append(f"ERROR for {_name(er.command)}")      # a stale answer to an earlier command
            else:
                ignored.append(f"0x{ev.opcode:02X}")

    def _transact(self, command: int, payload: bytes, want: int, *, deadline: float,
                  retryable: bool = True, recover: Callable[[], None] | None = None,
                  accept: Callable[[bytes], bool] | None = None) -> P.Frame:
        """Send ``command`` and return its reply, resending after the recovery rule when ``retryable``."""
        attempts = 1 + (self.retries if retryable else 0)
        if self._dirty:
            self._resync()
        last: _Retry | None = None
        for attempt in range(attempts):
            if attempt:
                self.resends += 1
                self._resync()
                if recover is not None:
                    try:
                        recover()
                    except LinkError as e:
                        self._dirty = True
                        raise LinkError(f"{self.url}: {last}; recovery failed: {e}") from None
            self._send(command, payload)
            try:
                return self._expect(command, want, time.monotonic() + deadline, accept)
            except _Retry as r:
                last = r
        self._dirty = True
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        if last.timeout:
            raise LinkTimeout(f"{self.url}: {last} within {deadline:.2f} s{tries}")
        if last.reply is not None:
            raise DeviceError(f"{self.url}: {last}{tries}", last.reply, command)
        raise LinkError(f"{self.url}: {last}{tries}")

    def _deadline(self, out_bytes: int, in_bytes: int, steps: int = 0) -> float:
        return self.timeout + self._wire(out_bytes + in_bytes + 2 * P.OVERHEAD) + steps * self.step_timeout

    @staticmethod
    def _decode(command: int, cls, payload: bytes):
        try:
            return cls.unpack(payload)
        except P.ProtocolError as e:
            raise P.ProtocolError(f"{_name(command)} reply: {e}") from None

    # ------------------------------------------------------------------ commands
    def ping(self, data: bytes = b"mmfree") -> bytes:
        """PING: the device echoes ``data``; returns the echo (checked equal)."""
        data = bytes(data)
        limit = self._info.max_payload if self._info else P.MIN_MAX_PAYLOAD
        if len(data) > limit:
            raise MmfreeError(f"PING data of {len(data)} bytes exceeds the device's max_payload {limit}")
        f = self._transact(P.Command.PING, data, P.Reply.PONG, deadline=self._deadline(len(data), len(data)),
                           accept=lambda echo: echo == data)
        return f.payload

    def info(self) -> P.Info:
        """INFO: what the device is and holds (cached for :meth:`load_compiled` and :meth:`ping`)."""
        f = self._transact(P.Command.INFO, b"", P.Reply.INFO, deadline=self._deadline(0, 34 + 7 * 8))
        self._info = self._decode(P.Command.INFO, P.Info, f.payload)
        return self._info

    def load(self, mem: int, offset: int, data: bytes) -> P.LoadAck:
        """One LOAD frame (``len(data) <= max_payload - 5``); the acknowledgement is checked."""
        data = bytes(data)
        mine = P.LoadAck(int(mem), offset, len(data)).pack()
        f = self._transact(P.Command.LOAD, P.Load(int(mem), offset, data).pack(), P.Reply.LOAD,
                           deadline=self._deadline(len(data) + P.LOAD_HEADER_BYTES, 7),
                           accept=lambda ack: ack[:5] == mine[:5])      # same memory and offset
        ack = self._decode(P.Command.LOAD, P.LoadAck, f.payload)
        if (ack.mem, ack.offset, ack.count) != (int(mem), offset, len(data)):
            raise LinkError(f"{self.url}: LOAD of {len(data)} bytes at {_mem_name(mem)}+{offset} acknowledged as "
                            f"{ack.count} bytes at {_mem_name(ack.mem)}+{ack.offset}")
        self._context = None
        return ack

    def load_image(self, mem: int, data: bytes, width: int, progress: Callable[[int], None] | None = None) -> None:
        """Write a whole memory image from byte 0, in LOADs of whole words of ``width`` bits."""
        info = self._info or self.info()
        wb = word_bytes(width)
        chunk = (info.max_payload - P.LOAD_HEADER_BYTES) // wb * wb
        if chunk <= 0:
            raise MmfreeError(f"{_mem_name(mem)}: a {wb}-byte word does not fit one LOAD "
                              f"(device max_payload {info.max_payload})")
        if len(data) % wb:
            raise MmfreeError(f"{_mem_name(mem)}: image of {len(data)} bytes is not whole {wb}-byte words")
        for off in range(0, len(data), chunk):
            part = data[off:off + chunk]
            self.load(mem, off, part)
            if progress is not None:
                progress(len(part))

    def set_model(self, hash16: bytes, vocab: int) -> None:
        """SET_MODEL: declare the images loaded, name them, give the vocabulary size."""
        payload = P.SetModel(bytes(hash16), vocab).pack()
        self._transact(P.Command.SET_MODEL, payload, P.Reply.SET_MODEL, deadline=self._deadline(len(payload), 0))
        self._info = None
        self._context = None

    def load_compiled(self, path: str | Path | CompiledImages,
                      progress: Callable[[str, int, int], None] | None = None) -> CompiledImages:
        """Load a compiled directory: check it fits (before any LOAD), LOAD wmem, cmem, pmem, SET_MODEL.

        ``progress(memory, bytes_done, bytes_total)`` is called after each
        LOAD (totals over all images). Returns the images read.
        """
        compiled = path if isinstance(path, CompiledImages) else read_compiled(path)
        info = self.info()
        check_fits(compiled, info)
        total, done = compiled.total_bytes, 0
        for name in IMAGE_MEMORIES:
            width, data = compiled.images[name]

            def step(n, name=name):
                nonlocal done
                done += n
                if progress is not None:
                    progress(name, done, total)

            self.load_image(_MEM_IDS[name], data, width, step)
        self.set_model(compiled.hash, compiled.vocab)
        return compiled

    def loaded_matches(self, manifest: dict | CompiledImages | str | Path) -> bool:
        """True when the device holds this compiled model already (INFO: model set, same hash)."""
        if isinstance(manifest, CompiledImages):
            h = manifest.hash
        elif isinstance(manifest, dict):
            h = model_hash(manifest)
        else:
            h = read_compiled(manifest).hash
        info = self.info()
        return info.model_set and info.model_hash == h

    def reset_state(self) -> None:
        """RESET_STATE: zero the recurrent state (a new context)."""
        self._transact(P.Command.RESET_STATE, b"", P.Reply.RESET_STATE, deadline=self._deadline(0, 0, 1))
        self._context = []

    def _replay(self) -> None:
        """After a lost STEP: RESET_STATE, then feed again every token since the last reset."""
        if self._context is None:
            raise LinkError(f"{self.url}: STEP failed and the context is unknown; reset_state() and feed it again")
        tokens = list(self._context)
        self.reset_state()
        for t in tokens:
            f = self._transact(P.Command.STEP, P.Step(t).pack(), P.Reply.TOPK,
                               deadline=self._deadline(2, 5 + 6 * 255, 1), retryable=False)
            self._decode(P.Command.STEP, P.TopK, f.payload)
            self._context.append(t)

    def step(self, token: int) -> P.TopK:
        """STEP: feed ``token``, run one decoding step; the top-k candidates for the next token."""
        payload = P.Step(token).pack()
        f = self._transact(P.Command.STEP, payload, P.Reply.TOPK, deadline=self._deadline(2, 5 + 6 * 255, 1),
                           recover=self._replay)
        top = self._decode(P.Command.STEP, P.TopK, f.payload)
        if self._context is not None:
            self._context.append(token)
        return top

    def generate(self, token: int, count: int) -> Iterator[P.TopK]:
        """GENERATE: feed ``token``, then ``count`` greedy steps; yields each step's TopK.

        The command is sent at once; the iterator reads the stream and checks
        GENERATE_DONE at its end. Not retried (it advances the state): a
        failure raises with the step index. Abandoning the iterator early
        leaves the stream to be drained before the next command.
        """
        payload = P.Generate(token, count).pack()
        if self._dirty:
            self._resync()
        self._send(P.Command.GENERATE, payload)
        return self._generate_stream(token, count)

    def _generate_stream(self, token: int, count: int) -> Iterator[P.TopK]:
        cmd = P.Command.GENERATE
        fed, complete = token, False
        try:
            for i in range(count):
                deadline = self._deadline(4 if i == 0 else 0, 5 + 6 * 255, 1)
                try:
                    f = self._expect(cmd, P.Reply.TOPK, time.monotonic() + deadline, stream=True)
                except _Retry as r:
                    self._context = None
                    raise (LinkTimeout if r.timeout else LinkError)(
                        f"{self.url}: GENERATE step {i} of {count}: {r}"
                        + (f" within {deadline:.2f} s" if r.timeout else "")) from None
                top = self._decode(cmd, P.TopK, f.payload)
                if self._context is not None:
                    self._context.append(fed)
                fed = top.ids[0]
                yield top
            try:
                f = self._expect(cmd, P.Reply.GENERATE_DONE, time.monotonic() + self._deadline(0, 2), stream=True)
            except _Retry as r:
                raise LinkError(f"{self.url}: GENERATE: no GENERATE_DONE after {count} steps ({r})") from None
            done = self._decode(cmd, P.GenerateDone, f.payload)
            if done.count != count:
                raise LinkError(f"{self.url}: GENERATE_DONE reports {done.count} steps, {count} were asked")
            complete = True
        finally:
            if not complete:
                self._dirty = True
                self._context = None

    def counters(self) -> P.Counters:
        """READ_COUNTERS: cycle counters (``.as_dict()`` names them)."""
        f = self._transact(P.Command.READ_COUNTERS, b"", P.Reply.COUNTERS, deadline=self._deadline(0, 1 + 8 * 32))
        return self._decode(P.Command.READ_COUNTERS, P.Counters, f.payload)


def _mem_name(mem: int) -> str:
    return P.MemoryId(mem).name.lower() if mem in P.MemoryId._value2member_map_ else f"memory {mem}"
