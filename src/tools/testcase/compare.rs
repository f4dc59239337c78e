//! Published rows against expected rows: order ignored, floats to a
//! relative tolerance, and a readable account of what differs.

use std::fmt;

use serde_json::{Map, Value};

/// A field whose values differ: its name, the expected and the published
/// value.
pub type FieldDiff = (String, Value, Value);

/// How two sets of rows differ; empty when they match.
#[derive(Debug, Default, PartialEq)]
pub struct Diff {
    /// Expected rows nothing published matched.
    pub missing: Vec<Value>,
    /// Published rows no expected row matched.
    pub unexpected: Vec<Value>,
    /// Expected and published rows with the same key but other values:
    /// the key, then each differing field with its expected and
    /// published value.
    pub changed: Vec<(Value, Vec<FieldDiff>)>,
}

impl Diff {
    /// Whether the rows matched.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.changed.is_empty()
    }
}

/// Matches `actual` rows to `expected` rows one to one, in any order;
/// numbers match within `tolerance` (relative). Unmatched rows that share
/// the values of `key_fields` are reported as changed, field by field.
pub fn compare(
    expected: &[Value],
    actual: &[Value],
    key_fields: &[String],
    tolerance: f64,
) -> Diff {
    let mut unmatched: Vec<&Value> = actual.iter().collect();
    let mut missing = Vec::new();
    for want in expected {
        match unmatched.iter().position(|got| same(want, got, tolerance)) {
            Some(i) => {
                unmatched.swap_remove(i);
            }
            None => missing.push(want),
        }
    }
    let mut diff = Diff::default();
    for want in missing {
        let key = key_of(want, key_fields);
        let partner = unmatched
            .iter()
            .position(|got| !key_fields.is_empty() && key_of(got, key_fields) == key);
        match partner {
            Some(i) => {
                let got = unmatched.swap_remove(i);
                diff.changed
                    .push((key, differing_fields(want, got, tolerance)));
            }
            None => diff.missing.push(want.clone()),
        }
    }
    diff.unexpected = unmatched.into_iter().cloned().collect();
    diff
}

/// The values of `fields` in `row`, as an object.
fn key_of(row: &Value, fields: &[String]) -> Value {
    let mut key = Map::new();
    for field in fields {
        key.insert(
            field.clone(),
            row.get(field).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(key)
}

/// The fields of either row whose values differ (absent reads as null).
fn differing_fields(want: &Value, got: &Value, tolerance: f64) -> Vec<FieldDiff> {
    let (empty_a, empty_b) = (Map::new(), Map::new());
    let a = want.as_object().unwrap_or(&empty_a);
    let b = got.as_object().unwrap_or(&empty_b);
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let x = a.get(name).unwrap_or(&Value::Null);
            let y = b.get(name).unwrap_or(&Value::Null);
            (!same(x, y, tolerance)).then(|| (name.clone(), x.clone(), y.clone()))
        })
        .collect()
}

/// JSON equality: integers exactly, other numbers within `tolerance`
/// relative to the larger magnitude (and to 1 near zero, so that a
/// computed -2.7e-17 matches an expected 0.0).
pub fn same(a: &Value, b: &Value, tolerance: f64) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if !x.is_f64() && !y.is_f64() => x == y,
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => {
                x == y || (x - y).abs() <= tolerance * x.abs().max(y.abs()).max(1.0)
            }
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y, tolerance))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same(v, w, tolerance)))
        }
        _ => a == b,
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.missing.is_empty() {
            writeln!(f, "    missing (expected, not published):")?;
            for row in &self.missing {
                writeln!(f, "      - {row}")?;
            }
        }
        if !self.unexpected.is_empty() {
            writeln!(f, "    unexpected (published, not expected):")?;
            for row in &self.unexpected {
                writeln!(f, "      + {row}")?;
            }
        }
        if !self.changed.is_empty() {
            writeln!(f, "    different values (same key):")?;
            for (key, fields) in &self.changed {
                writeln!(f, "      {key}")?;
                for (name, want, got) in fields {
                    writeln!(f, "        {name}: expected {want}, got {got}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> Vec<String> {
        vec!["job".to_owned(), "k".to_owned()]
    }

    #[test]
    fn order_is_ignored_and_floats_match_within_the_tolerance() {
        let expected = [
            json!({"job": "j", "k": 1, "x": 0.1}),
            json!({"job": "j", "k": 2, "x": 3}),
        ];
        let actual = [
            json!({"job": "j", "k": 2, "x": 3.0}),
            json!({"job": "j", "k": 1, "x": 0.1 + 1e-12}),
        ];
        assert!(compare(&expected, &actual, &key(), 1e-9).is_empty());
        assert!(!compare(&expected, &actual, &key(), 1e-13).is_empty());
        assert!(same(&json!(0.0), &json!(-2.7e-17), 1e-9));
        assert!(!same(&json!(0.0), &json!(1e-6), 1e-9));
        assert!(
            !same(&json!(1_000_000), &json!(1_000_001), 1e-3),
            "integers match exactly"
        );
        assert!(same(&json!(2), &json!(2.0), 1e-9));
    }

    #[test]
    fn rows_are_matched_one_to_one() {
        let row = json!({"job": "j", "k": 1});
        let diff = compare(
            std::slice::from_ref(&row),
            &[row.clone(), row.clone()],
            &key(),
            1e-9,
        );
        assert_eq!(diff.unexpected, vec![row]);
        assert!(diff.missing.is_empty() && diff.changed.is_empty());
    }

    #[test]
    fn same_key_rows_show_the_fields_that_differ() {
        let expected = [
            json!({"job": "j", "k": 1, "x": 1, "y": "a"}),
            json!({"job": "j", "k": 9, "x": 1}),
        ];
        let actual = [
            json!({"job": "j", "k": 1, "x": 2, "y": "a", "z": true}),
            json!({"job": "j", "k": 5, "x": 1}),
        ];
        let diff = compare(&expected, &actual, &key(), 1e-9);
        assert_eq!(
            diff.changed,
            vec![(
                json!({"job": "j", "k": 1}),
                vec![
                    ("x".to_owned(), json!(1), json!(2)),
                    ("z".to_owned(), Value::Null, json!(true))
                ]
            )]
        );
        assert_eq!(diff.missing, vec![json!({"job": "j", "k": 9, "x": 1})]);
        assert_eq!(diff.unexpected, vec![json!({"job": "j", "k": 5, "x": 1})]);
        let text = diff.to_string();
        assert!(text.contains("x: expected 1, got 2"), "{text}");
    }
}
