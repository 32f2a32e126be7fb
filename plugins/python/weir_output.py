"""The packed `parse-output` writer every Python parser plugin uses (contract
`weir:parser@0.2.0`, layout documented in wit/parser.wit): `parse` gets all raw lines of a
batch back to back in one string and where each ends (`raw_lines` cuts them), and returns
one `ParseOutput` for the whole batch (`Output`). plugins/build.sh puts this file on every
Python plugin's path; `weir-core plugin new --lang python` copies it into a new project."""

import struct
from typing import List, Optional, Tuple, Union

from wit_world.imports import types as t

# A field value: text, int, float, bool or None (null).
FieldValue = Union[str, int, float, bool, None]
# One parsed event: its fields, its time (ns) or None, a replacement raw text or None.
Event = Tuple[List[Tuple[str, FieldValue]], Optional[int], Optional[str]]

_U32 = struct.Struct("<I")
_S64 = struct.Struct("<q")
_F64 = struct.Struct("<d")


class Output:
    """Writes the packed `parse-output` of a batch (layout: wit/parser.wit):
    call `ok` or `error` once per input event, in order, then `finish`."""

    def __init__(self) -> None:
        self.index = bytearray()
        self.text = bytearray()

    def _str(self, s: str) -> None:
        b = s.encode("utf-8")
        self.index += _U32.pack(len(b))
        self.text += b

    def error(self, message: str) -> None:
        """The input could not be parsed; the core keeps it with the message."""
        self.index.append(0x01)
        self._str(message)

    def ok(self, events: List[Event]) -> None:
        """The input's parsed events (an empty list drops it)."""
        index = self.index
        index.append(0x02)
        index += _U32.pack(len(events))
        for fields, timestamp, raw in events:
            index += _U32.pack(len(fields) + (timestamp is not None) + (raw is not None))
            for name, value in fields:
                if isinstance(value, bool):  # before int: bool is an int in Python
                    index.append(0x13)
                    self._str(name)
                    index.append(1 if value else 0)
                elif isinstance(value, int):
                    index.append(0x11)
                    self._str(name)
                    index += _S64.pack(value)
                elif isinstance(value, float):
                    index.append(0x12)
                    self._str(name)
                    index += _F64.pack(value)
                elif value is None:
                    index.append(0x14)
                    self._str(name)
                else:
                    index.append(0x10)
                    self._str(name)
                    self._str(value)
            if timestamp is not None:
                index.append(0x20)
                index += _S64.pack(timestamp)
            if raw is not None:
                index.append(0x21)
                self._str(raw)

    def finish(self) -> t.ParseOutput:
        return t.ParseOutput(bytes(self.index), bytes(self.text))


def raw_lines(raws: str, ends: List[int]) -> List[str]:
    """Cuts the batch's raw text at `ends` (UTF-8 byte offsets)."""
    data = raws.encode("utf-8")
    out = []
    start = 0
    for end in ends:
        out.append(data[start:end].decode("utf-8"))
        start = end
    return out
