"""TensorBoard event files without TensorBoard: the scalars of metrics.jsonl, written as TensorBoard
reads them (`--logger tensorboard`), and read back. Standard library only (the `tensorboard`
package, which torch.utils.tensorboard needs, is not a dependency of this project).

The format, as TensorBoard's own writer lays it out: a file `events.out.tfevents.<time>.<host>`
of TFRecord records (uint64 length, masked CRC-32C of the length, the bytes, masked CRC-32C of
the bytes; little-endian), each an `Event` protocol buffer: the first holds
file_version "brain.Event:2", every later one a step and a Summary of (tag, simple_value) pairs.
The few protobuf fields needed are encoded by hand here:
    Event:   wall_time = 1 (double), step = 2 (int64), file_version = 3 (string), summary = 5
    Summary: value = 1 (repeated);  Summary.Value: tag = 1 (string), simple_value = 2 (float)

    writer = EventWriter("checkpoints/BabyAI-GoToLocal-v0/trial_0/tensorboard")
    writer.scalars(25, {"train/loss": 1.2}); writer.close()
    read_scalars("checkpoints/BabyAI-GoToLocal-v0/trial_0/tensorboard")  # {"train/loss": [(25, 1.2)]}
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from pathlib import Path

# ----------------------------------------------------------------------------- CRC-32C (Castagnoli)


def _table() -> list[int]:
    out = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return out


_CRC_TABLE = _table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC (a CRC of data that holds CRCs is itself protected)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- protobuf wire format


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _text(number: int, text: str) -> bytes:
    data = text.encode()
    return _field(number, 2, _varint(len(data)) + data)


def encode_event(
    wall_time: float,
    step: int | None = None,
    scalars: dict[str, float] | None = None,
    file_version: str | None = None,
) -> bytes:
    out = _field(1, 1, struct.pack("<d", wall_time))
    if step is not None:
        out += _field(2, 0, _varint(int(step)))
    if file_version is not None:
        out += _text(3, file_version)
    if scalars:
        values = b""
        for tag, value in scalars.items():
            body = _text(1, tag) + _field(2, 5, struct.pack("<f", value))
            values += _field(1, 2, _varint(len(body)) + body)
        out += _field(5, 2, _varint(len(values)) + values)
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _fields(data: bytes) -> list[tuple[int, object]]:
    """(field number, value) of a message: ints for varints, bytes for length-delimited fields,
    raw 4/8 bytes for fixed32/fixed64."""
    out, i = [], 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 2:
            size, i = _read_varint(data, i)
            value, i = data[i : i + size], i + size
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not in an event file")
        out.append((number, value))
    return out


def decode_event(data: bytes) -> dict:
    """{'wall_time', 'step', 'file_version', 'scalars': {tag: value}} of one Event."""
    event: dict = {"wall_time": None, "step": 0, "file_version": None, "scalars": {}}
    for number, value in _fields(data):
        if number == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif number == 2:
            event["step"] = value
        elif number == 3:
            event["file_version"] = value.decode()
        elif number == 5:
            for n, item in _fields(value):
                if n != 1:
                    continue
                parts = dict(_fields(item))
                if 1 in parts and 2 in parts:
                    event["scalars"][parts[1].decode()] = struct.unpack("<f", parts[2])[0]
    return event


# ----------------------------------------------------------------------------- files


class EventWriter:
    """One event file in `directory` (created), appended to and flushed at every `scalars` call."""

    def __init__(self, directory: str | os.PathLike):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = directory / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}"
        self._file = open(self.path, "ab")
        self._record(encode_event(now, file_version="brain.Event:2"))

    def _record(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        self._file.write(header + struct.pack("<I", masked_crc(header)) + data)
        self._file.write(struct.pack("<I", masked_crc(data)))
        self._file.flush()

    def scalars(self, step: int, values: dict) -> None:
        """The finite numbers of `values` (metrics.jsonl's row: other entries are left out)."""
        numbers = {
            k: float(v)
            for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        if numbers:
            self._record(encode_event(time.time(), step, numbers))

    def close(self) -> None:
        self._file.close()


def read_events(path: str | os.PathLike) -> list[dict]:
    """The events of one event file; ValueError naming the file for a bad CRC (a record torn by
    a kill at the end is dropped)."""
    data, events, i = Path(path).read_bytes(), [], 0
    while i + 12 <= len(data):
        header = data[i : i + 8]
        (size,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", data[i + 8 : i + 12])
        body = data[i + 12 : i + 12 + size]
        if len(body) < size or i + 16 + size > len(data):
            break  # torn last record
        (body_crc,) = struct.unpack("<I", data[i + 12 + size : i + 16 + size])
        if crc != masked_crc(header) or body_crc != masked_crc(body):
            raise ValueError(f"{str(path)!r}: record at byte {i} fails its CRC: not an event file")
        events.append(decode_event(body))
        i += 16 + size
    return events


def read_scalars(directory: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every event file in `directory`, in file and step order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(directory).glob("events.out.tfevents.*")):
        for event in read_events(path):
            for tag, value in event["scalars"].items():
                out.setdefault(tag, []).append((event["step"], value))
    return out
