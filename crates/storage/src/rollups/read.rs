//! Reading the store: the rollups of one series and the merchant-name index (hour rollups
//! are read in [`super::hours`]).

use super::{Store, decode_error, merchant_name_key, series_prefix, sortable, unsortable};
use crate::StorageError;
use crate::codec::{self, RollupView};

impl Store {
    /// Visits the stored rollups of one series, minutes in `[from_minute, to_minute)`, in order.
    pub fn scan_series(
        &self,
        merchant: &str,
        api: &str,
        from_minute: i64,
        to_minute: i64,
        mut visit: impl FnMut(i64, &RollupView<'_>),
    ) -> Result<(), StorageError> {
        let prefix = series_prefix(merchant, api);
        let mut start = prefix.clone();
        start.extend_from_slice(&sortable(from_minute));
        let mut end = prefix;
        end.extend_from_slice(&sortable(to_minute));
        for (_, day) in self.days_between(from_minute, to_minute) {
            for guard in day.rollups.range(start.as_slice()..end.as_slice()) {
                let (key, value) = guard.into_inner()?;
                let minute = unsortable(&key[key.len() - 8..]).unwrap_or_default();
                let view = codec::view_rollup(&value).map_err(decode_error("stored rollup"))?;
                visit(minute, &view);
            }
        }
        Ok(())
    }

    /// The last minute with calls of a known merchant (exact name), or `None` for a merchant the
    /// store has never seen or whose data has aged out.
    pub fn merchant_last_seen(&self, merchant: &str) -> Result<Option<i64>, StorageError> {
        Ok(self
            .merchants
            .get(merchant_name_key(merchant))?
            .and_then(|value| unsortable(&value)))
    }

    /// Known merchants whose name starts with `prefix`, ignoring case, in name order.
    pub fn search_merchants(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let mut names = Vec::new();
        for guard in self.merchants.prefix(prefix.to_lowercase().as_bytes()) {
            let key = guard.key()?;
            let Some(name) = key
                .iter()
                .position(|byte| *byte == 0)
                .and_then(|separator| std::str::from_utf8(&key[separator + 1..]).ok())
            else {
                continue;
            };
            names.push(name.to_owned());
            if names.len() >= limit {
                break;
            }
        }
        Ok(names)
    }
}
