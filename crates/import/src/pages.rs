//! Base pages for the process while an import runs.
//!
//! An import allocates and frees large buffers all the time (chunks, columns, units,
//! segments). With transparent huge pages each fresh touch of such memory makes the kernel
//! zero a whole 2 MiB page: measured on a 2M-event import, 3.7 s of system time against 1.0 s
//! with base pages, and a tenth of the wall time. The aggregator of a running server is faster
//! with huge pages (its large maps miss the TLB less), so the setting is put back afterwards.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Imports running in this process (the setting is the process's), and whether huge pages
/// were off before the first of them began.
static RUNNING: Mutex<(usize, bool)> = Mutex::new((0, false));

fn running() -> MutexGuard<'static, (usize, bool)> {
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Transparent huge pages are off for the process until the last of these is dropped.
#[derive(Debug)]
pub(crate) struct BasePages(());

impl BasePages {
    pub(crate) fn new() -> Self {
        let mut running = running();
        if running.0 == 0 {
            running.1 = is_off();
            if !running.1 {
                set_off(true);
            }
        }
        running.0 += 1;
        Self(())
    }
}

impl Drop for BasePages {
    fn drop(&mut self) {
        let mut running = running();
        running.0 -= 1;
        if running.0 == 0 && !running.1 {
            set_off(false);
        }
    }
}

fn is_off() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: PR_GET_THP_DISABLE takes no pointer and only returns the process's flag.
    let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
    flag == 1
}

fn set_off(off: bool) {
    #[allow(unsafe_code)]
    // SAFETY: PR_SET_THP_DISABLE takes a flag and no pointer; it only changes how later page
    // faults of this process are served.
    let result =
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, libc::c_ulong::from(off), 0, 0, 0) };
    if result != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "transparent huge pages setting unchanged"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_off_while_an_import_runs_and_as_before_afterwards() {
        {
            let _pages = BasePages::new();
            assert!(is_off());
            {
                let _nested = BasePages::new();
            }
            assert!(
                is_off(),
                "an import that ends leaves them off for one still running"
            );
        }
        // Other tests of this binary may be importing: once none is, the setting is back.
        let running = running();
        if running.0 == 0 {
            assert_eq!(is_off(), running.1);
        }
    }
}
