/// <reference path="./interfaces/weir-parser-types.d.ts" />
declare module 'weir:parser/parser@0.2.0' {
  export type BatchContext = import('weir:parser/types@0.2.0').BatchContext;
  export type ParseOutput = import('weir:parser/types@0.2.0').ParseOutput;
  export type PluginInfo = import('weir:parser/types@0.2.0').PluginInfo;
  export type * as WeirParserTypes020 from 'weir:parser/types@0.2.0'; // import weir:parser/types@0.2.0
  /**
  * Describes the plugin. Must not depend on `configure`.
  */
  export function describe(): PluginInfo;
  /**
  * Configures this instance with name/value settings. Called once per
  * instance, before any `parse`. Returns an error message that says which
  * setting is wrong and what is expected, e.g.
  * "setting `pattern`: unclosed group at offset 3; expected a regex with named groups".
  */
  export function configure(settings: Array<[string, string]>): void;
  /**
  * Parses a batch. `raws` holds the raw text of every input event back to
  * back (usually one log line each, without its line terminator); event
  * `i` is the bytes `ends[i-1]..ends[i]` (from 0 for the first), always on
  * character boundaries. Returns one outcome per event, same order, packed
  * as described at `parse-output`.
  */
  export function parse(context: BatchContext, raws: string, ends: Uint32Array): ParseOutput;
  export type Result<T, E> = { tag: 'ok', val: T } | { tag: 'err', val: E };
}
