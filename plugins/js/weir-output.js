// The packed `parse-output` writer every JavaScript parser plugin uses (contract
// `weir:parser@0.2.0`, layout documented in wit/parser.wit). `parse` gets all raw lines of
// a batch back to back in one string and where each ends (UTF-8 byte offsets: `rawLines`
// cuts them), and returns one `ParseOutput` for the whole batch (`Output`). Types:
// weir-output.d.ts. plugins/build.sh builds every plugins/js/NAME/app.js with this file
// next to it; `weir-core plugin new --lang js` copies it into a new project.
//
// Runs inside StarlingMonkey (SpiderMonkey compiled to WebAssembly, no JIT): the code
// avoids per-character loops, which are slow there, and leaves UTF-8 work to the
// engine's TextEncoder/TextDecoder.

const ERROR = 0x01;
const OK = 0x02;
const TEXT = 0x10;
const INT = 0x11;
const FLOAT = 0x12;
const BOOL = 0x13;
const NULL = 0x14;
const TIME = 0x20;
const RAW = 0x21;

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const ASCII = /^[\x00-\x7f]*$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** A number to write as a float field even when it has no fraction (`float(2)`). */
export class Float {
  /** @param {number} value */
  constructor(value) {
    this.value = value;
  }
}

/** @param {number} value @returns {Float} */
export function float(value) {
  return new Float(value);
}

/**
 * Writes the packed `parse-output` of a batch: call `ok` or `error` once per input event,
 * in order, then `finish`.
 */
export class Output {
  constructor() {
    this.index = new Uint8Array(4096);
    this.view = new DataView(this.index.buffer);
    this.len = 0;
    // Every string of the batch, in the order `index` refers to them; encoded once.
    this.parts = [];
  }

  /** The input could not be parsed; the core keeps it with the message. */
  error(message) {
    this.#byte(ERROR);
    this.#str(String(message));
  }

  /**
   * The input's parsed events (an empty array drops it). An event is
   * `{ fields, timestampNs, raw }`: `fields` an array of `[name, value]` pairs or a plain
   * object (in its key order; note that JavaScript puts integer-like keys such as "1"
   * first), a value being a string, a number (integer: int field; otherwise float), a
   * bigint (int), `float(n)` (float), a boolean, or `null`/`undefined` (null field);
   * `timestampNs` the event time in nanoseconds since the Unix epoch as a bigint (absent:
   * the ingest time); `raw` a replacement raw text (absent: the input's).
   */
  ok(events) {
    this.#byte(OK);
    this.#u32(events.length);
    for (const event of events) {
      const fields = Array.isArray(event.fields) ? event.fields : Object.entries(event.fields ?? {});
      const hasTime = event.timestampNs !== undefined && event.timestampNs !== null;
      const hasRaw = event.raw !== undefined && event.raw !== null;
      this.#u32(fields.length + (hasTime ? 1 : 0) + (hasRaw ? 1 : 0));
      for (const [name, value] of fields) {
        this.#field(String(name), value);
      }
      if (hasTime) {
        this.#byte(TIME);
        this.#i64(toI64(event.timestampNs, "timestampNs"));
      }
      if (hasRaw) {
        this.#byte(RAW);
        this.#str(String(event.raw));
      }
    }
  }

  /** The `ParseOutput` to return from `parse`. */
  finish() {
    return { index: this.index.subarray(0, this.len), text: encoder.encode(this.parts.join("")) };
  }

  #field(name, value) {
    switch (typeof value) {
      case "string":
        this.#byte(TEXT);
        this.#str(name);
        this.#str(value);
        return;
      case "number":
        if (Number.isSafeInteger(value)) {
          this.#byte(INT);
          this.#str(name);
          this.#i64(BigInt(value));
        } else {
          this.#byte(FLOAT);
          this.#str(name);
          this.#f64(value);
        }
        return;
      case "bigint":
        this.#byte(INT);
        this.#str(name);
        this.#i64(toI64(value, name));
        return;
      case "boolean":
        this.#byte(BOOL);
        this.#str(name);
        this.#byte(value ? 1 : 0);
        return;
      case "undefined":
        this.#byte(NULL);
        this.#str(name);
        return;
      default:
        if (value === null) {
          this.#byte(NULL);
          this.#str(name);
        } else if (value instanceof Float) {
          this.#byte(FLOAT);
          this.#str(name);
          this.#f64(value.value);
        } else {
          throw new TypeError(`field \`${name}\`: unsupported value ${Object.prototype.toString.call(value)}`);
        }
    }
  }

  #reserve(n) {
    if (this.len + n > this.index.length) {
      const grown = new Uint8Array(Math.max(this.index.length * 2, this.len + n));
      grown.set(this.index.subarray(0, this.len));
      this.index = grown;
      this.view = new DataView(grown.buffer);
    }
  }

  #byte(b) {
    this.#reserve(1);
    this.index[this.len++] = b;
  }

  #u32(n) {
    this.#reserve(4);
    this.view.setUint32(this.len, n, true);
    this.len += 4;
  }

  #i64(n) {
    this.#reserve(8);
    this.view.setBigInt64(this.len, n, true);
    this.len += 8;
  }

  #f64(x) {
    this.#reserve(8);
    this.view.setFloat64(this.len, x, true);
    this.len += 8;
  }

  #str(s) {
    this.#u32(ASCII.test(s) ? s.length : encoder.encode(s).length);
    this.parts.push(s);
  }
}

function toI64(n, what) {
  const big = typeof n === "bigint" ? n : BigInt(Math.trunc(Number(n)));
  if (big < I64_MIN || big > I64_MAX) {
    throw new RangeError(`\`${what}\`: ${big} does not fit in 64 bits`);
  }
  return big;
}

/**
 * Cuts the batch's raw text at `ends` (UTF-8 byte offsets).
 * @param {string} raws
 * @param {Uint32Array | number[]} ends
 * @returns {string[]}
 */
export function rawLines(raws, ends) {
  const out = new Array(ends.length);
  const n = ends.length;
  // UTF-8 is as long as UTF-16 only when every character is ASCII: then the byte
  // offsets are string offsets.
  if (n === 0 || ends[n - 1] === raws.length) {
    let start = 0;
    for (let i = 0; i < n; i++) {
      out[i] = raws.slice(start, ends[i]);
      start = ends[i];
    }
    return out;
  }
  const bytes = encoder.encode(raws);
  let start = 0;
  for (let i = 0; i < n; i++) {
    out[i] = decoder.decode(bytes.subarray(start, ends[i]));
    start = ends[i];
  }
  return out;
}
