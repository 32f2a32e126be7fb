//! Host bindings generated from `wit/parser.wit` (`weir:parser@0.2.0`). Owns
//! the contract's Rust shape on the host side; it must never grow logic
//! beyond conversions. The packed output is decoded by [`crate::decode`].

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "parser",
});

pub use weir::parser::types::PluginInfo as WitPluginInfo;
