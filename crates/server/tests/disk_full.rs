//! A full disk is a state the server leaves by itself: the data directory is put on a small
//! tmpfs mounted by the test and filled up with another file.

use std::time::Duration;

use mm_testkit::{ServerProcess, SmallDisk, calls, eventually, get, ingest, ndjson_line, now_us};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");

const CONFIG: &str = "[window]\ncheckpoint_interval = \"1s\"\n[storage]\nballast_bytes = 4194304\nwal_segment_bytes = 1048576\n";

fn start(disk: &SmallDisk) -> ServerProcess {
    let config = disk.path().join("config.toml");
    std::fs::write(&config, CONFIG).expect("config written");
    ServerProcess::start(
        EXE,
        &disk.path().join("data"),
        &["--config", config.to_str().expect("utf-8")],
        &[],
    )
}

fn batch(seed: u64, count: usize) -> Vec<u8> {
    calls(seed, count, 4, &["/v1/x", "/v1/y"], now_us(), 1)
        .iter()
        .map(ndjson_line)
        .collect::<String>()
        .into_bytes()
}

/// Calls the ranking counts over the last hour.
fn stored_calls(server: &ServerProcess) -> u64 {
    mm_testkit::ranked_calls(server.address)
}

fn metric(server: &ServerProcess, name: &str) -> Option<f64> {
    let text = String::from_utf8(get(server.address, "/metrics").body).ok()?;
    mm_testkit::metric_value(&text, name)
}

#[test]
fn a_full_disk_refuses_ingest_keeps_queries_and_recovers_by_itself() {
    let Some(disk) = SmallDisk::mount(48) else {
        return;
    };
    let server = start(&disk);
    assert_eq!(
        ingest(server.address, &batch(1, 2000))
            .expect("answers")
            .status,
        200
    );
    let filler = disk.fill();
    // The disk is full: a batch is refused with 507 and nothing of it is kept.
    let refused = eventually(Duration::from_secs(20), || {
        let response = ingest(server.address, &batch(2, 2000)).expect("answers");
        assert_ne!(
            response.status,
            500,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        (response.status == 507).then_some(response)
    })
    .expect("ingest answers 507 while the disk is full");
    assert_eq!(refused.json()["error"]["code"], "disk_full");
    assert!(refused.header("retry-after").is_some());
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("disk is full"), "{message}");
    let accepted_before = 2000.0;

    // Health tells the truth; a metric shows it.
    let ready = get(server.address, "/readyz");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["error"]["code"], "disk_full");
    let health = get(server.address, "/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "degraded");
    assert_eq!(metric(&server, "mm_storage_disk_full"), Some(1.0));
    assert_eq!(metric(&server, "mm_storage_writable"), Some(0.0));

    // Queries answer everything acknowledged.
    let visible = eventually(Duration::from_secs(20), || {
        (stored_calls(&server) == 2000).then_some(())
    });
    assert!(
        visible.is_some(),
        "acknowledged events stay visible: {}",
        stored_calls(&server)
    );
    assert_eq!(
        metric(&server, "mm_ingest_events_total"),
        Some(accepted_before)
    );

    // Space comes back: ingest resumes without a restart.
    std::fs::remove_file(&filler).expect("filler removed");
    let resumed = eventually(Duration::from_secs(30), || {
        let response = ingest(server.address, &batch(3, 1000)).expect("answers");
        (response.status == 200).then_some(())
    });
    assert!(resumed.is_some(), "ingest resumes once space is freed");
    assert_eq!(get(server.address, "/readyz").status, 200);
    assert_eq!(get(server.address, "/healthz").json()["status"], "ok");
    assert_eq!(metric(&server, "mm_storage_writable"), Some(1.0));
    let all = eventually(Duration::from_secs(20), || {
        (stored_calls(&server) == 3000).then_some(())
    });
    assert!(all.is_some(), "{}", stored_calls(&server));
    assert!(server.terminate(), "a clean exit");
}

#[test]
fn shutdown_while_the_disk_is_full_exits_cleanly_and_loses_nothing() {
    let Some(disk) = SmallDisk::mount(48) else {
        return;
    };
    let server = start(&disk);
    assert_eq!(
        ingest(server.address, &batch(4, 3000))
            .expect("answers")
            .status,
        200
    );
    let filler = disk.fill();
    let refused = eventually(Duration::from_secs(20), || {
        let response = ingest(server.address, &batch(5, 500)).expect("answers");
        (response.status == 507).then_some(())
    });
    assert!(refused.is_some(), "the full disk is noticed");
    assert!(
        server.terminate(),
        "SIGTERM in the disk-full state exits cleanly"
    );
    std::fs::remove_file(&filler).expect("filler removed");
    let restarted = start(&disk);
    let counted = eventually(Duration::from_secs(20), || {
        (stored_calls(&restarted) == 3000).then_some(())
    });
    assert!(
        counted.is_some(),
        "every acknowledged event is counted after the restart: {}",
        stored_calls(&restarted)
    );
}
