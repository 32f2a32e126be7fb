"""The `kv-py` plugin: key=value / logfmt lines, in Python.

The same rules as the Rust `kv` plugin (plugins/parsers/src/kv.rs), so the
host's tests can check both on one sample: quoted values stay text, bare
values are typed (int, float, text), a bare key without `=` is `true`, and the
time comes from `time`, `ts`, `timestamp` or `t` when it is RFC 3339.
Built by plugins/build.sh with componentize-py.

Contract `weir:parser@0.2.0`: `parse` gets the batch's shared context, all raw
lines back to back in one string and where each ends, and returns one packed
`ParseOutput` for the whole batch (layout: wit/parser.wit). `Output`, the
small writer for that layout, is in plugins/python/weir_output.py, shared by
every Python plugin.
"""

import re
from typing import List, Optional, Tuple

import wit_world
from componentize_py_types import Err
from wit_world.imports import types as t

from weir_output import Event, FieldValue, Output, raw_lines

_NUMERIC = re.compile(r"^[0-9eE+\-.]+$")
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(?:([Zz])|([+-])(\d{2}):?(\d{2}))?$"
)
_DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
_I64 = 2**63


def _days_from_civil(y: int, m: int, d: int) -> int:
    y = y - 1 if m <= 2 else y
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_rfc3339(s: str) -> Optional[int]:
    m = _RFC3339.match(s)
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= month <= 12 or hour > 23 or minute > 59 or second > 60:
        return None
    if not 1 <= day <= (29 if month == 2 and leap else _DAYS_IN_MONTH[month - 1]):
        return None
    frac = (m.group(7) or "")[:9].ljust(9, "0")
    offset = 0
    if m.group(9):
        offset = int(m.group(10)) * 3600 + int(m.group(11)) * 60
        offset = -offset if m.group(9) == "-" else offset
    secs = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset
    ns = secs * 1_000_000_000 + int(frac)
    return ns if -_I64 <= ns < _I64 else None


def infer(token: str) -> FieldValue:
    if token and _NUMERIC.match(token) and any(c.isdigit() for c in token):
        try:
            i = int(token)
            if -_I64 <= i < _I64:
                return i
        except ValueError:
            pass
        try:
            f = float(token)
            if f not in (float("inf"), float("-inf")) and f == f:
                return f
        except ValueError:
            pass
    return token


def _unquote(s: str) -> Optional[Tuple[str, int]]:
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            i += 1
            if i >= len(s):
                return None
            out.append({"n": "\n", "t": "\t"}.get(s[i], s[i]))
        else:
            out.append(c)
        i += 1
    return None


class KvParser:
    def __init__(self, delimiter: str = "=", typed: bool = True):
        self.delimiter = delimiter
        self.typed = typed

    def parse(self, raw: str) -> Event:
        fields: List[Tuple[str, FieldValue]] = []
        rest = raw.strip()
        pairs = 0
        while rest:
            end = next((i for i, c in enumerate(rest) if c == self.delimiter or c.isspace()), len(rest))
            key = rest[:end]
            if not key:
                raise ValueError(f"empty key before `{self.delimiter}` at `{rest[:20]}`")
            if '"' in key:
                raise ValueError(f"quote inside key `{key}`")
            rest = rest[end:]
            if rest.startswith(self.delimiter):
                rest = rest[1:]
                if rest.startswith('"'):
                    got = _unquote(rest[1:])
                    if got is None:
                        raise ValueError(f"unterminated quote in the value of `{key}`")
                    value: FieldValue = got[0]
                    rest = rest[1 + got[1]:]
                else:
                    end = next((i for i, c in enumerate(rest) if c.isspace()), len(rest))
                    token, rest = rest[:end], rest[end:]
                    value = infer(token) if (token and self.typed) else token
                pairs += 1
                fields.append((key, value))
            else:
                fields.append((key, True))
            rest = rest.lstrip()
        if pairs == 0:
            raise ValueError(f"no key{self.delimiter}value pairs found")
        timestamp = None
        for name in ("time", "ts", "timestamp", "t"):
            value = next((v for n, v in fields if n == name), None)
            if isinstance(value, str):
                timestamp = parse_rfc3339(value)
                if timestamp is not None:
                    break
        return (fields, timestamp, None)


_SETTINGS = [
    t.Setting("delimiter", "the character between a key and its value", False, "="),
    t.Setting("typed", "turn bare numeric values into numbers (`true`/`false`)", False, "true"),
]


class WitWorld(wit_world.WitWorld):
    """The exports componentize-py looks for; state lives on the class."""

    parser: Optional[KvParser] = None

    def describe(self) -> t.PluginInfo:
        return t.PluginInfo("kv-py", "0.1.0", "key=value pairs and logfmt, in Python", _SETTINGS)

    def configure(self, settings: List[Tuple[str, str]]) -> None:
        known = [s.name for s in _SETTINGS]
        given = dict(settings)
        for name in given:
            if name not in known:
                raise Err(f"unknown setting `{name}`; this parser takes: {', '.join(known)}")
        delimiter = given.get("delimiter", "=")
        if len(delimiter) != 1 or delimiter == '"' or delimiter.isspace():
            raise Err(f"setting `delimiter`: expected one non-space character other than `\"`, got `{delimiter}`")
        typed = given.get("typed", "true")
        if typed not in ("true", "false"):
            raise Err(f"setting `typed`: expected `true` or `false`, got `{typed}`")
        WitWorld.parser = KvParser(delimiter, typed == "true")

    def parse(self, context: t.BatchContext, raws: str, ends: List[int]) -> t.ParseOutput:
        parser = WitWorld.parser
        out = Output()
        for raw in raw_lines(raws, ends):
            if parser is None:
                out.error("plugin `kv-py` was not configured before parse")
                continue
            try:
                out.ok([parser.parse(raw)])
            except ValueError as e:
                out.error(str(e))
        return out.finish()
