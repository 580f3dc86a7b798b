//! `/v1/admin/backups/{id}` (a node's checkpoint: take, download, delete) and
//! `/v1/admin/import` (a restore's objects, merged into their write sets). Admin only. The
//! checkpoint, its files and the import body are [`crate::backup`]'s; `yeskv backup` and
//! `yeskv restore` are their client.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use yeskv_core::keyspace::{key_hash, partition_of, storage_key};
use yeskv_storage::Engine;

use super::{json_error, AppState, ErrorBody};
use crate::backup::{self, BackupFile};
use crate::error::Error;
use crate::replication::MergeItem;

/// The answer of `POST /v1/admin/backups/{id}`: what the checkpoint holds and the layout it
/// was taken under.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupBody {
    /// The backup's id.
    pub id: String,
    /// The node that took it.
    pub node: String,
    /// Its zone.
    pub zone: String,
    /// Its region.
    pub region: String,
    /// When it was taken (ms since the Unix epoch, this node's clock).
    pub created_ms: u64,
    /// The layout version this node routed by when it was taken.
    pub layout_version: u64,
    /// The partition count of its storage keys (a restore reads the checkpoint partition by
    /// partition).
    pub partition_count: u32,
    /// Every bucket with properties set, by name (UTF-8, lossy) with its name's bytes in hex
    /// and its properties as `GET /v1/buckets/{bucket}` answers them.
    #[schema(value_type = Vec<Object>)]
    pub buckets: Vec<serde_json::Value>,
    /// The checkpoint's files.
    pub files: Vec<BackupFile>,
}

/// The answer of `POST /v1/admin/import`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportedBody {
    /// Keys merged into every node of their write set (copies of one key in the body count
    /// once).
    pub imported: usize,
}

/// `POST /v1/admin/backups/{id}`: takes a checkpoint of this node's database.
#[utoipa::path(
    post,
    path = "/v1/admin/backups/{id}",
    tag = "backups",
    operation_id = "create_backup",
    summary = "Take a checkpoint of this node's database",
    description = "A point-in-time copy of every write this node acknowledged before the call \
        (RocksDB checkpoint: hard links under `<data_dir>/backups/{id}`), listed file by file \
        with sizes and SHA-256. `yeskv backup` calls it on every member, downloads the files \
        and deletes the checkpoint.",
    params(("id" = String, Path, description = "1 to 64 of A-Z a-z 0-9 - _ .")),
    responses(
        (status = 200, description = "Taken", body = BackupBody),
        (status = 400, description = "A malformed id", body = ErrorBody),
        (status = 409, description = "A backup of that id exists on this node", body = ErrorBody),
        (status = 503, description = "Storage refused", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub(super) async fn create<E: Engine>(
    State(state): State<Arc<AppState<E>>>,
    Path(id): Path<String>,
) -> Response {
    let replica = state.coordinator.replica().clone();
    let dir = state.backups.clone();
    let taken_id = id.clone();
    let created_ms = state.coordinator.context().now_ms();
    let layout_version = state.layout.current().map_or(0, |l| l.version);
    let files = match tokio::task::spawn_blocking(move || {
        backup::create(replica.engine(), &dir, &taken_id)
    })
    .await
    {
        Ok(Ok(files)) => files,
        Ok(Err(e)) => return e.into_response(),
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let buckets = state
        .layout
        .state()
        .state
        .buckets
        .iter()
        .map(|(name, props)| {
            serde_json::json!({
                "name": String::from_utf8_lossy(name),
                "name_hex": backup::hex(name),
                "props": super::props_json(props),
            })
        })
        .collect();
    tracing::info!(%id, files = files.len(), bytes = files.iter().map(|f| f.bytes).sum::<u64>(),
        "backup checkpoint taken");
    axum::Json(BackupBody {
        id,
        node: state.node_id.as_str().to_string(),
        zone: state.zone.clone(),
        region: state.region.clone(),
        created_ms,
        layout_version,
        partition_count: state.coordinator.context().settings().partitions,
        buckets,
        files,
    })
    .into_response()
}

/// `GET /v1/admin/backups/{id}/{file}`: one file of a checkpoint, streamed.
#[utoipa::path(
    get,
    path = "/v1/admin/backups/{id}/{file}",
    tag = "backups",
    operation_id = "backup_file",
    summary = "Download one file of a checkpoint",
    params(
        ("id" = String, Path, description = "The backup's id"),
        ("file" = String, Path, description = "A file name the backup listed"),
    ),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "A malformed id or file name", body = ErrorBody),
        (status = 404, description = "No such backup or file", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub(super) async fn file<E: Engine>(
    State(state): State<Arc<AppState<E>>>,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    let path = match backup::file_path(&state.backups, &id, &name) {
        Ok(path) => path,
        Err(e) => return e.into_response(),
    };
    let f = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            return Error::Storage(format!("cannot open {}: {e}", path.display())).into_response()
        }
    };
    let len = f.metadata().await.map(|m| m.len()).ok();
    let stream = futures_util::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 16];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(len) = len {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    }
    response
}

/// `DELETE /v1/admin/backups/{id}`: deletes a checkpoint.
#[utoipa::path(
    delete,
    path = "/v1/admin/backups/{id}",
    tag = "backups",
    operation_id = "delete_backup",
    summary = "Delete a checkpoint",
    params(("id" = String, Path, description = "The backup's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A malformed id", body = ErrorBody),
        (status = 404, description = "No such backup", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub(super) async fn delete<E: Engine>(
    State(state): State<Arc<AppState<E>>>,
    Path(id): Path<String>,
) -> Response {
    let dir = state.backups.clone();
    match tokio::task::spawn_blocking(move || backup::remove(&dir, &id)).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `POST /v1/admin/import`: merges a restore's objects into the cluster.
#[utoipa::path(
    post,
    path = "/v1/admin/import",
    tag = "backups",
    operation_id = "import",
    summary = "Merge objects of a backup into the cluster",
    description = "The body is a sequence of `u16 BE len(bucket) ‖ bucket ‖ u16 BE len(key) ‖ \
        key ‖ u32 BE len(record) ‖ record`, records as a node stores them (checksummed). Every \
        record and name is checked before anything is merged; then each object is merged into \
        every node of its partition's write set in this cluster's layout, and the answer waits \
        until all of them hold it durably. Idempotent: a failed call is retried as it was.",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Every object merged into every replica", body = ImportedBody),
        (status = 400, description = "A malformed body or name; nothing merged", body = ErrorBody),
        (status = 413, description = "Body over 64 MiB", body = ErrorBody),
        (status = 500, description = "A record failed its checksum; nothing merged", body = ErrorBody),
        (status = 503, description = "A replica did not take its objects; retry", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub(super) async fn import<E: Engine>(
    State(state): State<Arc<AppState<E>>>,
    body: Body,
) -> Response {
    let Ok(body): Result<Bytes, _> =
        axum::body::to_bytes(body, backup::IMPORT_BODY_BYTES_MAX).await
    else {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the body exceeds the limit of {} bytes",
                backup::IMPORT_BODY_BYTES_MAX
            ),
        );
    };
    match merge_import(&state, &body).await {
        Ok(imported) => axum::Json(ImportedBody { imported }).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Checks every object of an import body, then merges them all (see [`import`]).
async fn merge_import<E: Engine>(state: &AppState<E>, body: &[u8]) -> Result<usize, Error> {
    let objects = backup::decode_import(body).map_err(Error::BadRequest)?;
    let ctx = state.coordinator.context();
    let partitions = ctx.settings().partitions;
    let mut items = Vec::with_capacity(objects.len());
    for (i, o) in objects.iter().enumerate() {
        yeskv_core::codec::decode_record(&o.record).map_err(|e| {
            Error::Corrupt(format!(
                "object {i} ({}/{}): {e}",
                String::from_utf8_lossy(&o.bucket),
                String::from_utf8_lossy(&o.key)
            ))
        })?;
        crate::replication::check_names(&o.bucket, &o.key)
            .map_err(|e| Error::BadRequest(format!("object {i}: {e}")))?;
    }
    // Copies of one key in a batch (several replicas' backups) become one object first: a
    // replica merges a batch's objects one by one, each over what it held before the batch.
    for o in backup::merge_copies(objects)? {
        let hash = key_hash(&o.bucket, &o.key);
        items.push(MergeItem {
            key_hash: hash,
            storage_key: storage_key(partition_of(hash, partitions), &o.bucket, &o.key),
            record: o.record,
        });
    }
    let n = items.len();
    crate::replication::merge_into_write_sets(ctx, items).await?;
    metrics::counter!(crate::metrics::IMPORTED_OBJECTS).increment(n as u64);
    Ok(n)
}
