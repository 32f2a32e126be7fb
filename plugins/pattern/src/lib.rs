//! The `pattern` plugin: named captures of a configurable regex become fields. Logic lives in `weir_parsers::pattern`.

use weir_parsers::pattern::{PatternParser, SETTINGS};
use weir_plugin_sdk::{EventWriter, Input, Parser, SettingInfo, Settings, export_parser};

struct Plugin(PatternParser);

impl Parser for Plugin {
    const NAME: &'static str = "pattern";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "named captures of a configurable regex become fields";

    fn settings() -> Vec<SettingInfo> {
        SettingInfo::from_table(SETTINGS)
    }
    fn configure(settings: &Settings) -> Result<Self, String> {
        PatternParser::new(settings).map(Plugin)
    }
    fn parse(&self, input: &Input<'_>, out: &mut EventWriter<'_>) -> Result<(), String> {
        self.0.parse(input)?.write_to(out);
        Ok(())
    }
}

export_parser!(Plugin);
