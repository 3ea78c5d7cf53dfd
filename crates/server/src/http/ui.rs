//! The web dashboard: the files of `web/` built into the binary (the `mm-web` crate), served at
//! `/`. Any other `GET` outside the API answers the dashboard's `index.html`, so its own
//! links (`/merchants/{merchant}?from=…&to=…`) open directly.
//!
//! Hashed files under `/assets/` are cached for good; `index.html` is revalidated every time.
//! `MM_WEB_DIR=web/dist` serves a directory instead of the embedded copy, for working on the
//! UI without rebuilding the server.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// Where the dashboard's files come from.
#[derive(Debug, Clone)]
pub enum Ui {
    Embedded,
    Directory(PathBuf),
}

impl Ui {
    /// The embedded copy, or the directory named by `MM_WEB_DIR`.
    pub fn from_env() -> Self {
        match std::env::var_os("MM_WEB_DIR") {
            Some(dir) if !dir.is_empty() => Self::Directory(PathBuf::from(dir)),
            _ => Self::Embedded,
        }
    }
}

/// One file to answer with.
struct Asset {
    content_type: &'static str,
    bytes: Body,
    gzipped: bool,
    immutable: bool,
}

/// The fallback route: the dashboard for `GET`/`HEAD` outside the API, a JSON 404 otherwise.
pub async fn serve(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    let api_path = path == "/v1" || path.starts_with("/v1/");
    if api_path || (method != Method::GET && method != Method::HEAD) {
        return super::routes::not_found().await.into_response();
    }
    let accepts_gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .any(|coding| coding.trim().starts_with("gzip"))
        });
    let found = match &state.ui {
        Ui::Embedded => embedded_asset(path, accepts_gzip),
        Ui::Directory(dir) => directory_asset(dir, path).await,
    };
    // A path that is not a file is one of the dashboard's own routes.
    let asset = match found {
        Some(asset) => asset,
        None if path.starts_with("/assets/") => {
            return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file")
                .into_response();
        }
        None => {
            let index = match &state.ui {
                Ui::Embedded => embedded_asset("/index.html", accepts_gzip),
                Ui::Directory(dir) => directory_asset(dir, "/index.html").await,
            };
            match index {
                Some(index) => index,
                None => {
                    return ApiError::new(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        "the dashboard is not available in this build",
                    )
                    .into_response();
                }
            }
        }
    };
    let mut response = if method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(asset.bytes)
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if asset.immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.gzipped {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

fn embedded_asset(path: &str, accepts_gzip: bool) -> Option<Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    let file = mm_web::file(path)?;
    let (bytes, gzipped) = match file.gzip {
        Some(compressed) if accepts_gzip => (compressed, true),
        _ => (file.bytes, false),
    };
    Some(Asset {
        content_type: file.content_type,
        bytes: Body::from(bytes),
        gzipped,
        immutable: path.starts_with("/assets/"),
    })
}

async fn directory_asset(dir: &std::path::Path, path: &str) -> Option<Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    // Only plain relative components: no way out of the directory.
    let relative = path.trim_start_matches('/');
    if relative
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == ".." || part.contains('\\'))
    {
        return None;
    }
    let bytes = tokio::fs::read(dir.join(relative)).await.ok()?;
    Some(Asset {
        content_type: mm_web::content_type::for_path(relative),
        bytes: Body::from(bytes),
        gzipped: false,
        immutable: false,
    })
}
