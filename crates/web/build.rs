//! Builds the web dashboard (`web/`, Vite) and embeds its files in the binary.
//!
//! The UI is built into `OUT_DIR` with the project's own `npm run build`, so a plain
//! `cargo build` produces a binary that serves the dashboard at `/`. Each file is embedded
//! as is and, when that makes it smaller, gzip-compressed too, so the server answers
//! `Accept-Encoding: gzip` without compressing per request.
//!
//! When Node.js/npm is missing or the build fails, the binary still builds: it embeds a
//! page saying that the dashboard was not built and why (and cargo prints a warning).
//! `MM_SKIP_WEB_BUILD=1` skips the UI build on purpose.

#[path = "src/content_type.rs"]
mod content_type;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let web = manifest.join("../../web");
    for watched in [
        "src",
        "public",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        // Only existing paths: cargo reruns a build script on every build for a missing one.
        if web.join(watched).exists() || watched == "package.json" {
            println!("cargo:rerun-if-changed={}", web.join(watched).display());
        }
    }
    println!("cargo:rerun-if-env-changed=MM_SKIP_WEB_BUILD");

    let dist = out.join("web");
    let outcome = if std::env::var_os("MM_SKIP_WEB_BUILD").is_some() {
        Err("the build skipped it (MM_SKIP_WEB_BUILD is set)".to_owned())
    } else if !web.join("package.json").exists() {
        Err("web/package.json is missing".to_owned())
    } else {
        build_ui(&web, &dist)
    };
    let files = match outcome {
        Ok(()) => collect(&dist),
        Err(reason) => {
            // Cargo shows one line per warning.
            let one_line = reason.lines().collect::<Vec<_>>().join(" | ");
            println!("cargo:warning=the web dashboard is not embedded: {one_line}");
            let page = placeholder(&reason);
            let _ = std::fs::remove_dir_all(&dist);
            std::fs::create_dir_all(&dist).expect("create the UI output directory");
            std::fs::write(dist.join("index.html"), page).expect("write the placeholder page");
            collect(&dist)
        }
    };
    write_table(&out, &dist, &files);
}

/// `npm ci` when dependencies are missing, then `npm run build -- --outDir DIST`.
fn build_ui(web: &Path, dist: &Path) -> Result<(), String> {
    if !web.join("node_modules").exists() {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(web))?;
    }
    run(Command::new("npm")
        .args(["run", "build", "--", "--outDir"])
        .arg(dist)
        .arg("--emptyOutDir")
        .current_dir(web))?;
    if dist.join("index.html").exists() {
        Ok(())
    } else {
        Err(format!(
            "the UI build wrote no {}",
            dist.join("index.html").display()
        ))
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let output = command.output().map_err(|error| {
        format!("{shown} could not start ({error}); install Node.js 20+ and npm")
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tail: String = format!("{stdout}\n{stderr}")
        .lines()
        .rev()
        .filter(|line| !line.trim().is_empty())
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    Err(format!("{shown} failed ({}):\n{tail}", output.status))
}

/// Every file under `dir`, as paths relative to it with `/` separators, sorted.
fn collect(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                let parts: Vec<_> = relative
                    .components()
                    .map(|part| part.as_os_str().to_string_lossy().into_owned())
                    .collect();
                files.push(parts.join("/"));
            }
        }
    }
    files.sort();
    files
}

fn write_table(out: &Path, dist: &Path, files: &[String]) {
    let mut code =
        String::from("/// The dashboard's files.\npub static ASSETS: &[EmbeddedFile] = &[\n");
    for relative in files {
        if relative.ends_with(".gz") {
            continue;
        }
        let path = dist.join(relative);
        let bytes = std::fs::read(&path).expect("read a built UI file");
        let gzip = compressible(relative)
            .then(|| gzip(&bytes))
            .filter(|compressed| compressed.len() + 64 < bytes.len())
            .map(|compressed| {
                let gz_path = out.join("web-gz").join(format!("{relative}.gz"));
                std::fs::create_dir_all(gz_path.parent().expect("a parent"))
                    .expect("create the gzip directory");
                std::fs::write(&gz_path, compressed).expect("write a gzip file");
                gz_path
            });
        let _ = writeln!(
            code,
            "    EmbeddedFile {{ path: {:?}, content_type: {:?}, bytes: include_bytes!({:?}), gzip: {} }},",
            format!("/{relative}"),
            content_type::for_path(relative),
            path.display().to_string(),
            match gzip {
                Some(gz_path) =>
                    format!("Some(include_bytes!({:?}))", gz_path.display().to_string()),
                None => "None".to_owned(),
            }
        );
    }
    code.push_str("];\n");
    std::fs::write(out.join("web_assets.rs"), code).expect("write the asset table");
}

fn compressible(path: &str) -> bool {
    [
        ".html",
        ".js",
        ".css",
        ".svg",
        ".json",
        ".txt",
        ".map",
        ".webmanifest",
    ]
    .iter()
    .any(|suffix| path.ends_with(suffix))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 3),
        flate2::Compression::best(),
    );
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

fn placeholder(reason: &str) -> String {
    let escaped = reason
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Merchant Monitor</title></head>\
         <body style=\"font-family:system-ui,sans-serif;max-width:48rem;margin:3rem auto;line-height:1.5\">\
         <h1>Merchant Monitor</h1><p>The dashboard was not built into this binary, so only the API \
         under <code>/v1</code> is served (see <a href=\"/openapi.json\">/openapi.json</a>).</p>\
         <p>To include it, install Node.js 20 or later with npm and build again.</p>\
         <pre style=\"white-space:pre-wrap\">{escaped}</pre></body></html>\n"
    )
}
