//! A SQL function for fault tests only: `cxpulse_test_panic(text)` returns
//! its argument, and panics on the value `panic`. It exists only in
//! processes started with `CXPULSE_TEST_FUNCTIONS=1`, so that the tests can
//! show that a job that panics is stopped while the engine and the other
//! jobs go on.

use std::sync::Arc;

use arrow::array::Array;
use arrow::datatypes::DataType;
use datafusion::common::{ScalarValue, cast::as_string_array, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};

/// The environment variable that adds the test functions.
pub const TEST_FUNCTIONS_ENV: &str = "CXPULSE_TEST_FUNCTIONS";

/// Whether this process has the test functions.
pub fn enabled() -> bool {
    std::env::var_os(TEST_FUNCTIONS_ENV).is_some_and(|v| v == "1")
}

fn check(value: Option<&str>) {
    if value == Some("panic") {
        panic!("cxpulse_test_panic met the value `panic`");
    }
}

/// The `cxpulse_test_panic(text)` SQL function.
pub fn panic_udf() -> ScalarUDF {
    create_udf(
        "cxpulse_test_panic",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| match args {
            [ColumnarValue::Scalar(ScalarValue::Utf8(value))] => {
                check(value.as_deref());
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(value.clone())))
            }
            [ColumnarValue::Array(values)] => {
                as_string_array(values)?.iter().for_each(check);
                Ok(ColumnarValue::Array(Arc::clone(values) as Arc<dyn Array>))
            }
            _ => exec_err!("cxpulse_test_panic takes one text argument"),
        }),
    )
}
