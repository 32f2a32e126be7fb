//! The `chaos` plugin: a hostile guest for the host's sandbox tests, never for
//! production. A line that is one of the trigger words misbehaves:
//! `loop` spins forever, `grow` allocates until memory runs out, `recurse`
//! recurses without end, `huge` returns megabytes of fields, `trap` aborts,
//! `panic` panics, `sleep` sleeps for an hour (`std::thread::sleep`:
//! `subscribe-duration` then `pollable.block`), `poll` waits an hour in libc's
//! `poll` (`subscribe-duration` then `wasi:io/poll.poll`). `probe` reports
//! what the sandbox grants: the number of environment variables, the error
//! reading a file, the wall clock. Malformed output (written past the SDK's
//! encoder, see [`malformed`]): `bad-tag`,
//! `past-end`, `bad-utf8`, `split-char`, `bad-bool`, `huge-count`,
//! `extra-outcome`, `no-outcome`, `text-left`. State across events (a bad
//! event that fails only in company): `mark` parses like any line and marks
//! the instance; `after-mark` panics if this instance parsed a `mark` before,
//! and parses like any line otherwise. Any other line parses to `text`
//! (the line) and `calls` (how many events this instance has parsed, to tell a
//! reused instance from a fresh one).

use std::cell::Cell;
use std::hint::black_box;
use weir_plugin_sdk::{EventWriter, Events, Input, Parser, SettingInfo, Settings, Sink, export_parser};

// The one foreign function this plugin calls (`poll`, below); the rest of the
// crate stays under the workspace's `unsafe_code = "deny"`.
#[allow(unsafe_code)]
// SAFETY: this is wasi-libc's `poll(2)` with its C signature
// (`struct pollfd *`, `nfds_t` = `unsigned long`, `int` timeout, `int` result),
// and wasi-libc is linked into every wasm32-wasip2 binary by the Rust target
// (a native build links glibc's, which has the same signature).
unsafe extern "C" {
    /// wasi-libc's `poll(2)`.
    fn poll(
        fds: *mut std::ffi::c_void,
        nfds: std::ffi::c_ulong,
        timeout_ms: std::ffi::c_int,
    ) -> std::ffi::c_int;
}

thread_local! {
    static CALLS: Cell<i64> = const { Cell::new(0) };
    /// Whether this instance parsed a `mark`.
    static MARKED: Cell<bool> = const { Cell::new(false) };
}

struct Chaos;

/// Recursion with scalar frames: exhausts wasm's own call stack.
#[inline(never)]
fn deep_native(n: u64) -> u64 {
    if black_box(n) == u64::MAX {
        0
    } else {
        deep_native(n + 1).wrapping_add(n)
    }
}

/// Recursion with big frames: exhausts the shadow stack in linear memory.
#[inline(never)]
fn deep(n: u64) -> u64 {
    let frame = black_box([n; 32]);
    if black_box(n) == u64::MAX {
        0
    } else {
        deep(n + 1).wrapping_add(frame[7])
    }
}

/// Writes raw bytes into `index` and `text`.
type WriteRaw = fn(&mut Vec<u8>, &mut Vec<u8>);

/// Writes the outcome of a malformed-output trigger word as raw bytes of the
/// contract's `index` and `text` buffers (layout: `wit/parser.wit`).
fn malformed(word: &str) -> Option<WriteRaw> {
    fn len(index: &mut Vec<u8>, n: u32) {
        index.extend_from_slice(&n.to_le_bytes());
    }
    /// `ok`, one event of one item, the item's tag.
    fn one_item(index: &mut Vec<u8>, tag: u8) {
        index.push(0x02);
        len(index, 1);
        len(index, 1);
        index.push(tag);
    }
    Some(match word {
        "bad-tag" => |index, _| index.push(0x7f),
        "past-end" => |index, _| {
            one_item(index, 0x14);
            len(index, 1000);
        },
        "bad-utf8" => |index, text| {
            index.push(0x01);
            len(index, 3);
            text.extend_from_slice(b"a\xff\xfe");
        },
        "split-char" => |index, text| {
            one_item(index, 0x10);
            len(index, 1);
            len(index, 1);
            text.extend_from_slice("é".as_bytes());
        },
        "bad-bool" => |index, text| {
            one_item(index, 0x13);
            len(index, 1);
            text.push(b'b');
            index.push(2);
        },
        "huge-count" => |index, _| {
            index.push(0x02);
            len(index, u32::MAX);
            len(index, u32::MAX);
        },
        "extra-outcome" => |index, _| {
            for _ in 0..2 {
                index.push(0x02);
                len(index, 0);
            }
        },
        "no-outcome" => |_, _| {},
        "text-left" => |index, text| {
            index.push(0x02);
            len(index, 0);
            text.extend_from_slice(b"stray");
        },
        _ => return None,
    })
}

impl Parser for Chaos {
    const NAME: &'static str = "chaos";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "hostile test plugin: misbehaves on trigger words";

    fn settings() -> Vec<SettingInfo> {
        vec![SettingInfo {
            name: "fail_configure",
            description: "`true` makes configure fail, to test the error path",
            required: false,
            default: Some("false"),
        }]
    }

    fn configure(settings: &Settings) -> Result<Self, String> {
        settings.reject_unknown(&["fail_configure"])?;
        if settings.bool_or("fail_configure", false)? {
            return Err("setting `fail_configure`: asked to fail; set it to `false`".into());
        }
        Ok(Chaos)
    }

    fn parse_many(&self, input: &Input<'_>, out: &mut Events<'_>) -> Result<(), String> {
        match malformed(input.raw.trim()) {
            Some(write) => {
                CALLS.with(|c| c.set(c.get() + 1));
                out.verbatim(write);
                Ok(())
            }
            None => self.parse(input, &mut out.event()),
        }
    }

    fn parse(&self, input: &Input<'_>, out: &mut EventWriter<'_>) -> Result<(), String> {
        let calls = CALLS.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        // `probe:PORT` connects to a listener the test holds on that port.
        let (trigger, probe_port) = match input.raw.trim().split_once(':') {
            Some(("probe", port)) => ("probe", port.parse::<u16>().ok()),
            _ => (input.raw.trim(), None),
        };
        match trigger {
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 4 << 20]));
                }
            }
            "deep" => {
                black_box(deep_native(0));
                Err("recursion ended".into())
            }
            "recurse" => {
                black_box(deep(0));
                Err("recursion ended".into())
            }
            "huge" => {
                let value = "x".repeat(64);
                for i in 0..100_000 {
                    out.text(&format!("f{i}"), &value);
                }
                Ok(())
            }
            "trap" => std::process::abort(),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Err("slept for an hour".into())
            }
            "poll" => {
                // No descriptors and a timeout of an hour: wasi-libc waits on a
                // `subscribe-duration` pollable with `wasi:io/poll.poll`.
                #[allow(unsafe_code)] // the FFI call; see the extern block
                // SAFETY: with `nfds` 0 `poll` reads no descriptor, so a null
                // array is valid; it only blocks for the timeout and touches no
                // memory of ours.
                let n = unsafe { poll(std::ptr::null_mut(), 0, 3_600_000) };
                Err(format!("poll returned {n} after an hour"))
            }
            "panic" => panic!("chaos plugin asked to panic"),
            "after-mark" if MARKED.get() => {
                panic!("chaos plugin: `after-mark` after a `mark` in this instance")
            }
            "mark" => {
                MARKED.set(true);
                out.text("text", input.raw);
                out.int("calls", calls);
                Ok(())
            }
            "probe" => {
                out.int("env_vars", std::env::vars().count() as i64);
                out.int("args", std::env::args().count() as i64);
                let file = match std::fs::read("/etc/passwd") {
                    Ok(_) => "read".to_string(),
                    Err(e) => e.to_string(),
                };
                out.text("file", &file);
                let target = format!("127.0.0.1:{}", probe_port.unwrap_or(9));
                let socket = match std::net::TcpStream::connect(target.as_str()) {
                    Ok(_) => "connected".to_string(),
                    Err(e) => e.to_string(),
                };
                out.text("socket", &socket);
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(-1, |d| d.as_secs() as i64);
                out.int("clock_secs", secs);
                Ok(())
            }
            _ => {
                out.text("text", input.raw);
                out.int("calls", calls);
                Ok(())
            }
        }
    }
}

export_parser!(Chaos);
