//! `FilesAgent`: file uploads (`multipart/form-data`) kept on disk, at
//! `/agents/files-agent/{name}`.
//!
//! * `POST …/upload` with a form field `file` answers `{"filename":…,"size":…}` (the file name
//!   as the client sent it, the size in bytes), like the upload example of the Agents docs.
//!   The file is streamed to disk chunk by chunk (never held in memory whole) under
//!   `{data}/files-agent/{name}.files/`, named after its file name reduced to
//!   `[A-Za-z0-9._-]`; an upload with the name of an earlier one replaces it.
//! * `GET …/files` lists the stored files: `[{"filename":…,"size":…}, …]`, by name.
//!
//! Uploads may be up to [`MAX_UPLOAD`] (the route's [`Agent::max_request_body`]; the
//! server answers `413` beyond it); an instance keeps at most [`MAX_FILES`] files. Other fields
//! of the form are skipped. With `agentwire serve --allow-origin ORIGIN`, a page at `ORIGIN`
//! may upload from the browser (the server answers its preflight and adds the CORS headers).

use crate::body::response;
use crate::{Agent, Body, BoxError, Context, HttpRequest, RequestExt};
use http::{Method, Response, StatusCode};
use serde_json::json;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// The largest upload accepted (the limit of the `…/upload` route).
pub const MAX_UPLOAD: u64 = 256 << 20;
/// Most files kept per instance; more uploads (under new names) are refused with `507`.
pub const MAX_FILES: usize = 1000;

/// The demo upload agent (see the module docs).
#[derive(Debug, Clone)]
pub struct FilesAgent {
    root: PathBuf,
}

impl FilesAgent {
    /// Keeps the files of instance `name` under `{root}/{namespace}/{name}.files/` (`root` is
    /// the server's data directory).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn dir(&self, cx: &Context<Self>) -> PathBuf {
        self.root
            .join(crate::store::file_name(cx.agent_namespace()))
            .join(format!("{}.files", crate::store::file_name(cx.name())))
    }

    async fn upload(dir: PathBuf, req: &mut HttpRequest) -> Result<Response<Body>, BoxError> {
        let mut form = req.multipart()?; // 415 unless multipart/form-data
        let file = form.field("file").await?; // 400 without a field `file`
        let filename = file.file_name().unwrap_or("").to_owned();
        tokio::fs::create_dir_all(&dir).await?;
        let stored = dir.join(safe_name(&filename));
        if !tokio::fs::try_exists(&stored).await? && count_files(&dir).await? >= MAX_FILES {
            return Ok(response::text(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("at most {MAX_FILES} files per instance"),
            ));
        }
        // Written under a temporary name, renamed when complete: a failed upload leaves nothing.
        let partial = Partial(dir.join(format!(".partial-{}", std::process::id())));
        let mut out = tokio::fs::File::create(&partial.0).await?;
        let mut size: u64 = 0;
        while let Some(chunk) = file.chunk().await? {
            size += chunk.len() as u64;
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        drop(out);
        tokio::fs::rename(&partial.0, &stored).await?;
        std::mem::forget(partial);
        tracing::info!(%filename, size, "file stored");
        Ok(response::json(
            &json!({ "filename": filename, "size": size }),
        ))
    }

    async fn list(dir: PathBuf) -> Result<Response<Body>, BoxError> {
        let mut files = Vec::new();
        match tokio::fs::read_dir(&dir).await {
            Ok(mut rd) => {
                while let Some(e) = rd.next_entry().await? {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        continue;
                    }
                    let size = e.metadata().await?.len();
                    files.push((name, size));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        files.sort();
        let list: Vec<_> = files
            .into_iter()
            .map(|(filename, size)| json!({ "filename": filename, "size": size }))
            .collect();
        Ok(response::json(&list))
    }
}

/// Removes a partly written upload unless forgotten.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn count_files(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    let mut rd = tokio::fs::read_dir(dir).await?;
    while let Some(e) = rd.next_entry().await? {
        if !e.file_name().to_string_lossy().starts_with('.') {
            n += 1;
        }
    }
    Ok(n)
}

/// A file name safe to store: the last path segment, reduced to `[A-Za-z0-9._-]`, without
/// leading dots, at most 100 characters; `upload` if nothing is left.
pub fn safe_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut out: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    out = out.trim_start_matches('.').to_owned();
    out.truncate(100);
    if out.is_empty() {
        out.push_str("upload");
    }
    out
}

impl Agent for FilesAgent {
    type State = serde_json::Value;

    fn max_request_body(req: &http::request::Parts) -> Option<u64> {
        (req.method == Method::POST && req.uri.path().ends_with("/upload")).then_some(MAX_UPLOAD)
    }

    async fn on_request(
        &mut self,
        cx: &mut Context<Self>,
        mut req: HttpRequest,
    ) -> Result<Response<Body>, BoxError> {
        let path = req.uri().path().to_owned();
        let rest = super::rest_of(&path, cx.agent_namespace());
        let dir = self.dir(cx);
        match (req.method().clone(), rest.as_slice()) {
            (Method::POST, ["upload"]) => Self::upload(dir, &mut req).await,
            (Method::GET, ["files"]) => Self::list(dir).await,
            (_, ["upload"] | ["files"]) => Ok(response::text(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
            )),
            _ => Ok(response::not_found()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_name;

    #[test]
    fn stored_names_stay_in_their_directory() {
        assert_eq!(safe_name("report.pdf"), "report.pdf");
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("C:\\x\\a b.txt"), "a_b.txt");
        assert_eq!(safe_name(".."), "upload");
        assert_eq!(safe_name(".hidden"), "hidden");
        assert_eq!(safe_name(""), "upload");
    }
}
