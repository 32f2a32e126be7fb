declare module 'weir:parser/types@0.2.0' {
  /**
   * What every event of a `parse` call shares. The host groups events by
   * it: one call carries the events of one repository, with the same source
   * tags and the same ingest time.
   */
  export interface BatchContext {
    /**
     * The repository the events are stored in.
     */
    repository: string,
    /**
     * Source tags set by the edge or the ingest client (host, service, ...).
     */
    tags: Array<[string, string]>,
    /**
     * When the core received the events, in nanoseconds since the Unix
     * epoch (UTC). Use it as the default timestamp and to complete
     * timestamps that lack a year (RFC 3164 syslog).
     */
    ingestTimeNs: bigint,
  }
  /**
   * The result of a `parse` call: one outcome per input event, packed.
   * 
   * `index` is a sequence of items; each starts with a one-byte tag. All
   * integers are little-endian. A `str` is a `u32` byte length in `index`;
   * its bytes are the next that many bytes of `text` (strings are taken
   * from `text` in the order `index` refers to them, so `text` is every
   * string of the batch back to back, and must be used up exactly).
   * 
   * ```text
   * index   := outcome{N}                 N = number of input events
   * outcome := 0x01 str                   error: the message (the host keeps
   *                                       the raw event and records it)
   *          | 0x02 u32:n event{n}        ok: n parsed events (0 drops the input)
   * event   := u32:m item{m}
   * item    := 0x10 str:name str:value    text field
   *          | 0x11 str:name s64          int field
   *          | 0x12 str:name f64          float field (IEEE 754 bits)
   *          | 0x13 str:name u8           bool field (0 or 1)
   *          | 0x14 str:name              null field (e.g. JSON null, access log `-`)
   *          | 0x20 s64                   event time, ns since the Unix epoch
   *                                       (UTC); absent: the host uses the
   *                                       ingest time. Last one wins.
   *          | 0x21 str                   replacement raw text (e.g. the message
   *                                       without its header); absent: the
   *                                       input's raw text. Last one wins.
   * ```
   * 
   * Fields keep the order they are written in; nested names use dots
   * (`http.status`). Why counts and not terminators: the host sizes each
   * event's field list once. Why strings apart from the structure: `text`
   * is checked for UTF-8 in one pass instead of once per string, and the
   * structure stays small and cheap to walk.
   * 
   * What the host does with bad output: a bad tag, a count or length past
   * the end of a buffer, a string that is not UTF-8 or splits a character,
   * or a bool other than 0/1 makes that outcome and every later one of the
   * batch a `contract_violation` error (their raw events kept). Fewer or
   * more than N outcomes, or bytes left over in `index` or `text`, make the
   * whole batch one. Either way the instance is replaced.
   */
  export interface ParseOutput {
    index: Uint8Array,
    text: Uint8Array,
  }
  /**
   * One setting a plugin accepts in `configure`.
   */
  export interface Setting {
    name: string,
    /**
     * What the setting does, shown to users.
     */
    description: string,
    /**
     * Whether `configure` fails without it.
     */
    required: boolean,
    /**
     * The value used when the setting is absent, if any.
     */
    defaultValue?: string,
  }
  /**
   * What a plugin is.
   */
  export interface PluginInfo {
    /**
     * Short name, lowercase, e.g. `json`.
     */
    name: string,
    /**
     * The plugin's own version (semver).
     */
    version: string,
    /**
     * One sentence on what it parses.
     */
    description: string,
    /**
     * The settings `configure` accepts.
     */
    settings: Array<Setting>,
  }
}
