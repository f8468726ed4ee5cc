//! Logging: `tracing` to stderr, JSON in a cluster and text on a terminal, with a filter that can
//! be changed while the process runs (`PUT /debug/loglevel`).

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines.
    Text,
}

impl LogFormat {
    /// Text on a terminal, JSON otherwise (a container's stderr goes to a collector).
    pub fn detect() -> Self {
        if std::io::stderr().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter `{directives}`: {reason}")]
    Filter { directives: String, reason: String },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
    #[error("the log filter can no longer be changed: {0}")]
    Reload(String),
}

/// Changes the log filter of a running process.
#[derive(Clone, Debug)]
pub struct LogLevelHandle {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogLevelHandle {
    /// Replaces the filter (`debug`, `winipam=trace,kube=info`...). An invalid filter is refused
    /// and the current one stays.
    pub fn set(&self, directives: &str) -> Result<(), TelemetryError> {
        let filter = parse_filter(directives)?;
        self.handle
            .reload(filter)
            .map_err(|e| TelemetryError::Reload(e.to_string()))
    }

    /// The filter in force, as directives.
    pub fn current(&self) -> String {
        self.handle
            .with_current(|f| f.to_string())
            .unwrap_or_default()
    }
}

fn parse_filter(directives: &str) -> Result<EnvFilter, TelemetryError> {
    let directives = directives.trim();
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| TelemetryError::Filter {
            directives: directives.to_string(),
            reason: e.to_string(),
        })
}

/// The filter to start with: the flag, else `RUST_LOG`, else `info`.
pub fn initial_directives(flag: Option<&str>, rust_log: Option<String>) -> String {
    flag.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .or_else(|| rust_log.filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| "info".to_string())
}

/// A subscriber writing to `writer`, and the handle that changes its filter.
pub fn subscriber<W>(
    format: LogFormat,
    directives: &str,
    writer: W,
) -> Result<
    (
        impl tracing::Subscriber + Send + Sync + 'static,
        LogLevelHandle,
    ),
    TelemetryError,
>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter, handle) = reload::Layer::new(parse_filter(directives)?);
    let (json, text) = match format {
        LogFormat::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(writer),
            ),
            None,
        ),
        LogFormat::Text => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(writer),
            ),
        ),
    };
    let subscriber = Registry::default().with(filter).with(json).with(text);
    Ok((subscriber, LogLevelHandle { handle }))
}

/// Installs the process-wide logger on stderr.
pub fn init(
    format: Option<LogFormat>,
    level: Option<&str>,
) -> Result<LogLevelHandle, TelemetryError> {
    let directives = initial_directives(level, std::env::var("RUST_LOG").ok());
    let format = format.unwrap_or_else(LogFormat::detect);
    let (subscriber, handle) = subscriber(format, &directives, std::io::stderr)?;
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn level_changes_at_runtime() {
        let buf = Buffer::default();
        let (sub, handle) = subscriber(LogFormat::Text, "info", buf.clone()).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::debug!("hidden-line");
            tracing::info!("shown-line");
            handle.set("debug").unwrap();
            tracing::debug!("now-shown");
            assert!(handle.set("not a [valid filter").is_err());
            tracing::debug!("still-debug");
            assert_eq!(handle.current(), "debug");
        });
        // The handle does not keep a dropped logger alive.
        assert!(handle.set("info").is_err());
        let text = buf.text();
        assert!(!text.contains("hidden-line"), "{text}");
        assert!(text.contains("shown-line"));
        assert!(text.contains("now-shown"));
        assert!(text.contains("still-debug"));
    }

    #[test]
    fn json_lines_parse() {
        let buf = Buffer::default();
        let (sub, _handle) = subscriber(LogFormat::Json, "info", buf.clone()).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(node = "n1", "capacity written");
        });
        let line = buf.text();
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["node"], "n1");
        assert_eq!(v["message"], "capacity written");
    }

    #[test]
    fn directives_come_from_flag_then_rust_log() {
        assert_eq!(
            initial_directives(Some("debug"), Some("warn".into())),
            "debug"
        );
        assert_eq!(initial_directives(None, Some("warn".into())), "warn");
        assert_eq!(initial_directives(Some(" "), None), "info");
        assert!(subscriber(LogFormat::Text, "[[", Buffer::default()).is_err());
    }
}
