//! Dead-letter records: the original key and value, and headers saying where the record came
//! from and why it was set aside.

/// Longest error message kept in a header, in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// Header names, stable for consumers of the dead-letter topic.
pub mod header {
    pub const ORIGINAL_TOPIC: &str = "mm.dlq.original.topic";
    pub const ORIGINAL_PARTITION: &str = "mm.dlq.original.partition";
    pub const ORIGINAL_OFFSET: &str = "mm.dlq.original.offset";
    pub const ORIGINAL_TIMESTAMP: &str = "mm.dlq.original.timestamp";
    pub const CONSUMER_GROUP: &str = "mm.dlq.consumer.group";
    pub const ERROR_CLASS: &str = "mm.dlq.error.class";
    pub const ERROR_MESSAGE: &str = "mm.dlq.error.message";
}

/// Where a dead letter came from and why it is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Record timestamp, epoch ms, when it had one.
    pub timestamp_ms: Option<i64>,
    pub group: &'a str,
    /// A stable, short class (the ingest rejection codes: `invalid_json`, `missing_field`, …).
    pub error_class: &'a str,
    pub error_message: &'a str,
}

impl DeadLetter<'_> {
    /// The headers, as (name, value) pairs; the message cut to
    /// [`MAX_ERROR_MESSAGE_BYTES`] on a character boundary.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (header::ORIGINAL_TOPIC, self.topic.to_owned()),
            (header::ORIGINAL_PARTITION, self.partition.to_string()),
            (header::ORIGINAL_OFFSET, self.offset.to_string()),
            (
                header::ORIGINAL_TIMESTAMP,
                self.timestamp_ms
                    .map(|ms| ms.to_string())
                    .unwrap_or_default(),
            ),
            (header::CONSUMER_GROUP, self.group.to_owned()),
            (header::ERROR_CLASS, self.error_class.to_owned()),
            (
                header::ERROR_MESSAGE,
                truncate(self.error_message, MAX_ERROR_MESSAGE_BYTES).to_owned(),
            ),
        ]
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_the_origin_and_bound_the_message() {
        let long = "é".repeat(2000);
        let letter = DeadLetter {
            topic: "calls",
            partition: 4,
            offset: 1234,
            timestamp_ms: Some(1_795_000_000_000),
            group: "mm",
            error_class: "invalid_json",
            error_message: &long,
        };
        let headers = letter.headers();
        let value = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.clone())
                .expect("present")
        };
        assert_eq!(value(header::ORIGINAL_TOPIC), "calls");
        assert_eq!(value(header::ORIGINAL_PARTITION), "4");
        assert_eq!(value(header::ORIGINAL_OFFSET), "1234");
        assert_eq!(value(header::ORIGINAL_TIMESTAMP), "1795000000000");
        assert_eq!(value(header::CONSUMER_GROUP), "mm");
        assert_eq!(value(header::ERROR_CLASS), "invalid_json");
        let message = value(header::ERROR_MESSAGE);
        assert!(message.len() <= MAX_ERROR_MESSAGE_BYTES);
        assert_eq!(message.len(), 1024, "cut on the last whole character");
        assert!(long.starts_with(&message));
    }
}
