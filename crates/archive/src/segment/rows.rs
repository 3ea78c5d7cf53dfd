//! What a segment is written from: events by index, either decoded events ([`ApiCallRef`],
//! the WAL's) or [`EventColumns`] (an import's, built while parsing).

use std::sync::Arc;

use arrow_array::types::UInt32Type;
use arrow_array::{ArrayRef, DictionaryArray, StringArray, UInt32Array};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer};
use arrow_schema::ArrowError;
use mm_model::ApiCallRef;
use rustc_hash::FxHashMap;

/// A column that may be absent from an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optional {
    Partner,
    Method,
    Path,
    Host,
    Region,
    Attributes,
}

impl Optional {
    fn of<'e>(self, event: &'e ApiCallRef<'_>) -> Option<&'e str> {
        match self {
            Optional::Partner => event.partner.as_deref(),
            Optional::Method => event.method.as_deref(),
            Optional::Path => event.path.as_deref(),
            Optional::Host => event.host.as_deref(),
            Optional::Region => event.region.as_deref(),
            Optional::Attributes => event.attributes.as_deref(),
        }
    }

    pub const ALL: [Optional; 6] = [
        Optional::Partner,
        Optional::Method,
        Optional::Path,
        Optional::Host,
        Optional::Region,
        Optional::Attributes,
    ];
}

/// The text columns of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    Merchant,
    Api,
    CorrId,
    Optional(Optional),
}

/// Events by index, as a segment reads them.
pub trait Rows {
    fn rows(&self) -> usize;
    fn ts_us(&self, row: usize) -> i64;
    fn merchant(&self, row: usize) -> &str;
    fn api(&self, row: usize) -> &str;
    fn status(&self, row: usize) -> u16;
    fn latency_ms(&self, row: usize) -> f64;
    fn corr_id(&self, row: usize) -> &str;
    fn optional(&self, column: Optional, row: usize) -> Option<&str>;
    /// Text `column` of the rows `order` lists as an array, when the rows can build it better
    /// than value by value (a dictionary array of a column held as ids, a column held in one
    /// buffer gathered whole); `None`: the segment gathers the values.
    fn array(&self, _column: Text, _order: &[u32]) -> Option<Result<ArrayRef, ArrowError>> {
        None
    }
}

impl Rows for [ApiCallRef<'_>] {
    fn rows(&self) -> usize {
        self.len()
    }
    fn ts_us(&self, row: usize) -> i64 {
        self[row].ts_us
    }
    fn merchant(&self, row: usize) -> &str {
        &self[row].merchant
    }
    fn api(&self, row: usize) -> &str {
        &self[row].api
    }
    fn status(&self, row: usize) -> u16 {
        self[row].status
    }
    fn latency_ms(&self, row: usize) -> f64 {
        self[row].latency_ms
    }
    fn corr_id(&self, row: usize) -> &str {
        &self[row].corr_id
    }
    fn optional(&self, column: Optional, row: usize) -> Option<&str> {
        column.of(&self[row])
    }
}

/// One text column: the values one after the other, and where each starts (and, last, where
/// the last one ends).
#[derive(Debug, Clone)]
struct Texts {
    text: String,
    bounds: Vec<usize>,
    /// Per value: present (the optional columns only; empty for the others).
    present: Vec<bool>,
}

impl Texts {
    fn push(&mut self, value: &str) {
        self.text.push_str(value);
        self.bounds.push(self.text.len());
    }

    fn push_optional(&mut self, value: Option<&str>) {
        self.push(value.unwrap_or_default());
        self.present.push(value.is_some());
    }

    fn get(&self, row: usize) -> &str {
        &self.text[self.bounds[row]..self.bounds[row + 1]]
    }

    fn get_optional(&self, row: usize) -> Option<&str> {
        self.present[row].then(|| self.get(row))
    }

    /// The values of the rows `order` lists: where each lies read once, then the offsets,
    /// then the bytes in one copy each.
    fn gather(&self, order: &[u32]) -> Result<ArrayRef, ArrowError> {
        let spans: Vec<(usize, usize)> = order
            .iter()
            .map(|row| (self.bounds[*row as usize], self.bounds[*row as usize + 1]))
            .collect();
        let mut offsets = Vec::with_capacity(order.len() + 1);
        offsets.push(0i32);
        let mut length = 0usize;
        for (start, end) in &spans {
            length += end - start;
            offsets.push(i32::try_from(length).map_err(|_| {
                ArrowError::InvalidArgumentError("a text column over 2 GiB".into())
            })?);
        }
        let mut bytes = Vec::with_capacity(length);
        let text = self.text.as_bytes();
        for (start, end) in spans {
            bytes.extend_from_slice(&text[start..end]);
        }
        let present = (!self.present.is_empty()
            && order.iter().any(|row| !self.present[*row as usize]))
        .then(|| NullBuffer::from_iter(order.iter().map(|row| self.present[*row as usize])));
        Ok(Arc::new(StringArray::try_new(
            OffsetBuffer::new(offsets.into()),
            Buffer::from_vec(bytes),
            present,
        )?))
    }

    fn concat<'p>(&mut self, parts: impl Iterator<Item = &'p Texts> + Clone) {
        self.text
            .reserve(parts.clone().map(|part| part.text.len()).sum());
        for part in parts {
            self.append(part);
        }
    }

    fn append(&mut self, other: &Texts) {
        let base = self.text.len();
        self.text.push_str(&other.text);
        self.bounds
            .extend(other.bounds[1..].iter().map(|end| base + end));
        self.present.extend_from_slice(&other.present);
    }
}

/// Marks an absent value of a [`Repeated`] column.
const ABSENT: u32 = u32::MAX;

/// A column of few distinct values (merchants, APIs, hosts, …): each row holds the id of its
/// value, so reading the rows in another order touches four bytes a row.
#[derive(Debug, Clone, Default)]
struct Repeated {
    ids: Vec<u32>,
    values: Vec<Box<str>>,
    index: FxHashMap<Box<str>, u32>,
}

impl Repeated {
    fn with_capacity(rows: usize) -> Self {
        Self {
            ids: Vec::with_capacity(rows),
            ..Self::default()
        }
    }

    fn id(&mut self, value: &str) -> u32 {
        if let Some(id) = self.index.get(value) {
            return *id;
        }
        let id = self.values.len() as u32;
        self.values.push(value.into());
        self.index.insert(value.into(), id);
        id
    }

    fn push(&mut self, value: Option<&str>) {
        let id = value.map_or(ABSENT, |value| self.id(value));
        self.ids.push(id);
    }

    fn get(&self, row: usize) -> Option<&str> {
        let id = self.ids[row];
        (id != ABSENT).then(|| &*self.values[id as usize])
    }

    /// The rows `order` lists as ids into the distinct values (each distinct value copied
    /// once, not once a row). When the column has more distinct values than `order` has rows
    /// (a row group of a unit with many merchants or hosts), the dictionary holds only the
    /// values these rows use, so writing a unit's row groups copies each value a bounded
    /// number of times rather than the whole column's values once a row group.
    fn dictionary(&self, order: &[u32]) -> Result<ArrayRef, ArrowError> {
        let mut ids: Vec<u32> = order.iter().map(|row| self.ids[*row as usize]).collect();
        let values: Vec<&str> = if self.values.len() <= order.len() {
            self.values.iter().map(|value| &**value).collect()
        } else {
            let mut local: FxHashMap<u32, u32> = FxHashMap::default();
            let mut used = Vec::new();
            for id in ids.iter_mut().filter(|id| **id != ABSENT) {
                *id = *local.entry(*id).or_insert_with(|| {
                    used.push(&*self.values[*id as usize]);
                    used.len() as u32 - 1
                });
            }
            used
        };
        let keys = match ids.contains(&ABSENT) {
            false => UInt32Array::from(ids),
            true => {
                let present = NullBuffer::from_iter(ids.iter().map(|id| *id != ABSENT));
                let keys = ids.iter().map(|id| if *id == ABSENT { 0 } else { *id });
                UInt32Array::new(keys.collect(), Some(present))
            }
        };
        let values = StringArray::from_iter_values(values);
        Ok(Arc::new(DictionaryArray::<UInt32Type>::try_new(
            keys,
            Arc::new(values),
        )?))
    }

    fn concat<'p>(&mut self, parts: impl Iterator<Item = &'p Repeated>) {
        for part in parts {
            let ids: Vec<u32> = part.values.iter().map(|value| self.id(value)).collect();
            self.ids.extend(part.ids.iter().map(|id| match id {
                &ABSENT => ABSENT,
                id => ids[*id as usize],
            }));
        }
    }
}

/// The series of [`EventColumns`]: the distinct merchants and APIs, and per event the index
/// of its merchant and its API in them.
#[derive(Debug, Clone, Copy)]
pub struct Series<'c> {
    pub merchants: &'c [Box<str>],
    pub merchant_of: &'c [u32],
    pub apis: &'c [Box<str>],
    pub api_of: &'c [u32],
}

/// Events as columns: each text column in one buffer, the repetitive ones as ids, so building
/// them costs no allocation per event and a segment reads each column from compact memory.
#[derive(Debug, Clone)]
pub struct EventColumns {
    ts_us: Vec<i64>,
    status: Vec<u16>,
    latency_ms: Vec<f64>,
    merchant: Repeated,
    api: Repeated,
    corr_id: Texts,
    partner: Repeated,
    method: Repeated,
    path: Texts,
    host: Repeated,
    region: Repeated,
    attributes: Texts,
}

impl Default for EventColumns {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl EventColumns {
    pub fn push(&mut self, event: &ApiCallRef<'_>) {
        self.ts_us.push(event.ts_us);
        self.status.push(event.status);
        self.latency_ms.push(event.latency_ms);
        self.merchant.push(Some(&event.merchant));
        self.api.push(Some(&event.api));
        self.corr_id.push(&event.corr_id);
        self.partner.push(event.partner.as_deref());
        self.method.push(event.method.as_deref());
        self.path.push_optional(event.path.as_deref());
        self.host.push(event.host.as_deref());
        self.region.push(event.region.as_deref());
        self.attributes.push_optional(event.attributes.as_deref());
    }

    /// Room for `rows` events before any grows (their texts grow as they come).
    pub fn with_capacity(rows: usize) -> Self {
        let texts = |optional: bool| {
            let mut bounds = Vec::with_capacity(rows + 1);
            bounds.push(0);
            Texts {
                text: String::new(),
                bounds,
                present: Vec::with_capacity(if optional { rows } else { 0 }),
            }
        };
        Self {
            ts_us: Vec::with_capacity(rows),
            status: Vec::with_capacity(rows),
            latency_ms: Vec::with_capacity(rows),
            merchant: Repeated::with_capacity(rows),
            api: Repeated::with_capacity(rows),
            corr_id: texts(false),
            partner: Repeated::with_capacity(rows),
            method: Repeated::with_capacity(rows),
            path: texts(true),
            host: Repeated::with_capacity(rows),
            region: Repeated::with_capacity(rows),
            attributes: texts(true),
        }
    }

    /// The bytes of the text columns (correlation id, path, attributes): what a caller
    /// building columns like these passes to [`EventColumns::reserve_text`].
    pub fn text_bytes(&self) -> [usize; 3] {
        [&self.corr_id, &self.path, &self.attributes].map(|texts| texts.text.len())
    }

    /// Room for `bytes` more of each text column (as [`EventColumns::text_bytes`] counts
    /// them), so that they do not grow (and copy themselves) value by value.
    pub fn reserve_text(&mut self, bytes: [usize; 3]) {
        for (texts, bytes) in [&mut self.corr_id, &mut self.path, &mut self.attributes]
            .into_iter()
            .zip(bytes)
        {
            texts.text.reserve(bytes);
        }
    }

    /// The distinct merchants and APIs, and per event the index of its own in each.
    pub fn series(&self) -> Series<'_> {
        Series {
            merchants: &self.merchant.values,
            merchant_of: &self.merchant.ids,
            apis: &self.api.values,
            api_of: &self.api.ids,
        }
    }

    /// The events of `parts`, one after the other, each column allocated once.
    pub fn concat(parts: &[EventColumns]) -> Self {
        let mut all = Self::with_capacity(parts.iter().map(|part| part.rows()).sum());
        all.merchant.concat(parts.iter().map(|part| &part.merchant));
        all.api.concat(parts.iter().map(|part| &part.api));
        all.corr_id.concat(parts.iter().map(|part| &part.corr_id));
        all.partner.concat(parts.iter().map(|part| &part.partner));
        all.method.concat(parts.iter().map(|part| &part.method));
        all.path.concat(parts.iter().map(|part| &part.path));
        all.host.concat(parts.iter().map(|part| &part.host));
        all.region.concat(parts.iter().map(|part| &part.region));
        all.attributes
            .concat(parts.iter().map(|part| &part.attributes));
        for part in parts {
            all.ts_us.extend_from_slice(&part.ts_us);
            all.status.extend_from_slice(&part.status);
            all.latency_ms.extend_from_slice(&part.latency_ms);
        }
        all
    }
}

impl Rows for EventColumns {
    fn rows(&self) -> usize {
        self.ts_us.len()
    }
    fn ts_us(&self, row: usize) -> i64 {
        self.ts_us[row]
    }
    fn merchant(&self, row: usize) -> &str {
        self.merchant.get(row).unwrap_or_default()
    }
    fn api(&self, row: usize) -> &str {
        self.api.get(row).unwrap_or_default()
    }
    fn status(&self, row: usize) -> u16 {
        self.status[row]
    }
    fn latency_ms(&self, row: usize) -> f64 {
        self.latency_ms[row]
    }
    fn corr_id(&self, row: usize) -> &str {
        self.corr_id.get(row)
    }
    fn optional(&self, column: Optional, row: usize) -> Option<&str> {
        match column {
            Optional::Partner => self.partner.get(row),
            Optional::Method => self.method.get(row),
            Optional::Path => self.path.get_optional(row),
            Optional::Host => self.host.get(row),
            Optional::Region => self.region.get(row),
            Optional::Attributes => self.attributes.get_optional(row),
        }
    }
    fn array(&self, column: Text, order: &[u32]) -> Option<Result<ArrayRef, ArrowError>> {
        let repeated = match column {
            Text::Merchant => &self.merchant,
            Text::Api => &self.api,
            Text::CorrId => return Some(self.corr_id.gather(order)),
            Text::Optional(Optional::Partner) => &self.partner,
            Text::Optional(Optional::Method) => &self.method,
            Text::Optional(Optional::Path) => return Some(self.path.gather(order)),
            Text::Optional(Optional::Host) => &self.host,
            Text::Optional(Optional::Region) => &self.region,
            Text::Optional(Optional::Attributes) => return Some(self.attributes.gather(order)),
        };
        Some(repeated.dictionary(order))
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use arrow_array::Array;

    use super::*;

    fn event(index: usize) -> ApiCallRef<'static> {
        let text = |value: String| Cow::Owned(value);
        ApiCallRef {
            ts_us: index as i64 * 1_000,
            merchant: text(format!("merchant-{}", index % 3)),
            api: text(format!("/v1/api/{}", index % 2)),
            status: 200 + index as u16,
            latency_ms: index as f64 / 4.0,
            corr_id: text(format!("corr-{index}")),
            partner: index
                .is_multiple_of(2)
                .then(|| text(format!("partner-{index}"))),
            method: Some(Cow::Borrowed("POST")),
            path: index.is_multiple_of(3).then_some(Cow::Borrowed("")),
            host: None,
            region: Some(text(format!("region-{index}"))),
            attributes: (index % 4 == 1).then(|| text(format!("{{\"n\":{index}}}"))),
        }
    }

    fn same<A: Rows + ?Sized, B: Rows + ?Sized>(left: &A, right: &B) {
        assert_eq!(left.rows(), right.rows());
        for row in 0..left.rows() {
            assert_eq!(left.ts_us(row), right.ts_us(row));
            assert_eq!(left.merchant(row), right.merchant(row));
            assert_eq!(left.api(row), right.api(row));
            assert_eq!(left.status(row), right.status(row));
            assert_eq!(left.latency_ms(row), right.latency_ms(row));
            assert_eq!(left.corr_id(row), right.corr_id(row));
            for column in Optional::ALL {
                assert_eq!(
                    left.optional(column, row),
                    right.optional(column, row),
                    "{column:?} of row {row}"
                );
            }
        }
    }

    #[test]
    fn columns_read_back_every_field_of_the_events_pushed_and_concatenated() {
        let events: Vec<ApiCallRef<'static>> = (0..10).map(event).collect();
        let mut first = EventColumns::with_capacity(2);
        for event in &events[..4] {
            first.push(event);
        }
        let mut second = EventColumns::default();
        for event in &events[4..] {
            second.push(event);
        }
        same(&first, &events[..4]);
        let series = first.series();
        for (row, event) in events[..4].iter().enumerate() {
            assert_eq!(
                *series.merchants[series.merchant_of[row] as usize],
                *event.merchant
            );
            assert_eq!(*series.apis[series.api_of[row] as usize], *event.api);
        }
        let all = EventColumns::concat(&[first, EventColumns::default(), second]);
        same(&all, events.as_slice());
        // An empty text is present, an absent one is not.
        assert_eq!(all.optional(Optional::Path, 0), Some(""));
        assert_eq!(all.optional(Optional::Path, 1), None);
    }

    #[test]
    fn a_row_groups_dictionary_holds_only_the_values_of_its_rows_when_the_column_has_more() {
        let mut column = Repeated::default();
        for index in 0..100 {
            column.push(
                (index % 10 != 9)
                    .then(|| format!("host-{index}"))
                    .as_deref(),
            );
        }
        let order = [42, 9, 7, 42];
        let array = column.dictionary(&order).expect("built");
        let array = array
            .as_any()
            .downcast_ref::<DictionaryArray<UInt32Type>>()
            .expect("a dictionary");
        assert_eq!(array.values().len(), 2, "host-42 and host-7, not all 90");
        let rows: Vec<Option<&str>> = array
            .downcast_dict::<StringArray>()
            .expect("of strings")
            .into_iter()
            .collect();
        assert_eq!(
            rows,
            [Some("host-42"), None, Some("host-7"), Some("host-42")]
        );
        // A column with no more values than rows keeps its dictionary whole.
        let whole = column
            .dictionary(&(0..100).collect::<Vec<u32>>())
            .expect("built");
        let whole = whole
            .as_any()
            .downcast_ref::<DictionaryArray<UInt32Type>>()
            .expect("a dictionary");
        assert_eq!(whole.values().len(), 90);
    }

    #[test]
    fn a_segment_written_from_columns_on_threads_is_the_file_written_from_the_decoded_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events: Vec<ApiCallRef<'static>> = (0..40_000).map(event).collect();
        let mut columns = EventColumns::default();
        for event in &events {
            columns.push(event);
        }
        let order = super::super::segment_order(events.as_slice());
        assert_eq!(order, super::super::segment_order(&columns));
        let (decoded, columnar) = (dir.path().join("decoded"), dir.path().join("columns"));
        // One thread against three: the file is the same however many encode it.
        super::super::write(&decoded, 0, events.as_slice(), &order, 1).expect("written");
        super::super::write(&columnar, 0, &columns, &order, 3).expect("written");
        let read = |path| std::fs::read(path).expect("read");
        assert!(
            read(&decoded) == read(&columnar),
            "the same bytes, dictionary columns included"
        );
    }

    /// `count` events of seven merchants over `hours` hours, out of time order, some at
    /// equal times (told apart by correlation id).
    fn shuffled(count: usize, hours: u64) -> Vec<ApiCallRef<'static>> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        (0..count)
            .map(|index| ApiCallRef {
                ts_us: (next(hours * 3_600) * 1_000_000) as i64,
                merchant: Cow::Owned(format!("m{}", next(7))),
                corr_id: Cow::Owned(format!("c{}", next(1_000_000))),
                ..event(index)
            })
            .collect()
    }

    #[test]
    fn the_segment_order_is_by_hour_merchant_time_and_correlation_id() {
        // Few hours (placed by hour and merchant, then sorted by time) and many (one
        // comparison sort).
        for (count, hours) in [(3_000, 3), (300, 400)] {
            let events = shuffled(count, hours);
            let order = super::super::segment_order(events.as_slice());
            let key = |row: &u32| {
                let event = &events[*row as usize];
                (
                    event.ts_us.div_euclid(3_600_000_000),
                    event.merchant.clone(),
                    event.ts_us,
                    event.corr_id.clone(),
                )
            };
            let mut wanted: Vec<u32> = (0..count as u32).collect();
            wanted.sort_by_key(key);
            let keys = |rows: &[u32]| rows.iter().map(key).collect::<Vec<_>>();
            assert_eq!(keys(&order), keys(&wanted), "{count} events, {hours} hours");
            let mut each_once = order.clone();
            each_once.sort_unstable();
            assert_eq!(each_once, (0..count as u32).collect::<Vec<_>>());
        }
    }
}
