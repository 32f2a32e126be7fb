//! The `chaos` plugin: a hostile guest for the host's sandbox tests, never for
//! production. A line that is one of the trigger words misbehaves:
//! `loop` spins forever, `grow` allocates until memory runs out, `recurse`
//! recurses without end, `huge` returns megabytes of fields, `trap` aborts,
//! `panic` panics. `probe` reports what the sandbox grants: the number of
//! environment variables, the error reading a file, the wall clock. Any other line parses to `text` (the line) and `calls`
//! (how many events this instance has parsed, to tell a reused instance from a
//! fresh one).

use std::cell::Cell;
use std::hint::black_box;
use weir_plugin_sdk::{Input, Parsed, Parser, SettingInfo, Settings, Value, export_parser};

thread_local! {
    static CALLS: Cell<i64> = const { Cell::new(0) };
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

    fn parse(&self, input: &Input<'_>) -> Result<Parsed, String> {
        let calls = CALLS.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        match input.raw.trim() {
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
                let mut out = Parsed::default();
                for i in 0..100_000 {
                    out.push(format!("f{i}"), Value::Text("x".repeat(64)));
                }
                Ok(out)
            }
            "trap" => std::process::abort(),
            "panic" => panic!("chaos plugin asked to panic"),
            "probe" => {
                let mut out = Parsed::default();
                out.push("env_vars", Value::Int(std::env::vars().count() as i64));
                out.push("args", Value::Int(std::env::args().count() as i64));
                let file = match std::fs::read("/etc/passwd") {
                    Ok(_) => "read".to_string(),
                    Err(e) => e.to_string(),
                };
                out.push_text("file", file);
                let socket = match std::net::TcpStream::connect("127.0.0.1:9") {
                    Ok(_) => "connected".to_string(),
                    Err(e) => e.to_string(),
                };
                out.push_text("socket", socket);
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(-1, |d| d.as_secs() as i64);
                out.push("clock_secs", Value::Int(secs));
                Ok(out)
            }
            _ => {
                let mut out = Parsed::default();
                out.push_text("text", input.raw);
                out.push("calls", Value::Int(calls));
                Ok(out)
            }
        }
    }
}

export_parser!(Chaos);
