use std::borrow::Cow;

use super::parser::has_control_character;
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

mod fast_path {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("ts".to_owned()),
            Just("merchant".to_owned()),
            Just("api".to_owned()),
            Just("status".to_owned()),
            Just("latency_ms".to_owned()),
            Just("corr_id".to_owned()),
            Just("region".to_owned()),
            Just("partner".to_owned()),
            "[a-z_]{1,8}",
            Just("we\\\"ird".to_owned()),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("\"2026-11-21T15:04:05.250Z\"".to_owned()),
            Just("1795273445250".to_owned()),
            Just("\"M1\"".to_owned()),
            "\"[a-zA-Z0-9 /:.é-]{0,12}\"",
            Just("\"esc\\\"aped\\n\"".to_owned()),
            Just("\"\\u00e9t\\u00e9\"".to_owned()),
            any::<u16>().prop_map(|number| number.to_string()),
            any::<i64>().prop_map(|number| number.to_string()),
            any::<u64>().prop_map(|number| number.to_string()),
            (0.0f64..1e7).prop_map(|number| number.to_string()),
            (-1e3f64..1e3).prop_map(|number| format!("{number:e}")),
            Just("12.50".to_owned()),
            Just("-0".to_owned()),
            Just("01".to_owned()),
            Just("1.".to_owned()),
            Just("1e".to_owned()),
            Just("+1".to_owned()),
            Just("99999999999999999999999".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            Just("null".to_owned()),
            Just("nul".to_owned()),
            Just("[1, {\"a\": [2]}]".to_owned()),
            Just("{\"nested\": true}".to_owned()),
        ]
    }

    fn whitespace() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["", "", "", " ", "\t", "\r\n "])
    }

    fn record() -> impl Strategy<Value = String> {
        (
            prop::collection::vec((key(), value(), whitespace(), whitespace()), 0..10),
            whitespace(),
            prop::sample::select(vec!["", "", "", "x", ",", "}"]),
        )
            .prop_map(|(fields, outer, tail)| {
                let body: Vec<String> = fields
                    .iter()
                    .map(|(key, value, before, after)| {
                        format!("{before}\"{key}\"{after}:{before}{value}{after}")
                    })
                    .collect();
                format!("{outer}{{{}}}{outer}{tail}", body.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn fast_scanner_agrees_with_the_serde_path(text in record(), keep: bool) {
            let parser = EventParser::new(&FieldMapping::default(), keep).expect("compiles");
            let fast = parser.parse(text.as_bytes(), TimeBounds::UNBOUNDED);
            let serde = parser.parse_without_fast_path(text.as_bytes(), TimeBounds::UNBOUNDED);
            prop_assert_eq!(fast, serde, "{}", text);
        }
    }

    #[test]
    fn generated_style_records_take_the_fast_path() {
        let parser = EventParser::new(&FieldMapping::default(), true).expect("compiles");
        let slots = fast::scan(GOOD, &parser.root, true).expect("a flat record is scanned");
        assert!(matches!(
            slots.values[Field::Merchant as usize],
            Scalar::Str(Cow::Borrowed("M1"))
        ));
        assert!(
            fast::scan(r#"{"a":"x\"y"}"#, &parser.root, true).is_none(),
            "escapes go to serde"
        );
        assert!(
            fast::scan(r#"{"a":[1]}"#, &parser.root, true).is_none(),
            "nesting goes to serde"
        );
    }
}

mod fast_path_complete {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn complete_records_parse_identically(
            ts in prop_oneof![
                (1_700_000_000_000i64..1_900_000_000_000).prop_map(|ms| ms.to_string()),
                Just("\"2026-11-21T15:04:05.123456Z\"".to_owned()),
                Just("\"2026-11-21T16:04:05+01:00\"".to_owned()),
            ],
            merchant in "[A-Za-z0-9]{1,20}",
            status in prop_oneof![(100u16..600).prop_map(|code| code.to_string()), Just("\"503\"".to_owned()), Just("200.0".to_owned())],
            latency in prop_oneof![(0.0f64..1e6).prop_map(|value| value.to_string()), (0u32..100_000).prop_map(|value| value.to_string()), Just("1.5e2".to_owned())],
            extras in prop::collection::vec(("[a-z]{1,6}x", prop_oneof![Just("\"v\"".to_owned()), Just("17".to_owned()), Just("null".to_owned()), Just("-2.5".to_owned())]), 0..4),
            keep: bool,
            order in any::<u64>(),
        ) {
            let mut fields = vec![
                format!("\"ts\":{ts}"),
                format!("\"merchant\":\"{merchant}\""),
                "\"api\":\"/v1/payments\"".to_owned(),
                format!("\"status\":{status}"),
                format!("\"latency_ms\":{latency}"),
                "\"corr_id\":\"c-1\"".to_owned(),
            ];
            fields.extend(extras.iter().map(|(key, value)| format!("\"{key}\":{value}")));
            let count = fields.len();
            fields.rotate_left((order % count as u64) as usize);
            let text = format!("{{{}}}", fields.join(","));
            let parser = EventParser::new(&FieldMapping::default(), keep).expect("compiles");
            prop_assert!(fast::scan(&text, &parser.root, keep).is_some(), "{}", text);
            let fast = parser.parse(text.as_bytes(), TimeBounds::UNBOUNDED);
            let serde = parser.parse_without_fast_path(text.as_bytes(), TimeBounds::UNBOUNDED);
            prop_assert!(fast.is_ok(), "{} -> {:?}", text, fast);
            prop_assert_eq!(fast, serde, "{}", text);
        }
    }
}

#[test]
fn keys_sharing_their_first_eight_bytes_are_told_apart() {
    let mapping = FieldMapping {
        latency_ms: "/latency_total".into(),
        corr_id: "/latency_trace".into(),
        ..FieldMapping::default()
    };
    let parser = EventParser::new(&mapping, false).expect("compiles");
    let line = br#"{"ts":1795273445000,"merchant":"M","api":"a","status":200,"latency_trace":"t-1","latency_total":7.5}"#;
    let event = parser.parse(line, TimeBounds::UNBOUNDED).expect("valid");
    assert_eq!(event.latency_ms, 7.5);
    assert_eq!(event.corr_id, "t-1");
}

#[test]
fn control_characters_are_found_in_every_form() {
    assert!(has_control_character("a\u{7f}b"));
    assert!(has_control_character("a\u{85}b"));
    assert!(has_control_character("\u{1}"));
    assert!(!has_control_character("Müller & Co — ŝ"));
}

#[test]
fn the_mapping_schema_places_each_field_where_the_mapping_reads_it() {
    let mapping = FieldMapping {
        merchant: "/account/id".into(),
        api: "endpoint".into(),
        ..FieldMapping::default()
    };
    let schema = mapping.json_schema();
    assert_eq!(
        schema["properties"]["account"]["properties"]["id"]["type"],
        serde_json::json!(["string", "integer"])
    );
    assert_eq!(
        schema["properties"]["account"]["required"],
        serde_json::json!(["id"])
    );
    assert_eq!(schema["properties"]["endpoint"]["type"], "string");
    let required: Vec<&str> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|name| name.as_str())
        .collect();
    assert_eq!(
        required,
        [
            "ts",
            "account",
            "endpoint",
            "status",
            "latency_ms",
            "corr_id"
        ]
    );
    assert!(schema["properties"]["region"].is_object());
}
