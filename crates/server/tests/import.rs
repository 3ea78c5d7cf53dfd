//! `merchant-monitor import` as a user runs it: into a data directory a server then serves,
//! with live traffic after it, and killed in the middle of a file.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mm_model::ApiCall;
use mm_model::rollup::MERCHANT_TOTAL_API;
use mm_model::time::{MICROS_PER_MINUTE, format_rfc3339, minute_of};
use mm_testkit::{ServerProcess, calls, eventually, get, ingest, ndjson_line, now_us, oracle};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");
const MERCHANTS: usize = 6;
const APIS: [&str; 3] = ["/v1/payments", "/v1/refunds", "/v1/payouts"];

fn write_input(path: &Path, events: &[ApiCall]) {
    let text: String = events.iter().map(ndjson_line).collect();
    std::fs::write(path, text).expect("input written");
}

fn import(data: &Path, file: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(EXE)
        .args(["import", "--quiet", "--data-dir"])
        .arg(data)
        .args(extra)
        .arg(file)
        .output()
        .expect("import runs")
}

/// Every merchant's calls and 5xx per minute, as the API answers them, against the fold.
fn assert_served(server: &ServerProcess, events: &[ApiCall]) {
    let expected = oracle(events);
    let from = events
        .iter()
        .map(|event| event.ts_us)
        .min()
        .expect("events");
    let to = events
        .iter()
        .map(|event| event.ts_us)
        .max()
        .expect("events")
        + MICROS_PER_MINUTE;
    let mut last = String::new();
    let matched = eventually(Duration::from_secs(30), || {
        for merchant in 0..MERCHANTS {
            let merchant = format!("m{merchant}");
            let answer = get(
                server.address,
                &format!(
                    "/v1/merchants/{merchant}/activity?from={}&to={}&step=1m",
                    format_rfc3339(minute_of(from) * MICROS_PER_MINUTE),
                    format_rfc3339(to)
                ),
            )
            .json();
            let mut got: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
            for bucket in answer["buckets"].as_array()? {
                let start = mm_model::time::parse_rfc3339(bucket["start"].as_str()?).ok()?;
                let calls = bucket["calls"].as_u64()?;
                if calls > 0 {
                    got.insert(minute_of(start), (calls, bucket["status_5xx"].as_u64()?));
                }
            }
            let want: BTreeMap<i64, (u64, u64)> = expected
                .iter()
                .filter(|(key, _)| key.merchant == merchant && key.api == MERCHANT_TOTAL_API)
                .map(|(key, rollup)| (key.minute, (rollup.calls, rollup.classes().status_5xx)))
                .collect();
            if got != want {
                last = format!("{merchant}: got {got:?}\nwant {want:?}");
                return None;
            }
        }
        Some(())
    });
    assert!(
        matched.is_some(),
        "served activity never matched the fold: {last}"
    );
}

#[test]
fn imported_history_is_served_and_live_calls_into_its_open_windows_count_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Three hours up to now: the last minutes are windows a starting server still counts into.
    let history = calls(5, 30_000, MERCHANTS, &APIS, now_us(), 180);
    let file = dir.path().join("history.ndjson");
    write_input(&file, &history);
    let output = import(&data, &file, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("30000 imported"), "{summary}");

    let server = ServerProcess::start(EXE, &data, &[], &[]);
    // Live calls for the same recent minutes, after the import.
    let live = calls(6, 3_000, MERCHANTS, &APIS, now_us(), 2);
    let body: String = live.iter().map(ndjson_line).collect();
    let response = ingest(server.address, body.as_bytes()).expect("answers");
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let all: Vec<ApiCall> = history.iter().chain(&live).cloned().collect();
    assert_served(&server, &all);
    // An imported call is found by its correlation id.
    let sample = &history[12_345];
    let found = get(server.address, &format!("/v1/events/{}", sample.corr_id)).json();
    assert_eq!(
        found["events"][0]["merchant"],
        sample.merchant.as_str(),
        "{found}"
    );
    assert!(server.terminate());

    // And after a restart.
    let server = ServerProcess::start(EXE, &data, &[], &[]);
    assert_served(&server, &all);
    assert!(server.terminate());
}

/// The import of `files` (cut from `history`) killed several times once it has committed
/// some units, then run to its end: the server serves every call once.
fn killed_and_continued(data: &Path, files: &[std::path::PathBuf], history: &[ApiCall]) {
    let manifest = data.join("archive").join("MANIFEST.json");
    let mut kills = 0;
    for attempt in 0..20 {
        let mut child = Command::new(EXE)
            .args(["import", "--quiet", "--unit-mib", "1", "--data-dir"])
            .arg(data)
            .args(files)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("import starts");
        // Killed once it has committed some units (more each attempt), before it is done.
        let committed = |units: usize| {
            std::fs::read_to_string(&manifest)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|manifest| {
                    manifest["segments"]
                        .as_array()
                        .map(|segments| segments.len() >= units)
                })
                .unwrap_or(false)
        };
        let killed = eventually(Duration::from_secs(60), || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(false);
            }
            committed(2 + 4 * attempt).then_some(true)
        });
        if killed == Some(true) {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let status = child.wait().expect("exits");
        if killed == Some(false) && status.success() {
            break;
        }
    }
    assert!(
        kills >= 2,
        "the import was killed midway at least twice ({kills})"
    );
    let output = Command::new(EXE)
        .args(["import", "--quiet", "--unit-mib", "1", "--data-dir"])
        .arg(data)
        .args(files)
        .output()
        .expect("import runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let server = ServerProcess::start(EXE, data, &[], &[]);
    assert_served(&server, history);
    // Every archived event once: each merchant's lookups by correlation id for a sample.
    for event in history.iter().step_by(9_973) {
        let found = get(server.address, &format!("/v1/events/{}", event.corr_id)).json();
        assert_eq!(found["events"].as_array().map(Vec::len), Some(1), "{found}");
    }
    assert!(server.terminate());
}

fn killed_history() -> Vec<ApiCall> {
    calls(
        9,
        200_000,
        MERCHANTS,
        &APIS,
        now_us() - 30 * MICROS_PER_MINUTE,
        600,
    )
}

#[test]
fn an_import_killed_mid_file_continues_and_counts_every_event_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = killed_history();
    let file = dir.path().join("history.ndjson");
    write_input(&file, &history);
    killed_and_continued(&dir.path().join("data"), &[file], &history);
}

#[test]
fn an_import_of_many_files_killed_in_units_spanning_them_continues_and_counts_every_event_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = killed_history();
    // 40 logs of about 1.3 MB: units of 1 MiB end in one file and begin in the one before.
    let files: Vec<std::path::PathBuf> = history
        .chunks(5_000)
        .enumerate()
        .map(|(index, calls)| {
            let file = dir.path().join(format!("history-{index:02}.ndjson"));
            write_input(&file, calls);
            file
        })
        .collect();
    killed_and_continued(&dir.path().join("data"), &files, &history);
}

#[test]
fn a_log_imported_again_after_it_grew_counts_only_its_new_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let history = calls(
        13,
        20_000,
        MERCHANTS,
        &APIS,
        now_us() - 30 * MICROS_PER_MINUTE,
        120,
    );
    // The log as it was at the first import, then as it is after more calls were appended.
    let file = dir.path().join("api.log");
    let run = |file: &Path| {
        let output = import(&data, file, &[]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    write_input(&file, &history[..12_000]);
    let first = run(&file);
    assert!(first.contains("12000 imported by this run"), "{first}");
    write_input(&file, &history);
    let second = run(&file);
    assert!(
        second.contains("20000 imported, 0 rejected (8000 imported by this run"),
        "{second}"
    );
    let third = run(&file);
    assert!(third.contains("already imported (20000 events)"), "{third}");
    let copy = dir.path().join("api.log.1");
    std::fs::copy(&file, &copy).expect("copied");
    let fourth = run(&copy);
    assert!(
        fourth.contains(&format!("already imported as {}", file.display())),
        "{fourth}"
    );

    let server = ServerProcess::start(EXE, &data, &[], &[]);
    assert_served(&server, &history);
    assert!(server.terminate());
}

#[test]
fn a_directory_of_rotated_logs_imports_in_one_command_reporting_each_file_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let history = calls(
        17,
        30_000,
        MERCHANTS,
        &APIS,
        now_us() - 30 * MICROS_PER_MINUTE,
        120,
    );
    // Six rotated logs, then a copy of the first under another name.
    let mut files: Vec<std::path::PathBuf> = history
        .chunks(5_000)
        .enumerate()
        .map(|(index, calls)| {
            let file = dir.path().join(format!("api-{index}.log"));
            write_input(&file, calls);
            file
        })
        .collect();
    let copy = dir.path().join("api-0.log.bak");
    std::fs::copy(&files[0], &copy).expect("copied");
    files.push(copy.clone());
    let output = Command::new(EXE)
        .args(["import", "--quiet", "--data-dir"])
        .arg(&data)
        .args(&files)
        .output()
        .expect("import runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), files.len() + 1, "{stdout}");
    for (line, file) in lines.iter().zip(&files[..6]) {
        assert!(
            line.starts_with(&format!(
                "{}: 5000 records, 5000 imported, 0 rejected (5000 imported by this run",
                file.display()
            )),
            "{stdout}"
        );
    }
    assert!(
        lines[6].starts_with(&format!(
            "{}: already imported as {}",
            copy.display(),
            files[0].display()
        )),
        "{stdout}"
    );
    assert!(
        lines[7].starts_with("7 files: 30000 events imported"),
        "{stdout}"
    );
    let server = ServerProcess::start(EXE, &data, &[], &[]);
    assert_served(&server, &history);
    assert!(server.terminate());
}

#[test]
fn a_file_that_cannot_be_read_fails_the_import_naming_it_and_its_cause_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.ndjson");
    let output = import(&dir.path().join("data"), &missing, &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!("error: reading {}", missing.display())),
        "{stderr}"
    );
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
}

/// Calls per minute of the whole ranking (every merchant) over `[from, to)`.
fn ranked_total(server: &ServerProcess, from: i64, to: i64) -> u64 {
    let answer = get(
        server.address,
        &format!(
            "/v1/merchants?sort=calls&limit=1000&from={}&to={}",
            format_rfc3339(from),
            format_rfc3339(to)
        ),
    )
    .json();
    answer["merchants"]
        .as_array()
        .expect("merchants")
        .iter()
        .map(|row| row["calls"].as_u64().expect("calls"))
        .sum()
}

#[test]
fn the_demo_on_an_empty_directory_starts_with_history_and_only_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let args = ["--backfill", "30m", "--rate", "100", "--merchants", "50"];
    let started = now_us();
    let server = ServerProcess::start_command(EXE, "demo", &data, &args, &[]);
    // Whole minutes of history: from 30 minutes before the start to 2 minutes before it.
    let from = (minute_of(started) - 30) * MICROS_PER_MINUTE;
    let to = (minute_of(started) - 2) * MICROS_PER_MINUTE;
    let total = ranked_total(&server, from, to);
    let expected = 100.0 * 28.0 * 60.0;
    assert!(
        (total as f64 - expected).abs() < expected * 0.05,
        "about 100 calls a second of history: {total} in 28 minutes"
    );
    // Every minute of it, not a line that starts at the end.
    let top =
        get(server.address, "/v1/merchants?sort=calls&limit=1").json()["merchants"][0]["merchant"]
            .as_str()
            .expect("a merchant")
            .to_owned();
    let activity = get(
        server.address,
        &format!(
            "/v1/merchants/{top}/activity?from={}&to={}&step=1m",
            format_rfc3339(from),
            format_rfc3339(to)
        ),
    )
    .json();
    let busy = activity["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .filter(|bucket| bucket["calls"].as_u64().unwrap_or(0) > 0)
        .count();
    assert_eq!(
        busy, 28,
        "the busiest merchant has calls in every minute of history"
    );
    assert!(server.terminate());

    // A second start keeps what is there and does not backfill again.
    let server = ServerProcess::start_command(EXE, "demo", &data, &args, &[]);
    assert_eq!(ranked_total(&server, from, to), total);
    assert!(server.terminate());
}
