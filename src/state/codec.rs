//! Typed changelog values: a pane batch, a session, a kept key's events,
//! each as Arrow IPC frames ([`super::value`]).

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::error::ArrowError;
use datafusion::common::ScalarValue;

use super::error::FormatError;
use super::value;

/// A pane's state batch.
pub fn pane(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    value::encode(&[(&batch.schema(), std::slice::from_ref(batch))])
}

/// One key's events of a stream's kept tables, and the key itself when
/// the record's key holds only its prefix and hash
/// ([`super::key::key_text`]).
pub fn kept_events(events: &RecordBatch, long_key: Option<&str>) -> Result<Vec<u8>, ArrowError> {
    match long_key {
        None => pane(events),
        Some(key) => {
            let schema = Arc::new(Schema::new(vec![Field::new("key", DataType::Utf8, false)]));
            let key = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(arrow::array::StringArray::from(vec![key]))],
            )?;
            value::encode(&[
                (&events.schema(), std::slice::from_ref(events)),
                (&schema, std::slice::from_ref(&key)),
            ])
        }
    }
}

/// The whole key a kept table's record holds, if it holds one (see
/// [`kept_events`]).
pub fn kept_long_key(value: &[u8]) -> Result<Option<String>, FormatError> {
    let frames = value::decode(value)?;
    let Some((_, batches)) = frames.get(1) else {
        return Ok(None);
    };
    batches
        .first()
        .and_then(|b| b.column(0).as_string_opt::<i32>())
        .filter(|keys| keys.len() == 1 && keys.is_valid(0))
        .map(|keys| Some(keys.value(0).to_owned()))
        .ok_or(FormatError::KeptKey)
}

/// A session as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionValue {
    /// Session key.
    pub key: ScalarValue,
    /// Start (ms).
    pub start: i64,
    /// End (ms, exclusive).
    pub end: i64,
    /// State rows.
    pub batches: Vec<RecordBatch>,
}

/// A session: one frame with its key and bounds, one with its state rows.
pub fn session(
    key: &ScalarValue,
    start: i64,
    end: i64,
    state_schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<u8>, ArrowError> {
    let key = key
        .to_array()
        .map_err(|e| ArrowError::ComputeError(e.to_string()))?;
    let meta_schema = Arc::new(Schema::new(vec![
        Field::new("key", key.data_type().clone(), true),
        Field::new("start", DataType::Int64, false),
        Field::new("end", DataType::Int64, false),
    ]));
    let meta = RecordBatch::try_new(
        Arc::clone(&meta_schema),
        vec![
            key,
            Arc::new(Int64Array::from(vec![start])),
            Arc::new(Int64Array::from(vec![end])),
        ],
    )?;
    value::encode(&[
        (&meta_schema, std::slice::from_ref(&meta)),
        (state_schema, batches),
    ])
}

/// Reads a session written by [`session`]; its rows must have `state_schema`.
pub fn decode_session(value: &[u8], state_schema: &SchemaRef) -> Result<SessionValue, FormatError> {
    let (session, rows_schema) = read_session(value)?;
    if &rows_schema != state_schema {
        return Err(FormatError::Schema);
    }
    Ok(session)
}

/// Reads a session written by [`session`], with its rows' schema.
pub fn read_session(value: &[u8]) -> Result<(SessionValue, SchemaRef), FormatError> {
    let mut frames = value::decode(value)?.into_iter();
    let (Some((_, meta)), Some((rows_schema, batches)), None) =
        (frames.next(), frames.next(), frames.next())
    else {
        return Err(FormatError::SessionFrames);
    };
    let meta = meta
        .first()
        .filter(|m| m.num_rows() == 1 && m.num_columns() == 3)
        .ok_or(FormatError::SessionMeta)?;
    let bound = |i: usize| -> Result<i64, FormatError> {
        meta.column(i)
            .as_primitive_opt::<Int64Type>()
            .filter(|a| a.is_valid(0))
            .map(|a| a.value(0))
            .ok_or(FormatError::SessionBound)
    };
    let key = ScalarValue::try_from_array(meta.column(0), 0)
        .map_err(|e| FormatError::SessionKey(e.to_string()))?;
    let session = SessionValue {
        key,
        start: bound(1)?,
        end: bound(2)?,
        batches,
    };
    Ok((session, rows_schema))
}

#[cfg(test)]
mod tests {
    use arrow::array::StringArray;

    use super::*;

    #[test]
    fn sessions_round_trip_with_their_typed_key() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let rows = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec!["c1"])),
                Arc::new(Int64Array::from(vec![3])),
            ],
        )
        .expect("batch");
        for (key, batches) in [
            (ScalarValue::Utf8(Some("c1".into())), vec![rows.clone()]),
            (ScalarValue::Int64(None), vec![]),
        ] {
            let value = session(&key, -5, 10, &schema, &batches).expect("encode");
            let back = decode_session(&value, &schema).expect("decode");
            assert_eq!(
                back,
                SessionValue {
                    key,
                    start: -5,
                    end: 10,
                    batches
                }
            );
        }
        let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let value = session(&ScalarValue::Int64(Some(1)), 0, 1, &schema, &[]).expect("encode");
        assert!(decode_session(&value, &other).is_err());
        assert!(decode_session(&pane(&rows).expect("pane"), &schema).is_err());
    }
}
