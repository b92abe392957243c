//! Files: `/view`, `/upload/image`, `/models`, `/embeddings`. Every path a
//! client names is confined to its folder: a file name is one plain
//! component, a subfolder only plain components (no `..`, no absolute
//! paths), and the resolved path (symlinks followed) must still lie inside.
use super::state::AppState;
use super::ApiError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Multipart, Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as Json_};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

type Result<T> = std::result::Result<T, ApiError>;

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError(
        StatusCode::FORBIDDEN,
        "forbidden_path".into(),
        message.into(),
    )
}

/// `output`, `input` or `temp`.
fn base<'a>(state: &'a AppState, kind: &str) -> Result<&'a Path> {
    match kind {
        "" | "output" => Ok(&state.output),
        "input" => Ok(&state.input),
        "temp" => Ok(&state.temp),
        other => Err(ApiError::bad(
            "invalid_type",
            format!("type `{other}` is not output, input or temp"),
        )),
    }
}

/// `base/subfolder/filename` from plain components only.
pub fn join_confined(base: &Path, subfolder: &str, filename: &str) -> Result<PathBuf> {
    let plain = |s: &str| {
        let p = Path::new(s);
        !s.contains('\0')
            && !s.contains('\\')
            && p.components().all(|c| matches!(c, Component::Normal(_)))
    };
    let name_ok =
        !filename.is_empty() && plain(filename) && Path::new(filename).components().count() == 1;
    if !name_ok {
        return Err(forbidden(format!("`{filename}` is not a plain file name")));
    }
    if !subfolder.is_empty() && !plain(subfolder) {
        return Err(forbidden(format!(
            "subfolder `{subfolder}` leaves its folder"
        )));
    }
    Ok(base.join(subfolder).join(filename))
}

/// Refuses a path whose real location (symlinks resolved) is outside `base`.
fn inside(base: &Path, path: &Path) -> Result<PathBuf> {
    let real = std::fs::canonicalize(path).map_err(|_| {
        ApiError(
            StatusCode::NOT_FOUND,
            "not_found".into(),
            "no such file".into(),
        )
    })?;
    if real.starts_with(base) {
        Ok(real)
    } else {
        Err(forbidden("the path leaves its folder"))
    }
}

fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn query(
    q: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad("invalid_query", e.body_text()))
}

/// `GET /view?filename=&subfolder=&type=`.
pub async fn view(
    State(state): State<Arc<AppState>>,
    q: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response> {
    let q = query(q)?;
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    let base = base(&state, get("type"))?;
    let path = join_confined(base, get("subfolder"), get("filename"))?;
    let real = inside(base, &path)?;
    if !real.is_file() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "not_found".into(),
            "no such file".into(),
        ));
    }
    let bytes = std::fs::read(&real).map_err(|e| ApiError::internal(e.to_string()))?;
    let disposition = format!("filename=\"{}\"", get("filename").replace('"', ""));
    Ok((
        [
            (header::CONTENT_TYPE, content_type(&real).to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// `POST /upload/image` (multipart: `image`, `overwrite`, `subfolder`,
/// `type`). The bytes must decode as an image; an existing name is kept
/// and the upload renamed `name (1).png` unless `overwrite` is true.
pub async fn upload_image(
    State(state): State<Arc<AppState>>,
    multipart: std::result::Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<Json_>> {
    let mut multipart =
        multipart.map_err(|e| ApiError(e.status(), "bad_multipart".into(), e.body_text()))?;
    let (mut file, mut name, mut overwrite, mut subfolder, mut kind) = (
        None,
        String::new(),
        false,
        String::new(),
        "input".to_string(),
    );
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(ApiError(e.status(), "bad_multipart".into(), e.body_text())),
        };
        let field_name = field.name().unwrap_or_default().to_string();
        if field_name == "image" {
            name = field.file_name().unwrap_or_default().to_string();
        }
        let data = field
            .bytes()
            .await
            .map_err(|e| ApiError(e.status(), "bad_multipart".into(), e.body_text()))?;
        let text = || String::from_utf8_lossy(&data).trim().to_string();
        match field_name.as_str() {
            "image" => file = Some(data.clone()),
            "overwrite" => overwrite = matches!(text().as_str(), "true" | "1"),
            "subfolder" => subfolder = text(),
            "type" => kind = text(),
            _ => {}
        }
    }
    let Some(data) = file else {
        return Err(ApiError::bad("no_image", "the form has no `image` file"));
    };
    if image::load_from_memory(&data).is_err() {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_an_image".into(),
            format!("`{name}` is not an image this server reads (PNG)"),
        ));
    }
    let base = base(&state, &kind)?.to_path_buf();
    let mut path = join_confined(&base, &subfolder, &name)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or(base.clone());
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(e.to_string()))?;
    inside(&base, &dir)?;
    if !overwrite {
        let original = name.clone();
        let (stem, ext) = split_name(&original);
        let mut i = 1;
        while path.symlink_metadata().is_ok() {
            name = format!("{stem} ({i}){ext}");
            path = dir.join(&name);
            i += 1;
        }
    } else if path.symlink_metadata().is_ok_and(|m| !m.is_file()) {
        return Err(forbidden("the target is not a plain file"));
    }
    // Written beside, then renamed: never a half-written file under the name.
    let tmp = dir.join(format!(".{name}.upload"));
    std::fs::write(&tmp, &data)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(
        json!({ "name": name, "subfolder": subfolder, "type": kind }),
    ))
}

fn split_name(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// `GET /models`: the folders under `--models`.
pub async fn model_folders(State(state): State<Arc<AppState>>) -> Json<Json_> {
    let dirs: Vec<String> = entries(&state.models)
        .into_iter()
        .filter(|n| state.models.join(n).is_dir())
        .collect();
    Json(dirs.into())
}

/// `GET /models/{folder}`: what that folder holds.
pub async fn models_in(
    State(state): State<Arc<AppState>>,
    UrlPath(folder): UrlPath<String>,
) -> Result<Json<Json_>> {
    let path = join_confined(&state.models, "", &folder)?;
    let models = std::fs::canonicalize(&state.models).unwrap_or(state.models.clone());
    let real = inside(&models, &path)?;
    Ok(Json(entries(&real).into()))
}

/// `GET /embeddings`: files under `<models>/embeddings`, without extension.
pub async fn embeddings(State(state): State<Arc<AppState>>) -> Json<Json_> {
    let names: Vec<String> = entries(&state.models.join("embeddings"))
        .iter()
        .map(|n| split_name(n).0.to_string())
        .collect();
    Json(names.into())
}
