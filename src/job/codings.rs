//! SQL functions for values that CRMs code in many ways.
//!
//! `gender_code(gender)` reads a gender as CRM exports write it (any case,
//! spaces around ignored) and returns one code:
//!
//! | code | written as |
//! |---|---|
//! | `f` | `f`, `female`, `w`, `woman` |
//! | `m` | `m`, `male`, `man` |
//! | `x` | `x`, `d`, `diverse`, `other`, `non-binary`, `nonbinary` |
//! | `unknown` | NULL or blank |
//! | `uncoded` | anything else, so that a coding cxpulse does not know is counted, not silently left out |

use std::sync::Arc;

use arrow::array::{Array, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{ScalarValue, cast::as_string_array, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};

/// The codes of [`gender_code`], in the order of the module's table.
const GENDER_CODES: &[(&str, &[&str])] = &[
    ("f", &["f", "female", "w", "woman"]),
    ("m", &["m", "male", "man"]),
    (
        "x",
        &["x", "d", "diverse", "other", "non-binary", "nonbinary"],
    ),
];

/// The code of one written gender (see the module's table).
pub fn gender_code(written: Option<&str>) -> &'static str {
    let Some(written) = written.map(str::trim).filter(|w| !w.is_empty()) else {
        return "unknown";
    };
    GENDER_CODES
        .iter()
        .find(|(_, spellings)| spellings.iter().any(|s| s.eq_ignore_ascii_case(written)))
        .map_or("uncoded", |(code, _)| code)
}

/// The `gender_code(text)` SQL function.
pub fn gender_code_udf() -> ScalarUDF {
    create_udf(
        "gender_code",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| match args {
            [ColumnarValue::Scalar(ScalarValue::Utf8(written))] => Ok(ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(gender_code(written.as_deref()).to_owned())),
            )),
            [ColumnarValue::Array(written)] => {
                let written = as_string_array(written)?;
                let codes: StringArray = written.iter().map(|w| Some(gender_code(w))).collect();
                Ok(ColumnarValue::Array(Arc::new(codes) as Arc<dyn Array>))
            }
            _ => exec_err!("gender_code takes one text argument"),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_common_coding_has_its_code_in_any_case() {
        for (written, code) in [
            ("f", "f"),
            ("F", "f"),
            (" Female ", "f"),
            ("W", "f"),
            ("woman", "f"),
            ("M", "m"),
            ("MALE", "m"),
            ("Man", "m"),
            ("x", "x"),
            ("D", "x"),
            ("Non-Binary", "x"),
            ("", "unknown"),
            ("  ", "unknown"),
            ("femme", "uncoded"),
            ("1", "uncoded"),
        ] {
            assert_eq!(gender_code(Some(written)), code, "{written:?}");
        }
        assert_eq!(gender_code(None), "unknown");
    }
}
