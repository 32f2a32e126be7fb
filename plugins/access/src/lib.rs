//! The `access` plugin: Apache/NGINX access logs, combined or common format. Logic lives in `weir_parsers::access`.

use weir_parsers::access::{AccessParser, SETTINGS};
use weir_plugin_sdk::{EventWriter, Input, Parser, SettingInfo, Settings, export_parser};

struct Plugin(AccessParser);

impl Parser for Plugin {
    const NAME: &'static str = "access";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Apache/NGINX access logs, combined or common format";

    fn settings() -> Vec<SettingInfo> {
        SettingInfo::from_table(SETTINGS)
    }
    fn configure(settings: &Settings) -> Result<Self, String> {
        AccessParser::new(settings).map(Plugin)
    }
    fn parse(&self, input: &Input<'_>, out: &mut EventWriter<'_>) -> Result<(), String> {
        self.0.parse(input)?.write_to(out);
        Ok(())
    }
}

export_parser!(Plugin);
