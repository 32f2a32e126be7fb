//! The `kv` plugin: key=value pairs and logfmt, bare values typed. Logic lives in `weir_parsers::kv`.

use weir_parsers::kv::{KvParser, SETTINGS};
use weir_plugin_sdk::{EventWriter, Input, Parser, SettingInfo, Settings, export_parser};

struct Plugin(KvParser);

impl Parser for Plugin {
    const NAME: &'static str = "kv";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "key=value pairs and logfmt, bare values typed";

    fn settings() -> Vec<SettingInfo> {
        SettingInfo::from_table(SETTINGS)
    }
    fn configure(settings: &Settings) -> Result<Self, String> {
        KvParser::new(settings).map(Plugin)
    }
    fn parse(&self, input: &Input<'_>, out: &mut EventWriter<'_>) -> Result<(), String> {
        self.0.parse(input)?.write_to(out);
        Ok(())
    }
}

export_parser!(Plugin);
