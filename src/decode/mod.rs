//! JSON payload → validated cells → Arrow batches.
//!
//! [`parse_record`] validates one Kafka payload against its source's
//! [`FieldSpec`](crate::schema::FieldSpec)s and either returns one [`Cell`]
//! per field or a [`Rejection`] naming the field and the problem.
//! [`BatchBuilder`] appends validated records to Arrow column builders.

mod batch;
mod json_scalar;
mod rejection;
mod timestamp;

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

pub use batch::BatchBuilder;
pub use json_scalar::JsonScalar;
pub use rejection::{RejectKind, Rejection, quote};
pub use timestamp::{MAX_EPOCH_MILLIS, parse_rfc3339_millis};

use crate::schema::{FieldSpec, FieldType, Layout, Slot, Source};

/// One validated field value, ready to append to an Arrow column.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// Absent or `null` (only for optional fields).
    Null,
    /// Text, identifier or enum value.
    Str(Cow<'a, str>),
    /// Integer.
    Int(i64),
    /// Floating-point number.
    Float(f64),
    /// Event time in epoch milliseconds.
    Ts(i64),
    /// `true` or `false`.
    Bool(bool),
    /// A decimal, as an integer count of its column's smallest unit.
    Decimal(i128),
    /// The items of a list.
    List(Vec<Cell<'a>>),
}

/// Parses and validates one payload of `source`; returns one cell per
/// field, in the order of `source.fields()`.
pub fn parse_record(source: Source, payload: &[u8]) -> Result<Vec<Cell<'_>>, Rejection> {
    parse_fields(source.fields(), source.layout(), source.one_of(), payload)
}

/// Parses and validates one payload against `specs`, found where `layout`
/// says, with at least one field of each group of `one_of` set.
fn parse_fields<'a>(
    specs: &'a [FieldSpec],
    layout: &Layout,
    one_of: &[Vec<String>],
    payload: &'a [u8],
) -> Result<Vec<Cell<'a>>, Rejection> {
    let mut raw: Vec<JsonScalar<'_>> = vec![JsonScalar::Null; specs.len()];
    let mut de = serde_json::Deserializer::from_slice(payload);
    RecordSeed {
        layout,
        values: &mut raw,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Rejection::new(RejectKind::NotObject, e.to_string()),
        _ => Rejection::new(
            RejectKind::InvalidJson,
            format!("payload is not valid JSON: {e}"),
        ),
    })?;

    let cells = specs
        .iter()
        .zip(raw)
        .map(|(spec, value)| validate(spec, value))
        .collect::<Result<Vec<_>, _>>()?;

    for group in one_of {
        let present = specs
            .iter()
            .zip(&cells)
            .any(|(spec, cell)| group.contains(&spec.name) && *cell != Cell::Null);
        if !present {
            return Err(Rejection::new(
                RejectKind::MissingField,
                format!("at least one of the fields {} is required", quoted(group)),
            ));
        }
    }
    Ok(cells)
}

/// A decimal written as `[-]digits[.digits]`, as a count of units of
/// `10^-scale`; `None` when it is not one, has more than `scale` digits
/// after the point or more than `precision` in all.
fn parse_decimal(text: &str, precision: u8, scale: i8) -> Option<i128> {
    let scale = usize::try_from(scale).ok()?;
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let fraction = fraction.trim_end_matches('0');
    let whole = whole.trim_start_matches('0');
    if fraction.len() > scale || whole.len() + scale > usize::from(precision) {
        return None;
    }
    let units: i128 = format!("{whole}{fraction:0<scale$}")
        .parse()
        .ok()
        .or(Some(0).filter(|_| whole.is_empty() && fraction.is_empty()))?;
    Some(if negative { -units } else { units })
}

/// A decimal count of `10^-scale` units as text (`-500`, 2 → `-5.00`).
fn decimal_text(units: i128, scale: i8) -> String {
    let scale = usize::try_from(scale).unwrap_or(0);
    let digits = format!("{:0>width$}", units.unsigned_abs(), width = scale + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale);
    let sign = if units < 0 { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    }
}

/// `text` trimmed and lower-cased, borrowed when it already is.
fn lower_trimmed(text: Cow<'_, str>) -> Cow<'_, str> {
    let trimmed = text.trim();
    if trimmed.len() == text.len() && !trimmed.chars().any(char::is_uppercase) {
        text
    } else {
        Cow::Owned(trimmed.to_lowercase())
    }
}

fn quoted(names: &[impl AsRef<str>]) -> String {
    names
        .iter()
        .map(|n| format!("`{}`", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks one JSON value against its field spec.
fn validate<'a>(spec: &'a FieldSpec, value: JsonScalar<'a>) -> Result<Cell<'a>, Rejection> {
    check(&spec.name, &spec.ty, spec.required, value)
}

/// Checks one JSON value against the type of the field `name`.
fn check<'a>(
    name: &str,
    ty: &'a FieldType,
    required: bool,
    value: JsonScalar<'a>,
) -> Result<Cell<'a>, Rejection> {
    if value == JsonScalar::Null {
        return if required {
            Err(Rejection::new(
                RejectKind::MissingField,
                format!("required field `{name}` is missing or null"),
            ))
        } else {
            Ok(Cell::Null)
        };
    }
    let wrong_type = |expected: &str, got: &JsonScalar<'_>| {
        Rejection::new(
            RejectKind::WrongType,
            format!("field `{name}` must be {expected}, got {}", got.type_name()),
        )
    };
    match ty {
        FieldType::Id => match value {
            JsonScalar::Str(s) if s.trim().is_empty() => Err(Rejection::new(
                RejectKind::OutOfRange,
                format!("field `{name}` must not be empty"),
            )),
            JsonScalar::Str(s) => Ok(Cell::Str(s)),
            JsonScalar::Int(i) => Ok(Cell::Str(Cow::Owned(i.to_string()))),
            other => Err(wrong_type("a string or an integer", &other)),
        },
        FieldType::Text => match value {
            JsonScalar::Str(s) => Ok(Cell::Str(s)),
            other => Err(wrong_type("a string", &other)),
        },
        FieldType::List(item) => match value {
            JsonScalar::Array(items) => items
                .into_iter()
                .map(|v| check(name, item, false, v))
                .collect::<Result<Vec<_>, _>>()
                .map(Cell::List),
            other => Err(wrong_type("an array", &other)),
        },
        FieldType::Bool => match value {
            JsonScalar::Bool(b) => Ok(Cell::Bool(b)),
            other => Err(wrong_type("true or false", &other)),
        },
        &FieldType::Decimal {
            precision,
            scale,
            min,
            max,
        } => {
            let text = match value {
                JsonScalar::Int(i) => i.to_string(),
                JsonScalar::Float(f) if f.is_finite() => f.to_string(),
                JsonScalar::Str(s) => s.trim().to_owned(),
                other => return Err(wrong_type("a number or a decimal string", &other)),
            };
            let units = parse_decimal(&text, precision, scale).ok_or_else(|| {
                Rejection::new(
                    RejectKind::OutOfRange,
                    format!(
                        "field `{name}` is {}, not a decimal of at most {precision} \
                         digits with at most {scale} after the point",
                        quote(&text)
                    ),
                )
            })?;
            let below = min.filter(|m| units < *m);
            let above = max.filter(|m| units > *m);
            match (below, above) {
                (None, None) => Ok(Cell::Decimal(units)),
                _ => Err(Rejection::new(
                    RejectKind::OutOfRange,
                    match (min, max) {
                        (Some(lo), Some(hi)) => format!(
                            "field `{name}` is {}, must be between {} and {}",
                            decimal_text(units, scale),
                            decimal_text(lo, scale),
                            decimal_text(hi, scale)
                        ),
                        (Some(lo), None) => format!(
                            "field `{name}` is {}, must be at least {}",
                            decimal_text(units, scale),
                            decimal_text(lo, scale)
                        ),
                        _ => format!(
                            "field `{name}` is {}, must be at most {}",
                            decimal_text(units, scale),
                            decimal_text(max.unwrap_or_default(), scale)
                        ),
                    },
                )),
            }
        }
        FieldType::Matching(pattern) => match value {
            JsonScalar::Str(s) if pattern.0.is_match(&s) => Ok(Cell::Str(s)),
            JsonScalar::Str(s) => Err(Rejection::new(
                RejectKind::OutOfRange,
                format!(
                    "field `{name}` is {}, which does not match {}",
                    quote(&s),
                    pattern.0.as_str()
                ),
            )),
            other => Err(wrong_type("a string", &other)),
        },
        FieldType::Coded => match value {
            JsonScalar::Str(s) => Ok(Cell::Str(lower_trimmed(s))),
            other => Err(wrong_type("a string", &other)),
        },
        FieldType::Enum(allowed) => match value {
            JsonScalar::Str(s) => match allowed.iter().find(|a| a.eq_ignore_ascii_case(s.trim())) {
                Some(canonical) => Ok(Cell::Str(Cow::Borrowed(canonical))),
                None => Err(Rejection::new(
                    RejectKind::OutOfRange,
                    format!(
                        "field `{name}` is {}, expected one of {} (any case)",
                        quote(&s),
                        quoted(allowed)
                    ),
                )),
            },
            other => Err(wrong_type("a string", &other)),
        },
        FieldType::Timestamp => match value {
            JsonScalar::Str(s) => parse_rfc3339_millis(&s).map(Cell::Ts).ok_or_else(|| {
                Rejection::new(
                    RejectKind::BadTimestamp,
                    format!("field `{name}` is {}, not an RFC 3339 timestamp", quote(&s)),
                )
            }),
            JsonScalar::Int(ms) if (0..=timestamp::MAX_EPOCH_MILLIS).contains(&ms) => {
                Ok(Cell::Ts(ms))
            }
            JsonScalar::Int(ms) => Err(Rejection::new(
                RejectKind::BadTimestamp,
                format!(
                    "field `{name}` is {ms}, outside the epoch-millisecond range of years 1970-9999"
                ),
            )),
            other => Err(wrong_type(
                "an RFC 3339 string or integer epoch milliseconds",
                &other,
            )),
        },
        &FieldType::Float { min, max } => {
            let v = match value {
                JsonScalar::Int(i) => i as f64,
                JsonScalar::Float(f) => f,
                other => return Err(wrong_type("a number", &other)),
            };
            if v >= min && v <= max && v.is_finite() {
                Ok(Cell::Float(v))
            } else if max == f64::INFINITY {
                Err(Rejection::new(
                    RejectKind::OutOfRange,
                    format!("field `{name}` is {v}, must be at least {min}"),
                ))
            } else {
                Err(Rejection::new(
                    RejectKind::OutOfRange,
                    format!("field `{name}` is {v}, must be between {min} and {max}"),
                ))
            }
        }
        &FieldType::Int { min, max } => {
            let v = match value {
                JsonScalar::Int(i) => i,
                JsonScalar::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
                JsonScalar::Float(f) => {
                    return Err(Rejection::new(
                        RejectKind::WrongType,
                        format!("field `{name}` must be an integer, got {f}"),
                    ));
                }
                other => return Err(wrong_type("an integer", &other)),
            };
            if (min..=max).contains(&v) {
                Ok(Cell::Int(v))
            } else if max == i64::MAX {
                Err(Rejection::new(
                    RejectKind::OutOfRange,
                    format!("field `{name}` is {v}, must be at least {min}"),
                ))
            } else {
                Err(Rejection::new(
                    RejectKind::OutOfRange,
                    format!("field `{name}` is {v}, must be between {min} and {max}"),
                ))
            }
        }
    }
}

/// Deserializes a JSON object, keeping only the values its layout names.
struct RecordSeed<'s, 'v, 'de> {
    layout: &'s Layout,
    values: &'v mut [JsonScalar<'de>],
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        fill(self.layout, self.values, map)
    }
}

/// Stores the values of `map` that `layout` names, descending into nested
/// objects.
fn fill<'de, A: MapAccess<'de>>(
    layout: &Layout,
    values: &mut [JsonScalar<'de>],
    mut map: A,
) -> Result<(), A::Error> {
    let mut hint = 0;
    while let Some(slot) = map.next_key_seed(KeySeed {
        layout,
        hint: &mut hint,
    })? {
        match slot {
            Some(Slot::Column(i)) => values[*i] = map.next_value()?,
            Some(Slot::Object(inner)) => map.next_value_seed(Nested {
                layout: inner,
                values: &mut *values,
            })?,
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(())
}

/// A nested object holding columns; any other value there leaves them
/// absent (a required one is then reported missing).
struct Nested<'s, 'v, 'de> {
    layout: &'s Layout,
    values: &'v mut [JsonScalar<'de>],
}

impl<'de> DeserializeSeed<'de> for Nested<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Nested<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        fill(self.layout, self.values, map)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Maps an object key to what the layout keeps there (`None` for keys it
/// does not name), looking first after the key found last (`hint`).
struct KeySeed<'s, 'h> {
    layout: &'s Layout,
    hint: &'h mut usize,
}

impl<'s, 'de> DeserializeSeed<'de> for KeySeed<'s, '_> {
    type Value = Option<&'s Slot>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'s, 'de> Visitor<'de> for KeySeed<'s, '_> {
    type Value = Option<&'s Slot>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.layout.find_from(key, *self.hint).map(|(i, slot)| {
            *self.hint = i + 1;
            slot
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(kind: Source, payload: &str) -> Rejection {
        parse_record(kind, payload.as_bytes()).expect_err("record should be rejected")
    }

    #[test]
    fn valid_transaction_yields_one_cell_per_field() {
        let cells = parse_record(
            crate::config::default_source("transactions"),
            br#"{"event_id":"e1","customer_id":42,"ts":"2026-01-02T03:04:05.678Z","amount":12.5,"category":"books","items":2.0,"extra":{"x":[1,2]}}"#,
        )
        .expect("valid");
        assert_eq!(
            cells,
            vec![
                Cell::Str("e1".into()),
                Cell::Str("42".into()),
                Cell::Ts(1_767_323_045_678),
                Cell::Float(12.5),
                Cell::Str("books".into()),
                Cell::Null,
                Cell::Null,
                Cell::Int(2),
                Cell::Null,
            ]
        );
    }

    #[test]
    fn epoch_millis_and_offsets_are_accepted() {
        let a = parse_record(
            crate::config::default_source("feedback"),
            br#"{"event_id":"e","customer_id":"c","ts":1767323045678,"nps":9}"#,
        )
        .expect("valid");
        let b = parse_record(
            crate::config::default_source("feedback"),
            br#"{"event_id":"e","customer_id":"c","ts":"2026-01-02T05:04:05.678+02:00","nps":9}"#,
        )
        .expect("valid");
        assert_eq!(a[2], Cell::Ts(1_767_323_045_678));
        assert_eq!(a, b);
    }

    fn spec(ty: FieldType) -> FieldSpec {
        FieldSpec {
            name: "x".to_owned(),
            ty,
            required: true,
        }
    }

    #[test]
    fn columns_are_found_at_their_paths_in_nested_objects() {
        let specs = [
            spec(FieldType::Id),
            FieldSpec {
                name: "os".to_owned(),
                ty: FieldType::Text,
                required: false,
            },
            FieldSpec {
                name: "screen".to_owned(),
                ty: FieldType::Int {
                    min: 0,
                    max: 10_000,
                },
                required: false,
            },
        ];
        use crate::schema::path_keys;
        let layout = Layout::new(&[
            path_keys("x", None),
            path_keys("os", Some("$.device.os")),
            path_keys("screen", Some("$.device.screen.width")),
        ]);
        let parse = |payload: &'static str| parse_fields(&specs, &layout, &[], payload.as_bytes());
        assert_eq!(
            parse(
                r#"{"x":"a","device":{"os":"ios","model":"x","screen":{"width":390}},"os":"no"}"#
            ),
            Ok(vec![
                Cell::Str("a".into()),
                Cell::Str("ios".into()),
                Cell::Int(390)
            ])
        );
        assert_eq!(
            parse(r#"{"x":"b","device":"unknown"}"#),
            Ok(vec![Cell::Str("b".into()), Cell::Null, Cell::Null]),
            "a non-object where an object was expected leaves its columns absent"
        );
        let wrong = parse(r#"{"x":"c","device":{"os":7}}"#).expect_err("os is a number");
        assert!(wrong.reason.contains("`os` must be a string"), "{wrong}");
    }

    #[test]
    fn a_list_checks_every_item() {
        let tags = spec(FieldType::List(Box::new(FieldType::Int { min: 0, max: 9 })));
        let array = |items: Vec<JsonScalar<'static>>| JsonScalar::Array(items);
        assert_eq!(
            validate(&tags, array(vec![JsonScalar::Int(1), JsonScalar::Int(2)])),
            Ok(Cell::List(vec![Cell::Int(1), Cell::Int(2)]))
        );
        assert_eq!(validate(&tags, array(vec![])), Ok(Cell::List(vec![])));
        let bad = validate(&tags, array(vec![JsonScalar::Int(1), JsonScalar::Int(12)]))
            .expect_err("12 is out of range");
        assert!(bad.reason.contains("`x` is 12"), "{bad}");
        let not_list = validate(&tags, JsonScalar::Int(1)).expect_err("not an array");
        assert_eq!(not_list.kind, RejectKind::WrongType);
    }

    #[test]
    fn decimals_are_exact_or_refused() {
        for (text, precision, scale, want) in [
            ("12.34", 4, 2, Some(1234)),
            ("-0.5", 4, 2, Some(-50)),
            ("7", 4, 2, Some(700)),
            ("12.340", 4, 2, Some(1234)),
            ("0", 1, 0, Some(0)),
            ("100.0", 4, 2, None),
            ("1.234", 4, 2, None),
            ("1e3", 6, 2, None),
            (".5", 4, 2, None),
            ("abc", 4, 2, None),
        ] {
            assert_eq!(parse_decimal(text, precision, scale), want, "{text}");
        }
    }

    #[test]
    fn bools_decimals_patterns_and_float_ranges_are_checked() {
        let decimal = spec(FieldType::Decimal {
            precision: 6,
            scale: 2,
            min: None,
            max: None,
        });
        assert_eq!(
            validate(&decimal, JsonScalar::Float(19.99)),
            Ok(Cell::Decimal(1999))
        );
        assert_eq!(
            validate(&decimal, JsonScalar::Str("1234.5".into())),
            Ok(Cell::Decimal(123_450))
        );
        let refused = validate(&decimal, JsonScalar::Float(0.125)).expect_err("3 decimals");
        assert_eq!(refused.kind, RejectKind::OutOfRange);
        assert_eq!(
            validate(&spec(FieldType::Bool), JsonScalar::Bool(true)),
            Ok(Cell::Bool(true))
        );
        let not_bool = validate(&spec(FieldType::Bool), JsonScalar::Int(1)).expect_err("1");
        assert_eq!(not_bool.kind, RejectKind::WrongType);
        let sku = spec(FieldType::Matching(crate::schema::Pattern(
            regex::Regex::new("^[A-Z]{3}-[0-9]+$").expect("regex"),
        )));
        assert_eq!(
            validate(&sku, JsonScalar::Str("ABC-12".into())),
            Ok(Cell::Str("ABC-12".into()))
        );
        let bad_sku = validate(&sku, JsonScalar::Str("abc".into())).expect_err("no match");
        assert!(bad_sku.reason.contains("does not match"), "{bad_sku}");
        let share = spec(FieldType::Float { min: 0.0, max: 1.0 });
        assert_eq!(
            validate(&share, JsonScalar::Float(0.5)),
            Ok(Cell::Float(0.5))
        );
        let over = validate(&share, JsonScalar::Float(1.5)).expect_err("over");
        assert!(over.reason.contains("between 0 and 1"), "{over}");
    }

    #[test]
    fn a_complaint_status_and_severity_are_read_in_any_case() {
        let cells = parse_record(
            crate::config::default_source("complaints"),
            br#"{"event_id":"e","customer_id":"c","ts":1,"complaint_id":"k","status":" Escalated","severity":"HIGH ","category":"Billing"}"#,
        )
        .expect("valid");
        // status, category (free text, as written), severity.
        assert_eq!(
            (&cells[4], &cells[5], &cells[6]),
            (
                &Cell::Str("escalated".into()),
                &Cell::Str("Billing".into()),
                &Cell::Str("high".into())
            )
        );
    }

    #[test]
    fn every_bad_input_kind_names_its_field() {
        use RejectKind::*;
        let t = crate::config::default_source("transactions");
        let f = crate::config::default_source("feedback");
        let c = crate::config::default_source("complaints");
        let cases: &[(Source, &str, RejectKind, &str)] = &[
            (t, "not json", InvalidJson, "not valid JSON"),
            (t, r#"{"event_id":"e""#, InvalidJson, "not valid JSON"),
            (t, r#"[1,2]"#, NotObject, "JSON object"),
            (t, r#""text""#, NotObject, "JSON object"),
            (
                t,
                r#"{"customer_id":"c","ts":1,"amount":1,"category":"x"}"#,
                MissingField,
                "`event_id`",
            ),
            (
                t,
                r#"{"event_id":"e","customer_id":"c","ts":1,"amount":null,"category":"x"}"#,
                MissingField,
                "`amount`",
            ),
            (
                t,
                r#"{"event_id":"e","customer_id":"c","ts":1,"amount":"12","category":"x"}"#,
                WrongType,
                "field `amount` must be a number, got a string",
            ),
            (
                t,
                r#"{"event_id":"e","customer_id":"c","ts":1,"amount":-1,"category":"x"}"#,
                OutOfRange,
                "field `amount` is -1",
            ),
            (
                t,
                r#"{"event_id":"e","customer_id":"c","ts":"yesterday","amount":1,"category":"x"}"#,
                BadTimestamp,
                "field `ts`",
            ),
            (
                t,
                r#"{"event_id":"e","customer_id":"c","ts":true,"amount":1,"category":"x"}"#,
                WrongType,
                "field `ts`",
            ),
            (
                t,
                r#"{"event_id":"","customer_id":"c","ts":1,"amount":1,"category":"x"}"#,
                OutOfRange,
                "`event_id` must not be empty",
            ),
            (
                f,
                r#"{"event_id":"e","customer_id":"c","ts":1,"rating":6}"#,
                OutOfRange,
                "field `rating` is 6, must be between 1 and 5",
            ),
            (
                f,
                r#"{"event_id":"e","customer_id":"c","ts":1,"nps":11}"#,
                OutOfRange,
                "`nps` is 11",
            ),
            (
                f,
                r#"{"event_id":"e","customer_id":"c","ts":1,"effort":0}"#,
                OutOfRange,
                "`effort` is 0",
            ),
            (
                f,
                r#"{"event_id":"e","customer_id":"c","ts":1,"rating":4.5}"#,
                WrongType,
                "`rating` must be an integer",
            ),
            (
                f,
                r#"{"event_id":"e","customer_id":"c","ts":1,"comment":"hi"}"#,
                MissingField,
                "`rating`, `nps`, `effort`",
            ),
            (
                c,
                r#"{"event_id":"e","customer_id":"c","ts":1,"complaint_id":"k","status":"closed"}"#,
                OutOfRange,
                "field `status` is \"closed\"",
            ),
        ];
        for (kind, payload, want_kind, want_text) in cases {
            let r = reject(*kind, payload);
            assert_eq!(r.kind, *want_kind, "{payload}: {r}");
            assert!(r.reason.contains(want_text), "{payload}: {r}");
        }
    }
}
