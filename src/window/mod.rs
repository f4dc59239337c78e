//! Event-time windows: what `TUMBLE`, `HOP` and `SESSION` mean, in
//! milliseconds since the epoch.
//!
//! * [`sql`] plans the table functions into a [`assign::WindowAssign`] node.
//! * [`assign`] (logical) and [`exec`] (physical) add `window_start` /
//!   `window_end` to every row.
//! * [`split`] cuts a windowed job's plan into the per-batch part and the
//!   per-firing part.
//! * [`panes`] and [`sessions`] hold the partial aggregates between firings:
//!   they are where windows are closed.

pub mod assign;
pub mod exec;
pub mod panes;
pub mod sessions;
pub mod split;
pub mod sql;
pub mod store;

use std::fmt;

/// The shape of a job's windows; every duration is in milliseconds (> 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows `[k·size, (k+1)·size)`.
    Tumble {
        /// Window length.
        size: i64,
    },
    /// Overlapping windows `[k·slide, k·slide + size)`.
    Hop {
        /// Window length.
        size: i64,
        /// Distance between window starts.
        slide: i64,
    },
    /// Per key, a run of events with less than `gap` between neighbours;
    /// `[first event, last event + gap)`.
    Session {
        /// Inactivity that closes a session.
        gap: i64,
    },
}

impl WindowSpec {
    /// Width of a pane, the unit of state: the window for TUMBLE,
    /// `gcd(size, slide)` for HOP, so an event is stored once, not once per
    /// window. Sessions have no panes (`None`).
    pub fn pane(&self) -> Option<i64> {
        match *self {
            WindowSpec::Tumble { size } => Some(size),
            WindowSpec::Hop { size, slide } => Some(gcd(size, slide)),
            WindowSpec::Session { .. } => None,
        }
    }

    /// Distance between consecutive window starts (TUMBLE and HOP).
    pub fn slide(&self) -> i64 {
        match *self {
            WindowSpec::Tumble { size } => size,
            WindowSpec::Hop { slide, .. } => slide,
            WindowSpec::Session { gap } => gap,
        }
    }

    /// Window length (TUMBLE and HOP); the gap for SESSION.
    pub fn size(&self) -> i64 {
        match *self {
            WindowSpec::Tumble { size } | WindowSpec::Hop { size, .. } => size,
            WindowSpec::Session { gap } => gap,
        }
    }

    /// End of the last window that contains `ts` (TUMBLE and HOP), or of
    /// the one-event session `[ts, ts + gap)`. An event is late for every
    /// window once the watermark has passed this plus the lateness.
    pub fn last_window_end(&self, ts: i64) -> i64 {
        match *self {
            WindowSpec::Session { gap } => ts.saturating_add(gap),
            _ => floor_to(ts, self.slide()).saturating_add(self.size()),
        }
    }

    /// End of the first window that contains the instant `ts` (TUMBLE, HOP).
    pub fn first_window_end(&self, ts: i64) -> i64 {
        let slide = self.slide();
        // Smallest k·slide with k·slide + size > ts.
        let start = floor_to(ts - self.size(), slide) + slide;
        start + self.size()
    }
}

/// A duration in days, hours, minutes, seconds and milliseconds, largest
/// first, zero parts left out: `365d`, `1h 30m`, `500ms`.
pub fn plain_duration(ms: i64) -> String {
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
        (1, "ms"),
    ];
    let mut rest = ms.max(0);
    let mut parts = Vec::new();
    for (unit, suffix) in units {
        if rest >= unit {
            parts.push(format!("{}{suffix}", rest / unit));
            rest %= unit;
        }
    }
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = plain_duration;
        match *self {
            WindowSpec::Tumble { size } => write!(f, "TUMBLE({})", d(size)),
            WindowSpec::Hop { size, slide } => {
                write!(f, "HOP(slide {}, size {})", d(slide), d(size))
            }
            WindowSpec::Session { gap } => write!(f, "SESSION(gap {})", d(gap)),
        }
    }
}

/// A timestamp column as epoch milliseconds, whatever its unit and zone.
pub fn epoch_millis(
    column: &arrow::array::ArrayRef,
) -> Result<arrow::array::TimestampMillisecondArray, arrow::error::ArrowError> {
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
    let ms = arrow::compute::cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    Ok(ms.as_primitive::<TimestampMillisecondType>().clone())
}

/// The largest multiple of `step` that is `<= ts` (correct before 1970 too).
pub fn floor_to(ts: i64, step: i64) -> i64 {
    ts.div_euclid(step) * step
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_days_hours_minutes_seconds() {
        assert_eq!(plain_duration(365 * 86_400_000), "365d");
        assert_eq!(plain_duration(5_400_000), "1h 30m");
        assert_eq!(plain_duration(86_400_000 + 1_500), "1d 1s 500ms");
        assert_eq!(plain_duration(0), "0s");
    }

    const MIN: i64 = 60_000;

    #[test]
    fn tumble_panes_are_windows() {
        let w = WindowSpec::Tumble { size: 10 * MIN };
        assert_eq!(w.pane(), Some(10 * MIN));
        assert_eq!(w.last_window_end(25 * MIN), 30 * MIN);
        assert_eq!(w.first_window_end(25 * MIN), 30 * MIN);
        assert_eq!(w.last_window_end(30 * MIN), 40 * MIN);
        // Before the epoch, windows still align on multiples of the size.
        assert_eq!(w.last_window_end(-1), 0);
        assert_eq!(floor_to(-1, 10), -10);
    }

    #[test]
    fn hop_panes_are_the_gcd_and_windows_overlap() {
        // Windows of 10 min every 4 min: panes of gcd(10, 4) = 2 min.
        let w = WindowSpec::Hop {
            size: 10 * MIN,
            slide: 4 * MIN,
        };
        assert_eq!(w.pane(), Some(2 * MIN));
        // ts = 13 min is in [4, 14), [8, 18), [12, 22).
        assert_eq!(w.first_window_end(13 * MIN), 14 * MIN);
        assert_eq!(w.last_window_end(13 * MIN), 22 * MIN);
        // ts = 14 min is in [8, 18), [12, 22).
        assert_eq!(w.first_window_end(14 * MIN), 18 * MIN);
    }

    #[test]
    fn a_session_event_lasts_one_gap() {
        let w = WindowSpec::Session { gap: 5 * MIN };
        assert_eq!(w.pane(), None);
        assert_eq!(w.last_window_end(MIN), 6 * MIN);
    }
}
