//! The web dashboard as the server serves it: embedded files, client-side routes, caching,
//! gzip, and a directory served instead with `MM_WEB_DIR`.

use std::io::Read;

use mm_testkit::{ServerProcess, get, request};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");

#[test]
fn the_embedded_dashboard_is_served_at_the_root_and_for_its_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(EXE, dir.path(), &[], &[]);

    let index = get(server.address, "/");
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    let html = String::from_utf8(index.body.clone()).expect("utf-8");
    let script = html
        .split("src=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .find(|source| source.starts_with("/assets/") && source.ends_with(".js"))
        .unwrap_or_else(|| panic!("index.html loads no /assets/*.js (was the UI built?):\n{html}"))
        .to_owned();

    // The dashboard's own links open directly: any non-API path answers index.html.
    for route in [
        "/merchants/DuffMobility718APP?from=2026-11-21T10:00:00Z&to=2026-11-21T11:00:00Z",
        "/events/9ef23f7adda447943b8794948ea202f1",
    ] {
        let page = get(server.address, route);
        assert_eq!(page.status, 200, "{route}");
        assert_eq!(page.body, index.body, "{route} answers index.html");
    }

    // Hashed assets are cached for good, and sent gzip-compressed to clients that accept it.
    let plain = get(server.address, &script);
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        plain.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(plain.header("content-encoding"), None);
    let compressed = request(
        server.address,
        "GET",
        &script,
        &[("Accept-Encoding", "gzip, br")],
        b"",
    )
    .expect("answers");
    assert_eq!(compressed.header("content-encoding"), Some("gzip"));
    assert!(compressed.body.len() < plain.body.len());
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(compressed.body.as_slice())
        .read_to_end(&mut unzipped)
        .expect("valid gzip");
    assert_eq!(unzipped, plain.body);

    // A missing asset and anything under /v1 stay JSON 404s, as does a non-GET request.
    for (method, path) in [
        ("GET", "/assets/missing-0000.js"),
        ("GET", "/v1/nothing-here"),
        ("POST", "/merchants/x"),
    ] {
        let response = request(server.address, method, path, &[], b"").expect("answers");
        assert_eq!(response.status, 404, "{method} {path}");
        assert_eq!(
            response.json()["error"]["code"],
            "not_found",
            "{method} {path}"
        );
    }
}

#[test]
fn a_directory_named_by_mm_web_dir_is_served_instead() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The served directory and, beside it, a file no request may reach: `web/../secret.txt`
    // names it, so a path that climbs out of `web` would find it.
    let parent = tempfile::tempdir().expect("tempdir");
    let web = parent.path().join("web");
    std::fs::create_dir_all(web.join("assets")).expect("mkdir");
    std::fs::write(web.join("index.html"), "<!doctype html><p>from a directory").expect("write");
    std::fs::write(web.join("assets/app.css"), "p { color: red }").expect("write");
    let secret = parent.path().join("secret.txt");
    std::fs::write(&secret, "not for the web").expect("write");
    assert_eq!(
        std::fs::read(web.join("assets/../../secret.txt")).expect("the secret is one level up"),
        b"not for the web"
    );
    let web_dir = web.to_str().expect("utf-8 path");
    let server = ServerProcess::start(EXE, dir.path(), &[], &[("MM_WEB_DIR", web_dir)]);

    let index = get(server.address, "/merchants/m0");
    assert_eq!(index.status, 200);
    assert_eq!(index.body, b"<!doctype html><p>from a directory");
    let css = get(server.address, "/assets/app.css");
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.body, b"p { color: red }");
    // No path leads out of the directory: outside `/assets/` a path that is not a file of the
    // directory is one of the dashboard's routes (index.html), under it a 404.
    for (path, status, body) in [
        ("/../secret.txt", 200, Some(&index.body)),
        ("/%2e%2e/secret.txt", 200, Some(&index.body)),
        ("/assets/../../secret.txt", 404, None),
        ("/assets/%2e%2e/%2e%2e/secret.txt", 404, None),
    ] {
        let response = get(server.address, path);
        assert_eq!(response.status, status, "{path}");
        if let Some(body) = body {
            assert_eq!(&response.body, body, "{path} answers index.html");
        } else {
            assert_eq!(response.json()["error"]["code"], "not_found", "{path}");
        }
        assert_ne!(response.body, b"not for the web", "{path}");
    }
}
