//! The `syslog` plugin: syslog RFC 5424 and RFC 3164 (BSD) lines. Logic lives in `weir_parsers::syslog`.

use weir_parsers::syslog::{SETTINGS, SyslogParser};
use weir_plugin_sdk::{EventWriter, Input, Parser, SettingInfo, Settings, export_parser};

struct Plugin(SyslogParser);

impl Parser for Plugin {
    const NAME: &'static str = "syslog";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "syslog RFC 5424 and RFC 3164 (BSD) lines";

    fn settings() -> Vec<SettingInfo> {
        SettingInfo::from_table(SETTINGS)
    }
    fn configure(settings: &Settings) -> Result<Self, String> {
        SyslogParser::new(settings).map(Plugin)
    }
    fn parse(&self, input: &Input<'_>, out: &mut EventWriter<'_>) -> Result<(), String> {
        self.0.parse(input)?.write_to(out);
        Ok(())
    }
}

export_parser!(Plugin);
