//! Changelog record values: Arrow IPC streams ("frames"), split into parts
//! that fit in a Kafka message.
//!
//! A value is the xxHash64 of the rest (little-endian `u64`), then a
//! sequence of frames, each an IPC stream (its schema and its batches)
//! preceded by its length as a little-endian `u32`. The checksum is checked
//! before any IPC is read: the IPC reader trusts the offsets it reads and
//! would panic on a corrupt buffer. A value is stored as one or more parts,
//! each `CXS1`, the number of parts as a little-endian `u32`, then a slice
//! of the value.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use super::error::FormatError;

/// Starts every stored part.
const MAGIC: &[u8; 4] = b"CXS1";
/// Magic plus the part count.
const HEADER: usize = MAGIC.len() + 4;

/// One frame: a schema and its batches.
pub type Frame = (SchemaRef, Vec<RecordBatch>);

/// Encodes frames into one value.
pub fn encode(frames: &[(&SchemaRef, &[RecordBatch])]) -> Result<Vec<u8>, ArrowError> {
    let mut value = vec![0; 8];
    for (schema, batches) in frames {
        let mut stream = Vec::new();
        {
            let mut writer = StreamWriter::try_new(&mut stream, schema)?;
            for batch in *batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        let len = u32::try_from(stream.len())
            .map_err(|_| ArrowError::InvalidArgumentError("a state frame over 4 GiB".into()))?;
        value.extend_from_slice(&len.to_le_bytes());
        value.extend_from_slice(&stream);
    }
    let checksum = twox_hash::XxHash64::oneshot(0, &value[8..]);
    value[..8].copy_from_slice(&checksum.to_le_bytes());
    Ok(value)
}

/// Decodes a value into its frames.
pub fn decode(value: &[u8]) -> Result<Vec<Frame>, FormatError> {
    let (checksum, mut rest) = value
        .split_first_chunk::<8>()
        .ok_or(FormatError::NoChecksum)?;
    if u64::from_le_bytes(*checksum) != twox_hash::XxHash64::oneshot(0, rest) {
        return Err(FormatError::Checksum);
    }
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let (len, body) = rest
            .split_first_chunk::<4>()
            .ok_or(FormatError::FrameLength)?;
        let len = u32::from_le_bytes(*len) as usize;
        if body.len() < len {
            return Err(FormatError::FrameCut {
                len,
                left: body.len(),
            });
        }
        let (stream, tail) = body.split_at(len);
        let reader = StreamReader::try_new(Cursor::new(stream), None)
            .map_err(|e| FormatError::NotIpc(e.to_string()))?;
        let schema = reader.schema();
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| FormatError::Batch(e.to_string()))?;
        frames.push((schema, batches));
        rest = tail;
    }
    Ok(frames)
}

/// Splits a value into stored parts of at most `max_part` bytes each.
pub fn split(value: &[u8], max_part: usize) -> Vec<Vec<u8>> {
    let chunk = max_part.saturating_sub(HEADER).max(1);
    let chunks: Vec<&[u8]> = if value.is_empty() {
        vec![&[]]
    } else {
        value.chunks(chunk).collect()
    };
    let count = chunks.len() as u32;
    chunks
        .into_iter()
        .map(|c| {
            let mut part = Vec::with_capacity(HEADER + c.len());
            part.extend_from_slice(MAGIC);
            part.extend_from_slice(&count.to_le_bytes());
            part.extend_from_slice(c);
            part
        })
        .collect()
}

/// How many parts the value of a stored part has.
pub fn part_count(part: &[u8]) -> Result<u32, FormatError> {
    let (magic, rest) = part.split_first_chunk::<4>().ok_or(FormatError::NoHeader)?;
    if magic != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let count = rest.first_chunk::<4>().ok_or(FormatError::NoHeader)?;
    match u32::from_le_bytes(*count) {
        0 => Err(FormatError::NoParts),
        n => Ok(n),
    }
}

/// Joins stored parts, in part order, back into the value.
pub fn join(parts: &[&[u8]]) -> Result<Vec<u8>, FormatError> {
    let mut value = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let count = part_count(part)? as usize;
        if count != parts.len() {
            return Err(FormatError::PartCount {
                part: i,
                count,
                found: parts.len(),
            });
        }
        value.extend_from_slice(&part[HEADER..]);
    }
    Ok(value)
}

/// A value holding one integer, e.g. a watermark.
pub fn int(name: &str, v: i64) -> Result<Vec<u8>, ArrowError> {
    let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(Int64Array::from(vec![v]))],
    )?;
    encode(&[(&schema, &[batch])])
}

/// The integer of a value written by [`int`].
pub fn read_int(value: &[u8], name: &str) -> Result<i64, FormatError> {
    let frames = decode(value)?;
    let column = frames
        .first()
        .and_then(|(_, batches)| batches.first())
        .and_then(|b| b.column_by_name(name))
        .ok_or_else(|| FormatError::MissingInt(name.to_owned()))?;
    match column.as_primitive_opt::<Int64Type>() {
        Some(ints) if ints.len() == 1 && ints.is_valid(0) => Ok(ints.value(0)),
        _ => Err(FormatError::NotInt(name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::StringArray;

    use super::*;

    #[test]
    fn frames_round_trip_through_parts() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let rows: Vec<Option<String>> = (0..2_000).map(|i| Some(format!("row {i}"))).collect();
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(StringArray::from(rows))])
                .expect("batch");
        let empty = Arc::new(Schema::empty());
        let value =
            encode(&[(&schema, std::slice::from_ref(&batch)), (&empty, &[])]).expect("encode");
        let parts = split(&value, 4_096);
        assert!(parts.len() > 1, "{} bytes in one part", value.len());
        assert!(parts.iter().all(|p| p.len() <= 4_096));
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let frames = decode(&join(&refs).expect("join")).expect("decode");
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].1, vec![batch]);
        assert_eq!((frames[1].0.fields().len(), frames[1].1.len()), (0, 0));
        // A missing part is an error, not a shorter value.
        assert!(join(&refs[..refs.len() - 1]).is_err());
    }

    #[test]
    fn integers_round_trip_and_garbage_is_an_error() {
        let value = int("closed_through", -42).expect("encode");
        assert_eq!(read_int(&value, "closed_through"), Ok(-42));
        assert!(read_int(&value, "other").is_err());
        assert!(decode(&[1, 0, 0, 0, 7]).is_err());
        assert!(decode(&[9, 9, 9]).is_err());
        // A frame length past the end, behind a valid checksum.
        let mut lying = vec![0; 8];
        lying.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
        let sum = twox_hash::XxHash64::oneshot(0, &lying[8..]).to_le_bytes();
        lying[..8].copy_from_slice(&sum);
        assert_eq!(
            decode(&lying).map(|f| f.len()),
            Err(FormatError::FrameCut { len: 200, left: 2 })
        );
        assert!(join(&[b"XXXX\x01\x00\x00\x00"]).is_err());
        assert_eq!(split(&[], 100).len(), 1, "an empty value is one part");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(arrow::array::StringArray::from(vec![
                    Some("x"),
                    Some("yy"),
                    None,
                ])),
            ],
        )
        .expect("batch");
        encode(&[(&schema, &[batch])]).expect("encode")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
            let _ = join(&[&bytes]);
            let _ = read_int(&bytes, "a");
        }

        #[test]
        fn corrupted_values_are_errors(flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8)) {
            let mut value = sample();
            for (at, flip) in flips {
                let i = at.index(value.len());
                value[i] ^= flip;
            }
            prop_assert!(decode(&value).is_err());
        }

        #[test]
        fn truncated_values_are_errors(cut in 0usize..1_000) {
            let value = sample();
            let cut = cut % value.len();
            prop_assert!(decode(&value[..cut]).is_err() || cut == 0);
        }
    }
}
