use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use mm_model::event::ApiCallRef;

use super::*;

fn event(index: usize) -> ApiCallRef<'static> {
    ApiCallRef {
        ts_us: 1_795_273_445_000_000 + index as i64,
        merchant: Cow::Owned(format!("M{index}")),
        api: Cow::Borrowed("/v1/payments"),
        status: 200,
        latency_ms: index as f64,
        corr_id: Cow::Owned(format!("c{index}")),
        partner: None,
        method: None,
        path: None,
        host: None,
        region: None,
        attributes: None,
    }
}

fn start(
    dir: &std::path::Path,
    next_lsn: u64,
    segment_bytes: u64,
) -> (
    Wal,
    std::sync::mpsc::Receiver<CommittedBatch>,
    Arc<AtomicU64>,
) {
    let (committed_tx, committed_rx) = std::sync::mpsc::sync_channel(1024);
    let checkpointed = Arc::new(AtomicU64::new(0));
    let mut config = WalConfig::new(dir);
    config.segment_bytes = segment_bytes;
    let wal = Wal::start(config, next_lsn, committed_tx, checkpointed.clone()).expect("wal starts");
    (wal, committed_rx, checkpointed)
}

#[test]
fn appended_batches_replay_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, committed_rx, _) = start(dir.path(), 1, 512);
    let mut tickets = Vec::new();
    for index in 0..50 {
        let events = [event(index)];
        tickets.push(
            wal.append_blocking(encode_batch(events.iter()))
                .expect("queued"),
        );
    }
    for (index, ticket) in tickets.into_iter().enumerate() {
        assert_eq!(
            ticket.blocking_recv().expect("answered"),
            Ok(index as u64 + 1)
        );
    }
    wal.shutdown();
    let forwarded: Vec<u64> = committed_rx.try_iter().map(|batch| batch.lsn).collect();
    assert_eq!(forwarded, (1..=50).collect::<Vec<_>>());
    assert!(
        list_segments(dir.path()).expect("list").len() > 1,
        "small segments roll"
    );

    let mut seen = Vec::new();
    let report = replay(dir.path(), 20, |lsn, payload| {
        decode_batch(payload, |decoded| {
            seen.push((lsn, decoded.merchant.into_owned()))
        })
        .expect("decodes");
        Ok(())
    })
    .expect("replays");
    assert_eq!(report.last_lsn, 50);
    assert_eq!(report.replayed, 30);
    assert_eq!(seen.first(), Some(&(21, "M20".to_owned())));
    assert_eq!(seen.len(), 30);
}

#[test]
fn torn_tail_is_truncated_and_the_rest_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _committed_rx, _) = start(dir.path(), 1, 1 << 30);
    for index in 0..10 {
        let events = [event(index)];
        wal.append_blocking(encode_batch(events.iter()))
            .expect("queued")
            .blocking_recv()
            .expect("answered")
            .expect("durable");
    }
    wal.shutdown();
    let (_, path) = list_segments(dir.path())
        .expect("list")
        .pop()
        .expect("one segment");
    let length = std::fs::metadata(&path).expect("stat").len();
    // Cut the last frame in half, as a crash during its write would.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(length - 7)
        .expect("truncate");
    let report = replay(dir.path(), 0, |_, _| Ok(())).expect("replays");
    assert_eq!(report.last_lsn, 9);
    assert!(report.truncated_bytes > 0);
    // Flip a byte inside a payload: the CRC catches it.
    let mut bytes = std::fs::read(&path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    let report = replay(dir.path(), 0, |_, _| Ok(())).expect("replays");
    assert!(report.last_lsn < 9);
    // A writer restarted after the truncation continues the sequence.
    let (wal, _rx, _) = start(dir.path(), report.last_lsn + 1, 1 << 30);
    let events = [event(99)];
    let lsn = wal
        .append_blocking(encode_batch(events.iter()))
        .expect("queued")
        .blocking_recv()
        .expect("answered")
        .expect("durable");
    assert_eq!(lsn, report.last_lsn + 1);
    wal.shutdown();
    let report_after = replay(dir.path(), 0, |_, _| Ok(())).expect("replays");
    assert_eq!(report_after.last_lsn, lsn);
}

#[test]
fn checkpointed_segments_are_deleted_on_roll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _committed_rx, checkpointed) = start(dir.path(), 1, 256);
    for index in 0..20 {
        let events = [event(index)];
        wal.append_blocking(encode_batch(events.iter()))
            .expect("queued")
            .blocking_recv()
            .expect("answered")
            .expect("durable");
    }
    let before = list_segments(dir.path()).expect("list").len();
    checkpointed.store(20, std::sync::atomic::Ordering::Release);
    for index in 20..25 {
        let events = [event(index)];
        wal.append_blocking(encode_batch(events.iter()))
            .expect("queued")
            .blocking_recv()
            .expect("answered")
            .expect("durable");
    }
    wal.shutdown();
    let after = list_segments(dir.path()).expect("list");
    assert!(
        after.len() < before,
        "{} segments before, {} after",
        before,
        after.len()
    );
    let report = replay(dir.path(), 20, |_, _| Ok(())).expect("replays");
    assert_eq!(report.replayed, 5);
}
