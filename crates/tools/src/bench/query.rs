//! The query benchmark: one merchant over 24 h at 1-minute step and over 30 days at 1-hour
//! step, per-API tables and the ranking over 24 h and 30 days, with 10,000 merchants stored.
//! Each query's first read of each merchant after the store opens is reported on its own.

use std::path::Path;
use std::time::Instant;

use mm_model::rollup::{Rollup, WindowKey};
use mm_model::time::{MICROS_PER_MINUTE, now_us};
use mm_query::{ApiSort, MerchantSort, Period, Step};
use mm_storage::rollups::{CheckpointBatch, RollupStore};

use super::{BenchArgs, percentile};

const QUERY_MERCHANTS: usize = 10_000;
/// The merchants with every minute of every API stored (every minute of the month for their
/// merchant-wide series): the ones whose activity and API tables are measured.
const BUSIEST: usize = 50;
const APIS: [&str; 12] = [
    "/v1/payments",
    "/v1/payments/captures",
    "/v1/refunds",
    "/v1/payouts",
    "/v1/authorizations",
    "/v1/tokens",
    "/v1/customers",
    "/v1/balance",
    "/v1/disputes",
    "/v1/webhooks",
    "/v1/payment_methods",
    "/v1/sessions",
];

/// Fills a store with 24 h of rollups for 10,000 merchants: the busiest have every minute of
/// every API, the tail a thinning share of minutes; and 29 days before with merchant-wide
/// rollups, every minute for the 50 busiest merchants and about one minute an hour for the
/// others, thinning down the tail. Returns how many rollups it stored.
fn build_query_store(store: &RollupStore, end_minute: i64) -> anyhow::Result<u64> {
    let mut template = Rollup::default();
    for (index, latency) in [12.0, 35.5, 80.0, 150.0, 180.0, 210.0, 400.0, 1200.0]
        .iter()
        .enumerate()
    {
        template.record(if index == 7 { 503 } else { 200 }, *latency);
    }
    let mut stored = 0u64;
    let mut finals = Vec::new();
    let flush = |finals: &mut Vec<(WindowKey, Rollup)>| -> anyhow::Result<()> {
        let prepared = store.prepare(CheckpointBatch {
            finals: std::mem::take(finals),
            ..CheckpointBatch::default()
        })?;
        store.commit(prepared)?;
        Ok(())
    };
    for rank in 0..QUERY_MERCHANTS {
        let merchant = format!("merchant-{rank:05}");
        let every = 1 + rank / 50;
        let api_count = if rank < BUSIEST { APIS.len() } else { 3 };
        for minute in (end_minute - 1440..end_minute).step_by(every) {
            let mut total = Rollup::default();
            for api in &APIS[..api_count] {
                total.merge(&template);
                finals.push((
                    WindowKey {
                        merchant: merchant.clone(),
                        api: (*api).to_owned(),
                        minute,
                    },
                    template.clone(),
                ));
            }
            finals.push((
                WindowKey {
                    merchant: merchant.clone(),
                    api: String::new(),
                    minute,
                },
                total,
            ));
            stored += api_count as u64 + 1;
        }
        if finals.len() > 50_000 {
            flush(&mut finals)?;
        }
    }
    // The 29 days before: merchant-wide rollups, every minute for the busiest merchants (whose
    // month the activity query reads), one minute an hour for the next and thinning down the
    // tail, so rankings over 30 days have history to add up.
    for rank in 0..QUERY_MERCHANTS {
        let merchant = format!("merchant-{rank:05}");
        let every = 1 + rank as i64 / 500;
        let first_hour = (end_minute - 30 * 1440).div_euclid(60);
        let last_hour = (end_minute - 1440).div_euclid(60);
        let minutes: Vec<i64> = if rank < BUSIEST {
            (first_hour * 60..end_minute - 1440).collect()
        } else {
            (first_hour..last_hour)
                .filter(|hour| hour % every == 0)
                .map(|hour| hour * 60 + rank as i64 % 60)
                .collect()
        };
        for minute in minutes {
            if minute >= end_minute - 1440 || minute < end_minute - 30 * 1440 {
                continue;
            }
            finals.push((
                WindowKey {
                    merchant: merchant.clone(),
                    api: String::new(),
                    minute,
                },
                template.clone(),
            ));
            stored += 1;
        }
        if finals.len() > 50_000 {
            flush(&mut finals)?;
        }
    }
    flush(&mut finals)?;
    Ok(stored)
}

pub(super) fn bench_query(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let dir = work_dir.join("query-store");
    // Named for the store's shape: a store of another shape is built again.
    let marker = dir.join("built-until-minute-month-of-busiest");
    let end_minute = match std::fs::read_to_string(&marker)
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
    {
        Some(minute) => minute,
        None => {
            let _ = std::fs::remove_dir_all(&dir);
            let store = RollupStore::open(&dir)?;
            let end_minute = mm_model::time::minute_of(now_us());
            let started = Instant::now();
            let stored = build_query_store(&store, end_minute)?;
            println!(
                "query: stored {stored} rollups for {QUERY_MERCHANTS} merchants in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            drop(store);
            std::fs::write(&marker, end_minute.to_string())?;
            end_minute
        }
    };
    let store = RollupStore::open(&dir)?;
    let period = Period {
        from_us: (end_minute - 1440) * MICROS_PER_MINUTE,
        to_us: end_minute * MICROS_PER_MINUTE,
    };
    let iterations = 100 * args.runs.max(1);
    // Each query first reads every measured merchant once, timed apart: the first read of a
    // merchant after the store opens fills the block cache from disk (up to tens of
    // milliseconds); the runs after it are what a dashboard that stays up sees.
    let measure = |name: &str,
                   mut query: Box<dyn FnMut(usize) -> anyhow::Result<usize> + '_>|
     -> anyhow::Result<()> {
        let mut time = |iteration: usize| -> anyhow::Result<(f64, usize)> {
            let started = Instant::now();
            let size = query(iteration)?;
            Ok((started.elapsed().as_secs_f64() * 1000.0, size))
        };
        let mut first = Vec::with_capacity(BUSIEST);
        for iteration in 0..BUSIEST {
            first.push(time(iteration)?.0);
        }
        first.sort_by(f64::total_cmp);
        let mut timings = Vec::with_capacity(iterations);
        let mut size = 0;
        for iteration in BUSIEST..BUSIEST + iterations {
            let (elapsed, rows) = time(iteration)?;
            timings.push(elapsed);
            size = rows;
        }
        timings.sort_by(f64::total_cmp);
        println!(
            "query {name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({iterations} runs, {size} rows); first read of each merchant after open: p50 {:.2} ms, max {:.2} ms",
            percentile(&timings, 0.5),
            percentile(&timings, 0.99),
            timings.last().copied().unwrap_or_default(),
            percentile(&first, 0.5),
            first.last().copied().unwrap_or_default(),
        );
        Ok(())
    };
    measure(
        "activity 24h step=1m (busiest merchants)",
        Box::new(|iteration| {
            let merchant = format!("merchant-{:05}", iteration % BUSIEST);
            Ok(
                mm_query::activity(&store, &merchant, None, period, Step::OneMinute)?
                    .buckets
                    .len(),
            )
        }),
    )?;
    measure(
        "activity 24h step=1m api=/v1/payments",
        Box::new(|iteration| {
            let merchant = format!("merchant-{:05}", iteration % BUSIEST);
            Ok(mm_query::activity(
                &store,
                &merchant,
                Some("/v1/payments"),
                period,
                Step::OneMinute,
            )?
            .buckets
            .len())
        }),
    )?;
    measure(
        "apis 24h (busiest merchants)",
        Box::new(|iteration| {
            let merchant = format!("merchant-{:05}", iteration % BUSIEST);
            Ok(mm_query::apis(&store, &merchant, period, ApiSort::Calls)?
                .apis
                .len())
        }),
    )?;
    let month = Period {
        from_us: (end_minute - 30 * 1440) * MICROS_PER_MINUTE,
        to_us: end_minute * MICROS_PER_MINUTE,
    };
    measure(
        "activity 30d step=1h (busiest merchants)",
        Box::new(|iteration| {
            let merchant = format!("merchant-{:05}", iteration % BUSIEST);
            Ok(
                mm_query::activity(&store, &merchant, None, month, Step::OneHour)?
                    .buckets
                    .len(),
            )
        }),
    )?;
    for (name, period, sort) in [
        ("merchants 24h top 50 by calls", period, MerchantSort::Calls),
        (
            "merchants 24h top 50 by error rate",
            period,
            MerchantSort::ErrorRate,
        ),
        ("merchants 30d top 50 by calls", month, MerchantSort::Calls),
    ] {
        let store = &store;
        measure(
            name,
            Box::new(move |_| {
                Ok(mm_query::merchants(store, period, sort, 50)?
                    .merchants
                    .len())
            }),
        )?;
    }
    Ok(())
}
