use super::*;

const GOOD: &str = r#"{"ts":"2026-11-21T15:04:05.250Z","merchant":"M1","api":"/v1/payments","status":200,"latency_ms":12.5,"corr_id":"c-1"}"#;

fn parser() -> EventParser {
    EventParser::new(&FieldMapping::default(), true).expect("default mapping compiles")
}

fn reject(line: &str) -> RecordError {
    parser()
        .parse(line.as_bytes(), TimeBounds::UNBOUNDED)
        .expect_err("record should be rejected")
}

#[test]
fn parses_a_complete_record() {
    let line = r#"{"ts":1795273445250,"merchant":"M1","api":"/v1/payments","status":"503","latency_ms":"7.25","corr_id":42,"partner":"P","method":"POST","path":"/v1/payments/x","host":"h1","region":"eu","extra":{"a":[1,2]},"n":1.50}"#;
    let event = parser()
        .parse(line.as_bytes(), TimeBounds::UNBOUNDED)
        .expect("valid");
    assert_eq!(event.ts_us, 1_795_273_445_250_000);
    assert_eq!(event.status, 503);
    assert_eq!(event.latency_ms, 7.25);
    assert_eq!(event.corr_id, "42");
    assert_eq!(event.partner.as_deref(), Some("P"));
    assert_eq!(event.region.as_deref(), Some("eu"));
    assert_eq!(
        event.attributes.as_deref(),
        Some(r#"{"extra":{"a":[1,2]},"n":1.50}"#)
    );
}

#[test]
fn skipping_attributes_gives_the_same_event_without_them() {
    let fast = EventParser::new(&FieldMapping::default(), false).expect("compiles");
    let event = fast
        .parse(GOOD.as_bytes(), TimeBounds::UNBOUNDED)
        .expect("valid");
    assert_eq!(event.attributes, None);
    assert_eq!(event.merchant, "M1");
    assert!(
        matches!(event.merchant, Cow::Borrowed(_)),
        "unescaped strings are borrowed"
    );
}

#[test]
fn nested_pointers_map_fields_and_keep_the_object() {
    let mapping = FieldMapping {
        merchant: "/request/account/id".into(),
        api: "/request/endpoint".into(),
        corr_id: "/trace~1id".into(),
        ..FieldMapping::default()
    };
    let parser = EventParser::new(&mapping, true).expect("compiles");
    let line = r#"{"ts":"2026-11-21T15:04:05Z","request":{"account":{"id":"M7"},"endpoint":"/v1/refunds","other":1},"status":201,"latency_ms":3,"trace/id":"t-9"}"#;
    let event = parser
        .parse(line.as_bytes(), TimeBounds::UNBOUNDED)
        .expect("valid");
    assert_eq!(event.merchant, "M7");
    assert_eq!(event.api, "/v1/refunds");
    assert_eq!(event.corr_id, "t-9");
    assert_eq!(
        event.attributes.as_deref(),
        Some(r#"{"request":{"account":{"id":"M7"},"endpoint":"/v1/refunds","other":1}}"#)
    );

    let missing = parser
        .parse(br#"{"ts":"2026-11-21T15:04:05Z","request":"flat","status":201,"latency_ms":3,"trace/id":"t"}"#, TimeBounds::UNBOUNDED)
        .expect_err("nested merchant missing");
    assert_eq!(missing.field.as_deref(), Some("request/account/id"));
    assert_eq!(missing.reason, RejectReason::MissingField);
}

#[test]
fn conflicting_mappings_are_refused() {
    let mapping = FieldMapping {
        merchant: "/a".into(),
        api: "/a/b".into(),
        ..FieldMapping::default()
    };
    assert!(EventParser::new(&mapping, false).is_err());
    let mapping = FieldMapping {
        merchant: "/".into(),
        ..FieldMapping::default()
    };
    assert!(EventParser::new(&mapping, false).is_err());
}

#[test]
fn each_malformed_record_names_field_and_reason() {
    let cases: &[(&str, Option<&str>, RejectReason)] = &[
        ("{not json", None, RejectReason::InvalidJson),
        ("[1,2]", None, RejectReason::NotAnObject),
        ("17", None, RejectReason::NotAnObject),
        (
            r#"{"ts":"2026-11-21T15:04:05Z","api":"a","status":200,"latency_ms":1,"corr_id":"c"}"#,
            Some("merchant"),
            RejectReason::MissingField,
        ),
        (
            r#"{"ts":"2026-11-21T15:04:05Z","merchant":"","api":"a","status":200,"latency_ms":1,"corr_id":"c"}"#,
            Some("merchant"),
            RejectReason::InvalidValue,
        ),
        (
            r#"{"ts":"2026-11-21T15:04:05Z","merchant":["M"],"api":"a","status":200,"latency_ms":1,"corr_id":"c"}"#,
            Some("merchant"),
            RejectReason::WrongType,
        ),
        (
            r#"{"ts":"2026-11-21T15:04:05Z","merchant":"M","api":7,"status":200,"latency_ms":1,"corr_id":"c"}"#,
            Some("api"),
            RejectReason::WrongType,
        ),
        (
            r#"{"ts":"yesterday","merchant":"M","api":"a","status":200,"latency_ms":1,"corr_id":"c"}"#,
            Some("ts"),
            RejectReason::InvalidValue,
        ),
        (
            r#"{"ts":true,"merchant":"M","api":"a","status":200,"latency_ms":1,"corr_id":"c"}"#,
            Some("ts"),
            RejectReason::WrongType,
        ),
        (
            r#"{"ts":"2026-11-21T15:04:05Z","merchant":"M","api":"a","status":999,"latency_ms":1,"corr_id":"c"}"#,
            Some("status"),
            RejectReason::InvalidValue,
        ),
        (
            r#"{"ts":"2026-11-21T15:04:05Z","merchant":"M","api":"a","status":200,"latency_ms":-1,"corr_id":"c"}"#,
            Some("latency_ms"),
            RejectReason::InvalidValue,
        ),
        (
            r#"{"ts":"2026-11-21T15:04:05Z","merchant":"M","api":"a","status":200,"latency_ms":"fast","corr_id":"c"}"#,
            Some("latency_ms"),
            RejectReason::InvalidValue,
        ),
        (
            r#"{"ts":"2026-11-21T15:04:05Z","merchant":"M","api":"a","status":200,"latency_ms":1}"#,
            Some("corr_id"),
            RejectReason::MissingField,
        ),
        (
            r#"{"ts":"2026-11-21T15:04:05Z","merchant":"M\u0000","api":"a","status":200,"latency_ms":1,"corr_id":"c"}"#,
            Some("merchant"),
            RejectReason::InvalidValue,
        ),
        (
            r#"{"ts":"2026-11-21T15:04:05Z","merchant":"M","api":"a","status":200,"latency_ms":1,"corr_id":"c","region":5}"#,
            Some("region"),
            RejectReason::WrongType,
        ),
    ];
    for (line, field, reason) in cases {
        let error = reject(line);
        assert_eq!(error.field.as_deref(), *field, "{line}: {error}");
        assert_eq!(error.reason, *reason, "{line}: {error}");
    }
}

#[test]
fn huge_strings_are_refused() {
    let long = "x".repeat(MAX_ID_BYTES + 1);
    let line = GOOD.replace("\"M1\"", &format!("\"{long}\""));
    let error = reject(&line);
    assert_eq!(error.reason, RejectReason::TooLong);
    assert_eq!(error.field.as_deref(), Some("merchant"));

    let blob = "y".repeat(MAX_ATTRIBUTES_BYTES);
    let line = GOOD.replace("}", &format!(",\"blob\":\"{blob}\"}}"));
    assert_eq!(reject(&line).reason, RejectReason::TooLong);
}

#[test]
fn invalid_utf8_is_refused() {
    let mut bytes = GOOD.as_bytes().to_vec();
    let at = GOOD.find("M1").expect("merchant present");
    bytes[at] = 0xff;
    let error = parser()
        .parse(&bytes, TimeBounds::UNBOUNDED)
        .expect_err("invalid utf-8");
    assert_eq!(error.reason, RejectReason::InvalidUtf8);
}

#[test]
fn time_bounds_reject_old_and_future_events() {
    let event_ts = 1_795_273_445_250_000;
    let too_old = TimeBounds {
        min_ts_us: event_ts + 1,
        max_ts_us: i64::MAX,
    };
    let error = parser()
        .parse(GOOD.as_bytes(), too_old)
        .expect_err("too old");
    assert_eq!(error.reason, RejectReason::TooOld);
    let too_new = TimeBounds {
        min_ts_us: i64::MIN,
        max_ts_us: event_ts - 1,
    };
    let error = parser()
        .parse(GOOD.as_bytes(), too_new)
        .expect_err("too new");
    assert_eq!(error.reason, RejectReason::TooFarInFuture);
    assert_eq!(error.field.as_deref(), Some("ts"));
}

#[test]
fn escaped_strings_are_decoded() {
    let line = GOOD.replace("\"M1\"", r#""M\u00e9\"1""#);
    let event = parser()
        .parse(line.as_bytes(), TimeBounds::UNBOUNDED)
        .expect("valid");
    assert_eq!(event.merchant, "Mé\"1");
}
