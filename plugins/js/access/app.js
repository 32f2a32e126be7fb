// The `access-js` plugin: Apache/NGINX access logs (combined and common log format), in
// JavaScript.
//
// The same rules, fields and error messages as the Rust `access` plugin
// (plugins/parsers/src/access.rs), so the host's tests check both on one table:
// `%h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i"`, the common format being the
// same without the last two quoted fields; `-` leaves a field out (`http.bytes` is then
// 0); a request line that is not `METHOD TARGET HTTP/VERSION` is kept whole in
// `http.request`; the time `[10/Oct/2000:13:55:36 -0700]` is the event time.
// Built by plugins/build.sh with componentize-js; test input: test/input.txt.
//
// Contract `weir:parser@0.2.0`: `parse` gets the batch's shared context, all raw lines
// back to back in one string and where each ends, and returns one packed `ParseOutput`
// for the whole batch (layout: wit/parser.wit), written by ../weir-output.js.

// @ts-check
import { Output, rawLines } from "../weir-output.js";

const NAME = "access-js";
const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const CLF_TIME = /^(\d\d)\/([A-Za-z]{3})\/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$/;
const INTEGER = /^[+-]?\d+$/;
const METHOD = /^[A-Z]+$/;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/** Days since 1970-01-01 of a civil date (proleptic Gregorian). */
function daysFromCivil(year, month, day) {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

function daysInMonth(year, month) {
  if (month === 2) {
    return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
  }
  return [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
}

/** `10/Oct/2000:13:55:36 -0700` in nanoseconds since the epoch (a bigint), or null. */
export function parseClfTime(s) {
  const m = CLF_TIME.exec(s);
  if (!m) {
    return null;
  }
  const day = Number(m[1]);
  const month = MONTHS.indexOf(m[2].toLowerCase()) + 1;
  const year = Number(m[3]);
  const [hour, minute, second, zh, zm] = [m[4], m[5], m[6], m[8], m[9]].map(Number);
  if (month === 0 || day === 0 || day > daysInMonth(year, month) || hour > 23 || minute > 59 || second > 60 || zh > 23 || zm > 59) {
    return null;
  }
  const offset = (zh * 3600 + zm * 60) * (m[7] === "-" ? -1 : 1);
  const secs = daysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset;
  return BigInt(secs) * 1_000_000_000n;
}

/** A decimal 64-bit integer, as Rust's `str::parse::<i64>` reads it; null if it is not one. */
function parseI64(s) {
  if (!INTEGER.test(s)) {
    return null;
  }
  const n = BigInt(s);
  return n < I64_MIN || n > I64_MAX ? null : n;
}

/**
 * Reads `"..."` at the start of `s` (`\"` and `\\` unescaped, other escapes such as
 * NGINX's `\x16` kept as written); returns the text and what follows, or null.
 */
function quoted(s) {
  if (!s.startsWith('"')) {
    return null;
  }
  let text = "";
  let from = 1;
  for (;;) {
    const quote = s.indexOf('"', from);
    const backslash = s.indexOf("\\", from);
    if (quote < 0) {
      return null;
    }
    if (backslash < 0 || quote < backslash) {
      return [text + s.slice(from, quote), s.slice(quote + 1)];
    }
    if (backslash + 1 >= s.length) {
      return null;
    }
    const escaped = s[backslash + 1];
    text += s.slice(from, backslash) + (escaped === '"' || escaped === "\\" ? escaped : "\\" + escaped);
    from = backslash + 2;
  }
}

/** Parses one line into `[name, value]` pairs and a time; throws an Error saying why not. */
export function parseLine(line) {
  const fields = [];
  let rest = line.replace(/[\r\n]+$/, "");
  const word = (what) => {
    const end = rest.indexOf(" ");
    if (end < 0) {
      throw new Error(`line ends before ${what}`);
    }
    const w = rest.slice(0, end);
    rest = rest.slice(end + 1);
    return w;
  };
  fields.push(["client.ip", word("the identity field")]);
  for (const name of ["user.ident", "user.name"]) {
    const w = word("the time");
    if (w !== "-") {
      fields.push([name, w]);
    }
  }
  if (!rest.startsWith("[")) {
    throw new Error("expected `[` before the time");
  }
  const close = rest.indexOf("] ");
  if (close < 0) {
    throw new Error("unterminated time: expected `] ` after it");
  }
  const timestampNs = parseClfTime(rest.slice(1, close));
  if (timestampNs === null) {
    throw new Error(`bad time \`${rest.slice(1, close)}\``);
  }
  const request = quoted(rest.slice(close + 2));
  if (!request) {
    throw new Error("expected the quoted request line");
  }
  rest = request[1];
  const parts = request[0].split(" ");
  if (parts.length === 3 && METHOD.test(parts[0]) && parts[2].startsWith("HTTP/")) {
    fields.push(["http.method", parts[0]], ["url.original", parts[1]], ["http.version", parts[2].slice(5)]);
  } else {
    fields.push(["http.request", request[0]]);
  }
  // `splitn(3, ' ')`: status, size, and the rest of the line.
  const tail = rest.trimStart();
  const first = tail.indexOf(" ");
  const status = first < 0 ? tail : tail.slice(0, first);
  if (status === "") {
    throw new Error("line ends before the status");
  }
  const code = parseI64(status);
  if (code === null) {
    throw new Error(`bad status \`${status}\``);
  }
  fields.push(["http.status", code]);
  if (first < 0) {
    throw new Error("line ends before the size");
  }
  const second = tail.indexOf(" ", first + 1);
  const size = second < 0 ? tail.slice(first + 1) : tail.slice(first + 1, second);
  const bytes = size === "-" ? 0n : parseI64(size);
  if (bytes === null) {
    throw new Error(`bad size \`${size}\``);
  }
  fields.push(["http.bytes", bytes]);
  if (second >= 0) {
    const referer = quoted(tail.slice(second + 1));
    if (!referer) {
      throw new Error("expected the quoted referer");
    }
    if (referer[0] !== "-") {
      fields.push(["http.referer", referer[0]]);
    }
    const agent = quoted(referer[1].trimStart());
    if (!agent) {
      throw new Error("expected the quoted user agent");
    }
    if (agent[0] !== "-") {
      fields.push(["http.user_agent", agent[0]]);
    }
    const extra = agent[1].trim();
    if (extra !== "") {
      fields.push(["extra", extra]);
    }
  }
  return { fields, timestampNs };
}

/** @returns {import('weir:parser/types@0.2.0').PluginInfo} */
export function describe() {
  return {
    name: NAME,
    version: "0.1.0",
    description: "Apache/NGINX combined and common log format, in JavaScript",
    settings: [],
  };
}

/** @param {Array<[string, string]>} settings */
export function configure(settings) {
  for (const [name] of settings) {
    // A thrown string is the `err` of `configure`'s result.
    throw `unknown setting \`${name}\`; this parser takes none`;
  }
}

/**
 * @param {import('weir:parser/types@0.2.0').BatchContext} _context
 * @param {string} raws
 * @param {Uint32Array} ends
 * @returns {import('weir:parser/types@0.2.0').ParseOutput}
 */
export function parse(_context, raws, ends) {
  const out = new Output();
  for (const line of rawLines(raws, ends)) {
    let event;
    try {
      event = parseLine(line);
    } catch (e) {
      out.error(e instanceof Error ? e.message : String(e));
      continue;
    }
    out.ok([event]);
  }
  return out.finish();
}
