//! Logging through `tracing`: text or JSON lines, filtered by `--log-level`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format;

use crate::cli::LogFormat;

mod json_lines;
mod timestamp;

/// Installs the global subscriber. Fails only when the filter does not parse.
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|err| format!("log_level: `{level}`: {err}"))?;
    // Colours only on a terminal: a log file, a pipe or a container's log driver gets plain
    // text, as `grep` and log shippers expect.
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_timer(timestamp::Timestamp)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text if terminal => builder.try_init(),
        LogFormat::Text => builder.fmt_fields(plain_fields()).try_init(),
        LogFormat::Json => builder.event_format(json_lines::JsonLines).try_init(),
    };
    result.map_err(|err| format!("cannot install the logger: {err}"))
}

/// Fields as `name=value`, the message bare, as the default formatter writes them without
/// colours. The default formatter still wraps every field name in a (colourless) style, which
/// took 6.5k of the 16.2k instructions of a request's log line, at the default level, on the
/// recorder thread (callgrind): at info, the line cost more than the rest of the record.
fn plain_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    format::debug_fn(|writer, field, value| {
        if field.name() == "message" {
            write!(writer, "{value:?}")
        } else {
            write!(writer, "{}={value:?}", field.name())
        }
    })
    .delimited(" ")
}
