//! The web dashboard's files, built from `web/` by this crate's build script (`npm run
//! build`) and embedded: each file as is and, when that is smaller, gzip-compressed too. A
//! crate of its own so that a change to the dashboard rebuilds this crate and relinks the
//! binary, and nothing else.
//!
//! When Node.js/npm is missing or the build fails, [`ASSETS`] holds one page saying why
//! (and cargo prints a warning); `MM_SKIP_WEB_BUILD=1` skips the build on purpose.

pub mod content_type;

/// One file of the dashboard.
#[derive(Debug)]
pub struct EmbeddedFile {
    /// Its URL path, from `/`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
    /// The same bytes gzip-compressed, when that is smaller.
    pub gzip: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The embedded file at URL path `path` (from `/`).
pub fn file(path: &str) -> Option<&'static EmbeddedFile> {
    ASSETS.iter().find(|file| file.path == path)
}
