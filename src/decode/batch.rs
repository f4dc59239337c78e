//! Appends validated records to Arrow column builders.

use std::sync::Arc;

use arrow::array::ListArray;
use arrow::array::{
    ArrayRef, BooleanBuilder, Decimal128Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::Cell;
use crate::schema::{FieldType, Source};

enum ColumnBuilder {
    Utf8(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Ts(TimestampMillisecondBuilder),
    Bool(BooleanBuilder),
    Decimal(Decimal128Builder),
    /// Items go to `items`; `ends` are the offsets after each row's last
    /// item, `valid` whether each row is a list (not null).
    List {
        item_type: DataType,
        items: Box<ColumnBuilder>,
        ends: Vec<i32>,
        valid: Vec<bool>,
    },
}

impl ColumnBuilder {
    fn new(ty: &FieldType) -> Self {
        match ty {
            FieldType::Id
            | FieldType::Text
            | FieldType::Coded
            | FieldType::Enum(_)
            | FieldType::Matching(_) => Self::Utf8(StringBuilder::new()),
            FieldType::Bool => Self::Bool(BooleanBuilder::new()),
            FieldType::Decimal { .. } => {
                Self::Decimal(Decimal128Builder::new().with_data_type(ty.data_type()))
            }
            FieldType::List(item) => Self::List {
                item_type: item.data_type(),
                items: Box::new(Self::new(item)),
                ends: Vec::new(),
                valid: Vec::new(),
            },
            FieldType::Int { .. } => Self::Int(Int64Builder::new()),
            FieldType::Float { .. } => Self::Float(Float64Builder::new()),
            FieldType::Timestamp => {
                Self::Ts(TimestampMillisecondBuilder::new().with_timezone("UTC"))
            }
        }
    }

    /// Appends one cell; the decoder guarantees its type matches the column.
    fn append(&mut self, cell: &Cell<'_>) {
        match (self, cell) {
            (
                Self::List {
                    items, ends, valid, ..
                },
                cell,
            ) => {
                let listed = match cell {
                    Cell::List(values) => values.as_slice(),
                    _ => &[],
                };
                for value in listed {
                    items.append(value);
                }
                let end = ends.last().copied().unwrap_or(0)
                    + i32::try_from(listed.len()).unwrap_or(i32::MAX);
                ends.push(end);
                valid.push(matches!(cell, Cell::List(_)));
            }
            (Self::Utf8(b), Cell::Str(s)) => b.append_value(s),
            (Self::Int(b), Cell::Int(v)) => b.append_value(*v),
            (Self::Float(b), Cell::Float(v)) => b.append_value(*v),
            (Self::Ts(b), Cell::Ts(v)) => b.append_value(*v),
            (Self::Bool(b), Cell::Bool(v)) => b.append_value(*v),
            (Self::Decimal(b), Cell::Decimal(v)) => b.append_value(*v),
            (Self::Utf8(b), _) => b.append_null(),
            (Self::Int(b), _) => b.append_null(),
            (Self::Float(b), _) => b.append_null(),
            (Self::Ts(b), _) => b.append_null(),
            (Self::Bool(b), _) => b.append_null(),
            (Self::Decimal(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Utf8(b) => Arc::new(b.finish()),
            Self::Int(b) => Arc::new(b.finish()),
            Self::Float(b) => Arc::new(b.finish()),
            Self::Ts(b) => Arc::new(b.finish()),
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Decimal(b) => Arc::new(b.finish()),
            Self::List {
                item_type,
                items,
                ends,
                valid,
            } => {
                let values = items.finish();
                let offsets: Vec<i32> = std::iter::once(0).chain(std::mem::take(ends)).collect();
                let nulls = NullBuffer::from(std::mem::take(valid));
                let field = Arc::new(Field::new("item", item_type.clone(), true));
                Arc::new(ListArray::new(
                    field,
                    OffsetBuffer::new(offsets.into()),
                    values,
                    Some(nulls),
                ))
            }
        }
    }
}

/// Collects validated records of one source into a `RecordBatch`.
pub struct BatchBuilder {
    kind: Source,
    columns: Vec<ColumnBuilder>,
    rows: usize,
}

impl BatchBuilder {
    /// An empty builder for `kind`'s schema.
    pub fn new(kind: Source) -> Self {
        Self {
            kind,
            columns: kind
                .fields()
                .iter()
                .map(|f| ColumnBuilder::new(&f.ty))
                .collect(),
            rows: 0,
        }
    }

    /// Appends one record, as returned by [`parse_record`](super::parse_record).
    pub fn append(&mut self, cells: &[Cell<'_>]) {
        for (column, cell) in self.columns.iter_mut().zip(cells) {
            column.append(cell);
        }
        self.rows += 1;
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was appended since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Builds the batch and resets the builder.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let arrays = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        RecordBatch::try_new(self.kind.schema(), arrays)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, TimestampMillisecondType};

    use super::*;
    use crate::decode::parse_record;

    #[test]
    fn decimal_and_bool_columns_have_their_arrow_types() {
        let ty = FieldType::Decimal {
            precision: 6,
            scale: 2,
            min: None,
            max: None,
        };
        let mut decimals = ColumnBuilder::new(&ty);
        decimals.append(&Cell::Decimal(1999));
        decimals.append(&Cell::Null);
        let array = decimals.finish();
        assert_eq!(array.data_type(), &ty.data_type());
        let array = array.as_primitive::<arrow::datatypes::Decimal128Type>();
        assert_eq!(
            (array.value_as_string(0), array.is_null(1)),
            ("19.99".to_owned(), true)
        );
        let mut bools = ColumnBuilder::new(&FieldType::Bool);
        bools.append(&Cell::Bool(true));
        assert!(bools.finish().as_boolean().value(0));
    }

    #[test]
    fn list_columns_keep_each_rows_items_and_nulls() {
        let ty = FieldType::List(Box::new(FieldType::List(Box::new(FieldType::Text))));
        let mut lists = ColumnBuilder::new(&ty);
        let text = |s: &'static str| Cell::Str(s.into());
        lists.append(&Cell::List(vec![
            Cell::List(vec![text("a"), text("b")]),
            Cell::List(vec![]),
        ]));
        lists.append(&Cell::Null);
        lists.append(&Cell::List(vec![Cell::List(vec![text("c")])]));
        let array = lists.finish();
        assert_eq!(array.data_type(), &ty.data_type());
        let rows = array.as_list::<i32>();
        assert_eq!((rows.len(), rows.is_null(1)), (3, true));
        let first = rows.value(0);
        let first = first.as_list::<i32>();
        assert_eq!(first.value_length(0), 2);
        assert_eq!(first.value_length(1), 0);
        let strings = first.value(0);
        assert_eq!(strings.as_string::<i32>().value(1), "b");
        let third = rows.value(2);
        assert_eq!(
            third.as_list::<i32>().value(0).as_string::<i32>().value(0),
            "c"
        );
    }

    #[test]
    fn builds_a_batch_with_nulls_for_absent_optionals() {
        let mut builder = BatchBuilder::new(crate::config::default_source("transactions"));
        for payload in [
            r#"{"event_id":"a","customer_id":"c1","ts":1000,"amount":2.5,"category":"books","channel":"web"}"#,
            r#"{"event_id":"b","customer_id":"c2","ts":3000,"amount":4,"category":"games"}"#,
        ] {
            let cells = parse_record(
                crate::config::default_source("transactions"),
                payload.as_bytes(),
            )
            .expect("valid");
            builder.append(&cells);
        }
        assert_eq!(builder.len(), 2);
        let batch = builder.finish().expect("batch");
        assert!(builder.is_empty());
        assert_eq!(batch.num_rows(), 2);
        let amount = batch
            .column_by_name("amount")
            .expect("amount")
            .as_primitive::<Float64Type>();
        assert_eq!(amount.values().to_vec(), vec![2.5, 4.0]);
        let ts = batch
            .column_by_name("ts")
            .expect("ts")
            .as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.values().to_vec(), vec![1000, 3000]);
        let channel = batch
            .column_by_name("channel")
            .expect("channel")
            .as_string::<i32>();
        assert_eq!(channel.value(0), "web");
        assert!(channel.is_null(1));
    }
}
