//! Guest SDK for Weir parser plugins.
//!
//! This crate owns the glue between the WIT contract (`wit/parser.wit`,
//! `weir:parser@0.2.0`) and a plain Rust parser: implement [`Parser`] for a
//! type and call [`export_parser!`] once; the SDK keeps the configured
//! instance, runs the batch loop, hands each event's fields to the packed
//! output the contract wants ([`EventWriter`], a [`Sink`]), and turns a
//! parser's `Err` into the event's error outcome. It also installs the
//! plugin's allocator, a bump arena rewound once per batch ([`arena`]). It
//! must never hold anything but the one configured parser, nor reach for
//! files, clocks or the network: the host grants none of them.
//!
//! ```text
//! use weir_plugin_sdk::{EventWriter, Input, Parser, Settings, Sink, export_parser};
//!
//! struct Upper;
//! impl Parser for Upper {
//!     const NAME: &'static str = "upper";
//!     const VERSION: &'static str = "0.1.0";
//!     const DESCRIPTION: &'static str = "puts the line upper-cased in `text`";
//!     fn configure(settings: &Settings) -> Result<Self, String> {
//!         settings.reject_unknown(&[])?;
//!         Ok(Upper)
//!     }
//!     fn parse(&self, input: &Input<'_>, out: &mut EventWriter<'_>) -> Result<(), String> {
//!         out.text("text", &input.raw.to_uppercase());
//!         Ok(())
//!     }
//! }
//! export_parser!(Upper);
//! ```

pub use output::{EventWriter, Events};
pub use weir_parsers::model::{Input, Parsed, Settings, Sink, Value, infer};
pub use weir_parsers::time;

mod output;

#[cfg(feature = "arena")]
pub mod arena;

/// The bump arena (see [`arena`]) as the plugin's allocator: only on
/// single-threaded wasm, where the host's post-return call frees a whole
/// batch at once, and the only cfg where `Arena` is `Sync` (see its `Sync`
/// impl). Plugins that bring their own allocator turn off the default `arena`
/// feature.
#[cfg(all(feature = "arena", target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: arena::Arena = arena::Arena::new();

/// Runs `f` with allocations going to the system allocator, for state that
/// outlives a batch; a no-op without the arena.
#[cfg(all(feature = "arena", target_family = "wasm", not(target_feature = "atomics")))]
fn long_lived<R>(f: impl FnOnce() -> R) -> R {
    arena::paused(&ALLOCATOR, f)
}
#[cfg(not(all(feature = "arena", target_family = "wasm", not(target_feature = "atomics"))))]
fn long_lived<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[doc(hidden)]
// The flattened `parse` export takes 9 core parameters (context record, string, list).
#[allow(clippy::too_many_arguments)]
// The generated code is full of `unsafe` (the canonical ABI glue, the
// `export_name`d entry points, here and where `export_parser!` expands it in
// each plugin), yet needs no `#[allow(unsafe_code)]`: rustc does not report
// `unsafe_code` in code expanded from another crate's macro (wit-bindgen's
// `generate!`, and this crate's macros in the plugins), so the workspace's
// `deny` still covers all hand-written code. Were that to change, the build
// would fail loudly rather than let unchecked unsafe in.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "parser",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "weir_plugin_sdk::bindings",
    });
}

/// One setting a parser declares in its description.
#[derive(Debug, Clone)]
pub struct SettingInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub required: bool,
    /// `None` or an empty string means no default.
    pub default: Option<&'static str>,
}

impl SettingInfo {
    /// Builds the list from `(name, description, default)` triples; an empty
    /// default means the setting is optional without a default.
    pub fn from_table(table: &[(&'static str, &'static str, &'static str)]) -> Vec<SettingInfo> {
        table
            .iter()
            .map(|(name, description, default)| SettingInfo {
                name,
                description,
                required: description.contains("(required)"),
                default: (!default.is_empty()).then_some(*default),
            })
            .collect()
    }
}

/// A parser plugin: configured once per instance, then called per event.
pub trait Parser: Sized + 'static {
    /// Short lowercase name, e.g. `json`.
    const NAME: &'static str;
    /// The plugin's own version.
    const VERSION: &'static str;
    /// One sentence on what it parses.
    const DESCRIPTION: &'static str;

    /// The settings `configure` accepts.
    fn settings() -> Vec<SettingInfo> {
        Vec::new()
    }

    /// Builds the parser from its settings, or says which one is wrong.
    fn configure(settings: &Settings) -> Result<Self, String>;

    /// Parses one event: writes its fields (and optionally its time and a
    /// replacement raw text) into `out`. On `Err` whatever was written is
    /// dropped and the core keeps the raw event with the message.
    fn parse(&self, input: &Input<'_>, out: &mut EventWriter<'_>) -> Result<(), String>;

    /// Parses one input into any number of events (each `out.event()` starts
    /// one); override to split a line or to drop it (start none).
    fn parse_many(&self, input: &Input<'_>, out: &mut Events<'_>) -> Result<(), String> {
        self.parse(input, &mut out.event())
    }
}

#[doc(hidden)]
pub mod glue {
    //! Called by the code `export_parser!` generates; not a public API.
    use super::bindings::weir::parser::types as wit;
    use super::output::Output;
    use super::{Input, Parser, Settings, long_lived};
    use std::any::Any;
    use std::cell::{Cell, RefCell};

    thread_local! {
        static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
        /// Whether a `parse` call has run: the first one runs outside the
        /// arena, so caches a parser fills lazily do not pin it.
        static WARM: Cell<bool> = const { Cell::new(false) };
    }

    pub fn describe<P: Parser>() -> wit::PluginInfo {
        wit::PluginInfo {
            name: P::NAME.into(),
            version: P::VERSION.into(),
            description: P::DESCRIPTION.into(),
            settings: P::settings()
                .into_iter()
                .map(|s| wit::Setting {
                    name: s.name.into(),
                    description: s.description.into(),
                    required: s.required,
                    default_value: s.default.map(String::from),
                })
                .collect(),
        }
    }

    pub fn configure<P: Parser>(settings: Vec<(String, String)>) -> Result<(), String> {
        // The configured parser lives as long as the instance.
        long_lived(|| {
            let parser = P::configure(&Settings::new(settings))?;
            STATE.with(|s| *s.borrow_mut() = Some(Box::new(parser)));
            Ok(())
        })
    }

    pub fn parse<P: Parser>(
        context: wit::BatchContext,
        raws: String,
        ends: Vec<u32>,
    ) -> wit::ParseOutput {
        if WARM.replace(true) {
            parse_batch::<P>(&context, &raws, &ends)
        } else {
            long_lived(|| parse_batch::<P>(&context, &raws, &ends))
        }
    }

    fn parse_batch<P: Parser>(context: &wit::BatchContext, raws: &str, ends: &[u32]) -> wit::ParseOutput {
        let mut out = Output::for_batch(ends.len(), raws.len());
        STATE.with(|s| {
            let state = s.borrow();
            let parser = state.as_ref().and_then(|b| b.downcast_ref::<P>());
            let mut start = 0;
            for &end in ends {
                let end = end as usize;
                // The host cuts on character boundaries; anything else reads as empty.
                let raw = raws.get(start..end).unwrap_or_default();
                start = end;
                let input = Input {
                    raw,
                    repository: &context.repository,
                    tags: &context.tags,
                    ingest_time_ns: context.ingest_time_ns,
                };
                out.outcome(|events| match parser {
                    Some(parser) => parser.parse_many(&input, events),
                    None => Err(format!("plugin `{}` was not configured before parse", P::NAME)),
                });
            }
        });
        wit::ParseOutput {
            index: out.index,
            text: out.text,
        }
    }
}

/// Exports a [`Parser`] implementation as the component's `parser` world.
#[macro_export]
macro_rules! export_parser {
    ($parser:ty) => {
        struct __WeirParserExport;

        impl $crate::bindings::Guest for __WeirParserExport {
            fn describe() -> $crate::bindings::weir::parser::types::PluginInfo {
                $crate::glue::describe::<$parser>()
            }
            fn configure(settings: ::std::vec::Vec<(::std::string::String, ::std::string::String)>) -> ::std::result::Result<(), ::std::string::String> {
                $crate::glue::configure::<$parser>(settings)
            }
            fn parse(
                context: $crate::bindings::weir::parser::types::BatchContext,
                raws: ::std::string::String,
                ends: ::std::vec::Vec<u32>,
            ) -> $crate::bindings::weir::parser::types::ParseOutput {
                $crate::glue::parse::<$parser>(context, raws, ends)
            }
        }

        $crate::bindings::__export_world!(__WeirParserExport with_types_in $crate::bindings);
    };
}
