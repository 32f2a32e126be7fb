//! The `json` plugin: one JSON object per line, nested objects flattened to
//! dotted names. Logic lives in `weir_parsers::json`.

use weir_parsers::json::{JsonParser, SETTINGS};
use weir_plugin_sdk::{EventWriter, Input, Parser, SettingInfo, Settings, export_parser};

struct Json(JsonParser);

impl Parser for Json {
    const NAME: &'static str = "json";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "one JSON object per line, nested objects flattened to dotted names";

    fn settings() -> Vec<SettingInfo> {
        SettingInfo::from_table(SETTINGS)
    }
    fn configure(settings: &Settings) -> Result<Self, String> {
        JsonParser::new(settings).map(Json)
    }
    fn parse(&self, input: &Input<'_>, out: &mut EventWriter<'_>) -> Result<(), String> {
        // Streams fields into the output buffer: no per-field allocation.
        self.0.parse_into(input, out)
    }
}

export_parser!(Json);
