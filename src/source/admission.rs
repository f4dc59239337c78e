//! What a record must be before it is decoded, and an event before it
//! counts: no larger than `engine.max_record_bytes` (a larger one is never
//! decoded), and, for a stream, its event time no further ahead of the
//! wall clock than the source allows (`max_future_ms`), so that one device
//! with a wrong clock cannot move a watermark to year 9999.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::decode::{Cell, RejectKind, Rejection};
use crate::schema::Source;
use crate::sink::format_timestamp_millis;

/// The checks made on consumed records before and after decoding.
#[derive(Debug, Clone)]
pub struct Admission {
    max_record_bytes: usize,
    /// Per stream with a future check: its event-time field's position and
    /// how far ahead of the wall clock an event may be (ms).
    future: BTreeMap<Source, (usize, i64)>,
}

impl Admission {
    /// The checks `config` declares: `engine.max_record_bytes`, and each
    /// stream's `max_future_ms` (else `engine.max_future_ms`; 0 turns the
    /// check off).
    pub fn new(config: &Config) -> Self {
        let future = config
            .declared
            .streams()
            .filter_map(|source| {
                let limit = source
                    .max_future_ms()
                    .unwrap_or(config.engine.max_future_ms);
                (limit > 0).then(|| (source, (source.time_or_key_index(), limit)))
            })
            .collect();
        Self {
            max_record_bytes: config.max_record_bytes(),
            future,
        }
    }

    /// The same checks without the wall clock: offline runs replay files
    /// whose times are fixed, on a clock of their own.
    pub fn without_wall_clock(mut self) -> Self {
        self.future.clear();
        self
    }

    /// The largest record decoded.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Refuses a decoded event of `source` whose time is too far ahead of
    /// `now_ms` (the wall clock).
    pub fn check_time(
        &self,
        source: Source,
        cells: &[Cell<'_>],
        now_ms: i64,
    ) -> Result<(), Rejection> {
        let Some(&(index, limit)) = self.future.get(&source) else {
            return Ok(());
        };
        let Some(Cell::Ts(ts)) = cells.get(index) else {
            return Ok(());
        };
        if *ts <= now_ms.saturating_add(limit) {
            return Ok(());
        }
        let name = source.time_or_key();
        Err(Rejection::new(
            RejectKind::Future,
            format!(
                "field `{name}` is {}, {} ahead of the wall clock ({}); events more than {} ahead \
                 are refused (max_future_ms) and never move a watermark",
                format_timestamp_millis(*ts),
                plain_ahead(ts - now_ms),
                format_timestamp_millis(now_ms),
                plain_ahead(limit)
            ),
        ))
    }
}

/// A duration in the largest whole unit that fits: `2914y`, `3d`, `5h`.
fn plain_ahead(ms: i64) -> String {
    const UNITS: [(i64, &str); 5] = [
        (365 * 86_400_000, "y"),
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "min"),
        (1_000, "s"),
    ];
    UNITS.iter().find(|(unit, _)| ms >= *unit).map_or_else(
        || format!("{ms}ms"),
        |(unit, name)| format!("{}{name}", ms / unit),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::parse_record;

    #[test]
    fn an_event_too_far_ahead_of_the_clock_is_refused_and_zero_turns_the_check_off() {
        let mut config = Config::embedded_default();
        let admission = Admission::new(&config);
        let transactions = crate::config::default_source("transactions");
        let now = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let event = |ts: &str| {
            let json = format!(
                r#"{{"event_id":"e","customer_id":"c","ts":"{ts}","amount":1,"category":"x"}}"#
            );
            crate::lookup::owned_cells(parse_record(transactions, json.as_bytes()).expect("valid"))
        };
        assert_eq!(
            admission.check_time(transactions, &event("2026-01-01T23:59:59Z"), now),
            Ok(())
        );
        assert_eq!(
            admission.check_time(transactions, &event("2026-01-02T00:00:00Z"), now),
            Ok(()),
            "exactly one day ahead is allowed"
        );
        let refused = admission
            .check_time(transactions, &event("9999-12-31T00:00:00Z"), now)
            .expect_err("year 9999");
        assert_eq!(refused.kind, RejectKind::Future);
        assert_eq!(
            refused.reason,
            "field `ts` is 9999-12-31T00:00:00.000Z, 7979y ahead of the wall clock \
             (2026-01-01T00:00:00.000Z); events more than 1d ahead are refused \
             (max_future_ms) and never move a watermark"
        );
        config.engine.max_future_ms = 0;
        let off = Admission::new(&config);
        assert_eq!(
            off.check_time(transactions, &event("9999-12-31T00:00:00Z"), now),
            Ok(())
        );
        assert_eq!(
            Admission::new(&Config::embedded_default())
                .without_wall_clock()
                .check_time(transactions, &event("9999-12-31T00:00:00Z"), now),
            Ok(())
        );
    }
}
