// Types of weir-output.js, the packed `parse-output` writer of JavaScript parser plugins.
// The contract's own types (BatchContext, ParseOutput, PluginInfo) are in types/, made
// from wit/parser.wit by `jco guest-types`.
/// <reference path="./types/parser.d.ts" />
import type { ParseOutput } from "weir:parser/types@0.2.0";

/** A number written as a float field even when it has no fraction. */
export class Float {
  constructor(value: number);
  value: number;
}
export function float(value: number): Float;

/**
 * A field value: text, number (integer: int field, otherwise float), bigint (int),
 * `float(n)`, boolean, or null/undefined (null field).
 */
export type FieldValue = string | number | bigint | Float | boolean | null | undefined;

/** One parsed event. */
export interface ParsedEvent {
  /** `[name, value]` pairs, or an object in its key order (integer-like keys come first). */
  fields: Array<[string, FieldValue]> | Record<string, FieldValue>;
  /** Event time in nanoseconds since the Unix epoch (UTC); absent: the ingest time. */
  timestampNs?: bigint | null;
  /** Replacement raw text; absent: the input's. */
  raw?: string | null;
}

/** Writes the output of a batch: `ok` or `error` once per input event, in order, then `finish`. */
export class Output {
  constructor();
  /** The input could not be parsed; the core keeps it with the message. */
  error(message: string): void;
  /** The input's parsed events (an empty array drops it). */
  ok(events: ParsedEvent[]): void;
  /** The value `parse` returns. */
  finish(): ParseOutput;
}

/** Cuts the batch's raw text at `ends` (UTF-8 byte offsets). */
export function rawLines(raws: string, ends: Uint32Array | number[]): string[];
