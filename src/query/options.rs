//! Job options from `-- @name value` header lines.

use std::time::Duration;

/// When a windowed job publishes results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmitMode {
    /// Once per window, when the watermark passes its end plus lateness.
    #[default]
    OnClose,
    /// Also early, non-final results for open windows at this interval.
    Every(Duration),
}

/// Where a backfill starts reading its sources' history: `@backfill` and
/// `cxpulse backfill --from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillFrom {
    /// The oldest record each partition still holds.
    Earliest,
    /// This long before the backfill starts (`90d`).
    Ago(Duration),
    /// A point in time, in milliseconds since the epoch (RFC 3339 in the
    /// header).
    At(i64),
}

/// Why an option's value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// A backfill start that does not read.
    #[error(
        "{0:?} is not a start; write `earliest`, a duration such as `90d`, or an RFC 3339 time such as `2026-01-01T00:00:00Z`"
    )]
    NotAStart(String),
    /// A backfill start after now.
    #[error(
        "{0} is in the future: a backfill from it would read nothing (and delete the job's state)"
    )]
    Future(BackfillFrom),
    /// A duration that does not read.
    #[error("{value:?} is not a duration ({reason}); write e.g. 30s, 5m, 1h")]
    NotADuration {
        /// The value as written.
        value: String,
        /// Why.
        reason: String,
    },
    /// A duration of zero.
    #[error("{0:?} must be longer than zero")]
    Zero(String),
    /// An emit mode that does not read.
    #[error("@emit {0:?} is not an emit mode; write `@emit on_close` or `@emit every 30s`")]
    NotAnEmitMode(String),
    /// `@emit every` with a bad duration.
    #[error("@emit every {0}")]
    EmitEvery(Box<OptionError>),
}

impl BackfillFrom {
    /// Reads `earliest`, a duration such as `90d`, or an RFC 3339 time.
    pub fn parse(value: &str) -> Result<BackfillFrom, OptionError> {
        if value.eq_ignore_ascii_case("earliest") {
            return Ok(BackfillFrom::Earliest);
        }
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(value) {
            return Ok(BackfillFrom::At(at.timestamp_millis()));
        }
        match humantime::parse_duration(value) {
            Ok(d) if !d.is_zero() => Ok(BackfillFrom::Ago(d)),
            _ => Err(OptionError::NotAStart(value.to_owned())),
        }
    }

    /// `self`, unless it is a time after `now_millis`: a backfill from the
    /// future would read nothing and only delete the job's state.
    pub fn not_after(self, now_millis: i64) -> Result<BackfillFrom, OptionError> {
        match self {
            BackfillFrom::At(at) if at > now_millis => Err(OptionError::Future(self)),
            other => Ok(other),
        }
    }

    /// The event-log time to start from, in milliseconds since the epoch,
    /// given the time now; `None` for the earliest record.
    pub fn start_millis(self, now_millis: i64) -> Option<i64> {
        match self {
            BackfillFrom::Earliest => None,
            // Kafka reads negative times as "latest" and "earliest".
            BackfillFrom::Ago(d) => Some(
                now_millis
                    .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                    .max(0),
            ),
            BackfillFrom::At(at) => Some(at.max(0)),
        }
    }
}

impl std::fmt::Display for BackfillFrom {
    /// `earliest`, `90d ago`, `2026-01-01T00:00:00.000Z`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackfillFrom::Earliest => f.write_str("earliest"),
            BackfillFrom::Ago(d) => match (d.as_secs(), d.subsec_nanos()) {
                (s, 0) if s % 86_400 == 0 => write!(f, "{}d ago", s / 86_400),
                (s, 0) if s % 3_600 == 0 => write!(f, "{}h ago", s / 3_600),
                _ => write!(f, "{} ago", humantime::format_duration(*d)),
            },
            BackfillFrom::At(ms) => f.write_str(&crate::sink::format_timestamp_millis(*ms)),
        }
    }
}

/// `@gauge col, … BY label, …`: columns exported as Prometheus gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GaugeSpec {
    /// Value columns.
    pub columns: Vec<String>,
    /// Label columns.
    pub by: Vec<String>,
    /// Line of the header, for errors.
    pub line: usize,
}

/// The options of one job, with the line each was set on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOptions {
    /// `@output`: output topic (default: prefix + job name).
    pub output: Option<(String, usize)>,
    /// `@output … SHARED`: other jobs may write to the same topic (each of
    /// them says SHARED too).
    pub output_shared: bool,
    /// `@key`: columns that, with the job and window, form the Kafka key.
    pub key: Option<(Vec<String>, usize)>,
    /// `@key … WITHOUT WINDOW`: the window bounds are left out of the key,
    /// so a compacted topic keeps the latest row per key value.
    pub key_without_window: bool,
    /// `@emit`: emit mode.
    pub emit: Option<(EmitMode, usize)>,
    /// `@lateness`: how long a window waits for late events after its end.
    pub lateness: Option<(Duration, usize)>,
    /// `@gauge` lines (several allowed).
    pub gauges: Vec<GaugeSpec>,
    /// `@backfill`: a new or changed job first reads its sources' history
    /// from here.
    pub backfill: Option<(BackfillFrom, usize)>,
}

impl JobOptions {
    /// The `@key` columns (empty when unset).
    pub fn key_columns(&self) -> &[String] {
        self.key.as_ref().map_or(&[], |(k, _)| k.as_slice())
    }

    /// Parses every `-- @name value` line of `text`; errors carry the 1-based line.
    pub fn parse(text: &str) -> Result<JobOptions, (usize, String)> {
        let mut options = JobOptions::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let Some(rest) = raw.trim_start().strip_prefix("--") else {
                continue;
            };
            let Some(header) = rest.trim_start().strip_prefix('@') else {
                continue;
            };
            let (name, value) = header
                .split_once(char::is_whitespace)
                .map_or((header.trim(), ""), |(n, v)| (n, v.trim()));
            let once = |set: bool| {
                if set {
                    Err((line, format!("@{name} is set twice")))
                } else {
                    Ok(())
                }
            };
            if value.is_empty() {
                return Err((line, format!("@{name} needs a value")));
            }
            match name {
                "output" => {
                    once(options.output.is_some())?;
                    let (topic, shared) = match strip_suffix_ignore_case(value, " SHARED") {
                        Some(topic) => (topic.trim_end(), true),
                        None => (value, false),
                    };
                    if let Some(problem) = crate::config::topic_name_problem(topic) {
                        return Err((line, format!("@output topic {problem}")));
                    }
                    options.output = Some((topic.to_owned(), line));
                    options.output_shared = shared;
                }
                "key" => {
                    once(options.key.is_some())?;
                    let (columns, without_window) =
                        match strip_suffix_ignore_case(value, "WITHOUT WINDOW") {
                            Some(columns) => (columns.trim_end(), true),
                            None => (value, false),
                        };
                    options.key = Some((column_list(columns, line, "@key")?, line));
                    options.key_without_window = without_window;
                }
                "emit" => {
                    once(options.emit.is_some())?;
                    options.emit =
                        Some((parse_emit(value).map_err(|e| (line, e.to_string()))?, line));
                }
                "lateness" => {
                    once(options.lateness.is_some())?;
                    let d = parse_duration(value).map_err(|m| (line, format!("@lateness {m}")))?;
                    options.lateness = Some((d, line));
                }
                "gauge" => options.gauges.push(parse_gauge(value, line)?),
                "backfill" => {
                    once(options.backfill.is_some())?;
                    let from =
                        BackfillFrom::parse(value).map_err(|m| (line, format!("@backfill {m}")))?;
                    options.backfill = Some((from, line));
                }
                other => {
                    return Err((
                        line,
                        format!(
                            "unknown option @{other}; the options are @output, @key, @emit, @lateness, @gauge and @backfill"
                        ),
                    ));
                }
            }
        }
        Ok(options)
    }
}

fn strip_suffix_ignore_case<'a>(value: &'a str, suffix: &str) -> Option<&'a str> {
    let split = value.len().checked_sub(suffix.len())?;
    (value.is_char_boundary(split) && value[split..].eq_ignore_ascii_case(suffix))
        .then(|| &value[..split])
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn column_list(value: &str, line: usize, what: &str) -> Result<Vec<String>, (usize, String)> {
    let columns: Vec<String> = value.split(',').map(|c| c.trim().to_owned()).collect();
    if let Some(bad) = columns.iter().find(|c| !is_identifier(c)) {
        return Err((
            line,
            format!(
                "{what}: {bad:?} is not a column name; write a comma-separated list such as `channel, topic`"
            ),
        ));
    }
    Ok(columns)
}

fn parse_emit(value: &str) -> Result<EmitMode, OptionError> {
    if value == "on_close" {
        return Ok(EmitMode::OnClose);
    }
    match value.strip_prefix("every") {
        Some(interval) if interval.starts_with(char::is_whitespace) => {
            let d =
                parse_duration(interval.trim()).map_err(|e| OptionError::EmitEvery(Box::new(e)))?;
            Ok(EmitMode::Every(d))
        }
        _ => Err(OptionError::NotAnEmitMode(value.to_owned())),
    }
}

fn parse_duration(value: &str) -> Result<Duration, OptionError> {
    let d = humantime::parse_duration(value).map_err(|e| OptionError::NotADuration {
        value: value.to_owned(),
        reason: e.to_string(),
    })?;
    if d.is_zero() {
        return Err(OptionError::Zero(value.to_owned()));
    }
    Ok(d)
}

fn parse_gauge(value: &str, line: usize) -> Result<GaugeSpec, (usize, String)> {
    let (columns, by) = match split_by(value) {
        Some((c, b)) => (c, Some(b)),
        None => (value, None),
    };
    Ok(GaugeSpec {
        columns: column_list(columns, line, "@gauge")?,
        by: match by {
            Some(b) => column_list(b, line, "@gauge … BY")?,
            None => Vec::new(),
        },
        line,
    })
}

/// Splits `a, b BY c, d` at the (case-insensitive) word `BY`.
fn split_by(value: &str) -> Option<(&str, &str)> {
    let lower = value.to_ascii_lowercase();
    let at = lower.find(" by ")?;
    Some((value[..at].trim(), value[at + 4..].trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_option() {
        let text = "-- NPS per channel\n-- @key    channel\n-- @emit   every 30s\n-- @lateness 10m\n\
                    -- @output cx.alerts\n-- @gauge  nps, csat BY channel\n-- @gauge responses\nSELECT 1";
        let o = JobOptions::parse(text).expect("valid");
        assert_eq!(o.key, Some((vec!["channel".to_owned()], 2)));
        assert!(!o.key_without_window);
        let latest = JobOptions::parse("-- @key customer_id, region without window\nSELECT 1")
            .expect("valid");
        assert_eq!(
            (latest.key, latest.key_without_window),
            (
                Some((vec!["customer_id".to_owned(), "region".to_owned()], 1)),
                true
            )
        );
        assert_eq!(o.emit, Some((EmitMode::Every(Duration::from_secs(30)), 3)));
        assert_eq!(o.lateness, Some((Duration::from_secs(600), 4)));
        assert_eq!(o.output, Some(("cx.alerts".to_owned(), 5)));
        assert_eq!(o.backfill, None);
        assert_eq!(
            o.gauges,
            vec![
                GaugeSpec {
                    columns: vec!["nps".into(), "csat".into()],
                    by: vec!["channel".into()],
                    line: 6
                },
                GaugeSpec {
                    columns: vec!["responses".into()],
                    by: vec![],
                    line: 7
                },
            ]
        );
    }

    #[test]
    fn a_backfill_starts_at_earliest_a_duration_ago_or_a_time() {
        let from = |text: &str| JobOptions::parse(text).expect(text).backfill;
        assert_eq!(
            from("-- @backfill earliest\nSELECT 1"),
            Some((BackfillFrom::Earliest, 1))
        );
        let ago = from("\n-- @backfill 90d").expect("set");
        assert_eq!(
            ago,
            (BackfillFrom::Ago(Duration::from_secs(90 * 86_400)), 2)
        );
        assert_eq!(ago.0.start_millis(100 * 86_400_000), Some(10 * 86_400_000));
        let at = from("-- @backfill 2026-01-02T00:00:00Z").expect("set").0;
        // 2026-01-02 is day 20,455 since 1970-01-01.
        assert_eq!(at, BackfillFrom::At(20_455 * 86_400_000));
        assert_eq!(at.start_millis(0), Some(20_455 * 86_400_000));
        assert_eq!(BackfillFrom::Earliest.start_millis(5), None);
        assert_eq!(ago.0.to_string(), "90d ago");
        assert_eq!(
            BackfillFrom::Ago(Duration::from_secs(7_200)).to_string(),
            "2h ago"
        );
        assert_eq!(
            BackfillFrom::Ago(Duration::from_secs(90)).to_string(),
            "1m 30s ago"
        );
        assert_eq!(at.to_string(), "2026-01-02T00:00:00.000Z");
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let cases = [
            ("SELECT 1\n-- @colour blue", 2, "unknown option @colour"),
            (
                "-- @emit sometimes",
                1,
                "write `@emit on_close` or `@emit every 30s`",
            ),
            (
                "\n-- @emit every soon",
                2,
                "@emit every \"soon\" is not a duration",
            ),
            ("-- @lateness 0s", 1, "must be longer than zero"),
            ("-- @key a\n-- @key b", 2, "@key is set twice"),
            ("-- @key a b", 1, "\"a b\" is not a column name"),
            (
                "-- @output bad topic",
                1,
                "@output topic \"bad topic\" may only contain",
            ),
            ("-- @gauge", 1, "@gauge needs a value"),
            (
                "-- @backfill yesterday",
                1,
                "@backfill \"yesterday\" is not a start",
            ),
            ("-- @backfill 0s", 1, "is not a start"),
            (
                "-- @backfill 1d\n-- @backfill 2d",
                2,
                "@backfill is set twice",
            ),
        ];
        for (text, line, message) in cases {
            let (got_line, got) = JobOptions::parse(text).expect_err(text);
            assert_eq!(got_line, line, "{text}");
            assert!(got.contains(message), "{text}: {got}");
        }
    }
}
