//! HTTP handlers: parse and bound the parameters, call the store or the prover, shape the
//! answer. Every parameter error is a 400 problem naming the parameter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ace_core::ids::{EnvelopeDigest, ProducerId};
use ace_core::tiles::{parse_entries_path, tile_to_bytes, TileId, TILE_WIDTH};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::Semaphore;

use crate::config::{DEFAULT_PAGE, MAX_PAGE};
use crate::model::{BlockPage, ConsistencyProof, EntryPage, InclusionProof, Keys};
use crate::problem::ApiError;
use crate::proofs::Prover;
use crate::store;

/// Longest accepted query parameter value, in bytes.
pub const MAX_PARAM_BYTES: usize = 512;

pub struct AppState {
    pub prover: Prover,
    pub ledger_keys: Vec<String>,
    pub request_timeout: std::time::Duration,
    pub in_flight: Arc<Semaphore>,
    pub max_concurrent: usize,
}

pub type Shared = Arc<AppState>;

/// A route's query string as axum decoded it, or why it could not.
pub type Params = Result<Query<HashMap<String, String>>, QueryRejection>;
type PathParam = Result<Path<String>, PathRejection>;

/// A path segment, or a problem naming it (e.g. percent-encoding that is not UTF-8).
fn segment(p: PathParam, name: &'static str) -> Result<String, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad(name, e.body_text()))
}

/// The query parameters, refusing bad encoding, unknown names and oversized values.
pub fn params(q: Params, allowed: &[&'static str]) -> Result<HashMap<String, String>, ApiError> {
    let Query(map) = q.map_err(|e| ApiError::bad("query", e.body_text()))?;
    for (k, v) in &map {
        let Some(&name) = allowed.iter().find(|a| **a == k.as_str()) else {
            let known = if allowed.is_empty() {
                "this route takes no query parameters".to_string()
            } else {
                format!("this route takes {}", allowed.join(", "))
            };
            return Err(ApiError::bad(
                "query",
                format!("unknown parameter {:?}: {known}", excerpt(k)),
            ));
        };
        if v.len() > MAX_PARAM_BYTES {
            return Err(ApiError::bad(
                name,
                format!(
                    "is {} bytes, longer than the {MAX_PARAM_BYTES} allowed",
                    v.len()
                ),
            ));
        }
    }
    Ok(map)
}

fn excerpt(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A non-negative decimal that fits the log's bigint columns.
pub fn parse_u64(name: &'static str, v: &str) -> Result<u64, ApiError> {
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad(
            name,
            format!(
                "must be a decimal integer from 0 to {}, got {:?}",
                i64::MAX,
                excerpt(v)
            ),
        ));
    }
    v.parse::<u64>()
        .ok()
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| ApiError::bad(name, format!("{v} is above {}", i64::MAX)))
}

pub fn opt_u64(map: &HashMap<String, String>, name: &'static str) -> Result<Option<u64>, ApiError> {
    map.get(name).map(|v| parse_u64(name, v)).transpose()
}

/// The page size: [`DEFAULT_PAGE`] when absent, capped at [`MAX_PAGE`].
pub fn limit(map: &HashMap<String, String>) -> Result<u32, ApiError> {
    match opt_u64(map, "limit")? {
        None => Ok(DEFAULT_PAGE),
        Some(0) => Err(ApiError::bad("limit", "must be at least 1")),
        Some(n) => Ok(n.min(u64::from(MAX_PAGE)) as u32),
    }
}

fn immutable(mut r: Response, full: bool) -> Response {
    let policy = if full {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=10"
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    r
}

fn text(body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The latest checkpoint note.
#[utoipa::path(get, path = "/v1/checkpoint", tag = "log",
    responses(
        (status = 200, description = "C2SP signed checkpoint note", content_type = "text/plain", body = String),
        (status = 404, description = "No block sealed yet", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn checkpoint(State(s): State<Shared>, q: Params) -> Result<Response, ApiError> {
    params(q, &[])?;
    let head = s.prover.heads.latest(&s.prover.pool).await?;
    Ok(text(head.checkpoint.to_string()))
}

/// The ledger's note verifier keys and every registered producer key.
#[utoipa::path(get, path = "/v1/keys", tag = "registry",
    responses((status = 200, body = Keys)))]
pub async fn keys(State(s): State<Shared>, q: Params) -> Result<Json<Keys>, ApiError> {
    params(q, &[])?;
    let c = s.prover.pool.get().await?;
    Ok(Json(Keys {
        ledger: s.ledger_keys.clone(),
        producers: store::producer_keys(&c).await?,
    }))
}

/// One entry, with its envelope bytes.
#[utoipa::path(get, path = "/v1/entries/{index}", tag = "log",
    params(("index" = u64, Path, description = "Entry index, from 0")),
    responses(
        (status = 200, body = crate::model::Entry),
        (status = 400, body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 500, body = crate::problem::Problem, content_type = "application/problem+json", description = "inconsistent-data: an entry the latest checkpoint covers is missing"),
    ))]
pub async fn entry(
    State(s): State<Shared>,
    index: PathParam,
    q: Params,
) -> Result<Json<crate::model::Entry>, ApiError> {
    params(q, &[])?;
    let index = parse_u64("index", &segment(index, "index")?)?;
    // The head before the entry: entries commit with their block, so an entry missing
    // under a head that covers it is damage, not absence. (The other order could race a
    // block committed between the two reads.)
    let covered = match s.prover.heads.latest(&s.prover.pool).await {
        Ok(head) => head.tree_size,
        Err(ApiError::NoCheckpoint) => 0,
        Err(e) => return Err(e),
    };
    let c = s.prover.pool.get().await?;
    match store::entry_at(&c, index).await? {
        Some(e) => Ok(Json(e)),
        None if index < covered => Err(ApiError::Corrupt(format!(
            "entry {index} is missing from ledger_entries, yet the latest checkpoint covers {covered} entries"
        ))),
        None => Err(ApiError::not_found(
            "index",
            format!("no entry {index} in the log"),
        )),
    }
}

/// Inclusion proof of an entry in a checkpointed tree.
#[utoipa::path(get, path = "/v1/entries/{index}/proof", tag = "proofs",
    params(
        ("index" = u64, Path, description = "Entry index"),
        ("tree_size" = Option<u64>, Query, description = "A checkpointed tree size (a block's tree_size); default the latest"),
    ),
    responses(
        (status = 200, body = InclusionProof),
        (status = 400, body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn proof(
    State(s): State<Shared>,
    index: PathParam,
    q: Params,
) -> Result<Json<InclusionProof>, ApiError> {
    let map = params(q, PROOF_PARAMS)?;
    let index = parse_u64("index", &segment(index, "index")?)?;
    let tree_size = opt_u64(&map, "tree_size")?;
    Ok(Json(s.prover.inclusion(index, tree_size).await?))
}

/// The query parameters of `GET /v1/entries/{index}/proof`.
pub const PROOF_PARAMS: &[&str] = &["tree_size"];

/// Consistency proof between two checkpointed tree sizes.
#[utoipa::path(get, path = "/v1/consistency", tag = "proofs",
    params(
        ("from" = u64, Query, description = "The older checkpointed tree size, at least 1"),
        ("to" = u64, Query, description = "The newer checkpointed tree size"),
    ),
    responses(
        (status = 200, body = ConsistencyProof),
        (status = 400, body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn consistency(
    State(s): State<Shared>,
    q: Params,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let (from, to) = consistency_sizes(&params(q, CONSISTENCY_PARAMS)?)?;
    Ok(Json(s.prover.consistency(from, to).await?))
}

/// The query parameters of `GET /v1/consistency`.
pub const CONSISTENCY_PARAMS: &[&str] = &["from", "to"];

/// `from` and `to` of `GET /v1/consistency`, both required. Whether they are checkpointed
/// sizes, and in order, is the prover's to say.
pub fn consistency_sizes(map: &HashMap<String, String>) -> Result<(u64, u64), ApiError> {
    let from = opt_u64(map, "from")?.ok_or_else(|| ApiError::bad("from", "is required"))?;
    let to = opt_u64(map, "to")?.ok_or_else(|| ApiError::bad("to", "is required"))?;
    Ok((from, to))
}

/// What became of an envelope, by digest. An unknown digest is answered 404 with
/// `"status": "unknown"`.
#[utoipa::path(get, path = "/v1/envelopes/{digest}", tag = "log",
    params(("digest" = String, Path, description = "sha256:<64 lowercase hex>, the SHA-256 of the envelope's PAE")),
    responses(
        (status = 200, body = crate::model::EnvelopeStatus, description = "accepted (with index) or rejected (with reason)"),
        (status = 404, body = crate::model::EnvelopeStatus, description = "status unknown: never seen, or not processed yet"),
        (status = 400, body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn envelope(
    State(s): State<Shared>,
    digest: PathParam,
    q: Params,
) -> Result<Response, ApiError> {
    params(q, &[])?;
    let digest = EnvelopeDigest::parse(&segment(digest, "digest")?)
        .map_err(|e| ApiError::bad("digest", e.to_string()))?;
    let c = s.prover.pool.get().await?;
    let st = store::envelope_status(&c, digest.as_str()).await?;
    let code = if st.status == "unknown" {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    Ok((code, Json(st)).into_response())
}

/// The state snapshot of a service in force at a time, its components and the mutations
/// logged after it (docs/state.md). Locates and decodes only: verify with
/// `acectl state resolve`.
#[utoipa::path(get, path = "/v1/state/{service}", tag = "state",
    params(
        ("service" = String, Path, description = "Service name, as in its statements' `service:<name>` subject"),
        ("at" = Option<String>, Query, description = "RFC 3339 time or unix ms; default now"),
    ),
    responses(
        (status = 200, body = crate::state::StateAt),
        (status = 400, body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::problem::Problem, content_type = "application/problem+json", description = "no snapshot of the service at or before that time"),
    ))]
pub async fn state(
    State(s): State<Shared>,
    service: PathParam,
    q: Params,
) -> Result<Json<crate::state::StateAt>, ApiError> {
    let map = params(q, STATE_PARAMS)?;
    let service = segment(service, "service")?;
    crate::state::check_service(&service)?;
    let at = match map.get("at") {
        Some(v) => crate::state::parse_at(v)?,
        None => chrono::Utc::now().timestamp_millis(),
    };
    let c = s.prover.pool.get().await?;
    Ok(Json(crate::state::state_at(&c, &service, at).await?))
}

/// The query parameters of `GET /v1/state/{service}`.
pub const STATE_PARAMS: &[&str] = &["at"];

/// `<algorithm>:<lowercase hex>`, as in-toto subject digests are indexed.
pub fn subject_digest(v: &str) -> Result<(String, String), ApiError> {
    let bad = || {
        ApiError::bad(
            "subject_digest",
            format!(
                "must be <algorithm>:<lowercase hex>, e.g. sha256:<64 hex digits>, got {:?}",
                excerpt(v)
            ),
        )
    };
    let (alg, value) = v.split_once(':').ok_or_else(bad)?;
    let alg_ok = !alg.is_empty()
        && alg.len() <= 32
        && alg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let value_ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !alg_ok || !value_ok {
        return Err(bad());
    }
    if alg == "sha256" && value.len() != 64 {
        return Err(ApiError::bad(
            "subject_digest",
            format!("a sha256 digest has 64 hex digits, got {}", value.len()),
        ));
    }
    Ok((alg.to_owned(), value.to_owned()))
}

/// Search entries by producer, subject digest and predicate type (all optional, combined
/// with AND), in index order.
#[utoipa::path(get, path = "/v1/entries", tag = "search",
    params(
        ("producer" = Option<String>, Query, description = "Producer id"),
        ("subject_digest" = Option<String>, Query, description = "An in-toto subject digest, <algorithm>:<hex>, e.g. sha256:…"),
        ("predicate_type" = Option<String>, Query, description = "Exact in-toto predicate type URI"),
        ("after" = Option<String>, Query, description = "Cursor: the `next` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Page size, default 25, capped at 100"),
    ),
    responses(
        (status = 200, body = EntryPage, description = "Entries without their envelope bytes"),
        (status = 400, body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn search(State(s): State<Shared>, q: Params) -> Result<Json<EntryPage>, ApiError> {
    let query = search_query(&params(q, SEARCH_PARAMS)?)?;
    let c = s.prover.pool.get().await?;
    let (entries, more) = store::search(&c, &query).await?;
    let next = more
        .then(|| entries.last().map(|e| e.index.to_string()))
        .flatten();
    Ok(Json(EntryPage { entries, next }))
}

/// The query parameters of `GET /v1/entries`.
pub const SEARCH_PARAMS: &[&str] = &[
    "producer",
    "subject_digest",
    "predicate_type",
    "after",
    "limit",
];

/// The filters and page of `GET /v1/entries`.
pub fn search_query(map: &HashMap<String, String>) -> Result<store::Search, ApiError> {
    let producer = map
        .get("producer")
        .map(|p| {
            ProducerId::parse_stored(p)
                .map(|id| id.as_str().to_owned())
                .map_err(|e| ApiError::bad("producer", e.to_string()))
        })
        .transpose()?;
    let subject = map
        .get("subject_digest")
        .map(|v| subject_digest(v))
        .transpose()?;
    let predicate_type = match map.get("predicate_type") {
        Some(p) if p.is_empty() => {
            return Err(ApiError::bad("predicate_type", "must not be empty"))
        }
        other => other.cloned(),
    };
    Ok(store::Search {
        producer,
        subject,
        predicate_type,
        after: opt_u64(map, "after")?,
        limit: limit(map)?,
    })
}

/// One block, with its checkpoint and anchor receipts.
#[utoipa::path(get, path = "/v1/blocks/{height}", tag = "log",
    params(("height" = u64, Path, description = "Block height; 0 is genesis")),
    responses(
        (status = 200, body = crate::model::Block),
        (status = 400, body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn block(
    State(s): State<Shared>,
    height: PathParam,
    q: Params,
) -> Result<Json<crate::model::Block>, ApiError> {
    params(q, &[])?;
    let height = parse_u64("height", &segment(height, "height")?)?;
    let c = s.prover.pool.get().await?;
    store::block_at(&c, height)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("height", format!("no block at height {height}")))
}

/// A block's checkpoint with the cosignatures witnesses returned for it.
#[utoipa::path(get, path = "/v1/blocks/{height}/checkpoint", tag = "log",
    params(("height" = u64, Path, description = "Block height; 0 is genesis")),
    responses(
        (status = 200, description = "The signed checkpoint note, with one more signature line per witness cosignature recorded by the anchor", content_type = "text/plain", body = String),
        (status = 400, body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn cosigned_checkpoint(
    State(s): State<Shared>,
    height: PathParam,
    q: Params,
) -> Result<Response, ApiError> {
    params(q, &[])?;
    let height = parse_u64("height", &segment(height, "height")?)?;
    let c = s.prover.pool.get().await?;
    let b = store::block_at(&c, height)
        .await?
        .ok_or_else(|| ApiError::not_found("height", format!("no block at height {height}")))?;
    // More cosignatures may come: not immutable.
    Ok(text(crate::model::cosigned_checkpoint(
        &b.checkpoint,
        &b.anchors,
    )))
}

/// The exact text of a policy version that admitted entries (an entry's `policy_version`).
#[utoipa::path(get, path = "/v1/policies/{version}", tag = "log",
    params(("version" = String, Path, description = "sha256:<64 lowercase hex>, the SHA-256 of the policy file")),
    responses(
        (status = 200, body = crate::model::PolicyText),
        (status = 400, body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn policy(
    State(s): State<Shared>,
    version: PathParam,
    q: Params,
) -> Result<Response, ApiError> {
    params(q, &[])?;
    let version = segment(version, "version")?;
    check_policy_version(&version)?;
    let c = s.prover.pool.get().await?;
    let p = store::policy(&c, &version).await?.ok_or_else(|| {
        ApiError::not_found(
            "version",
            format!("no entry was admitted under policy {version}"),
        )
    })?;
    // A version names its text for good.
    Ok(immutable(Json(p).into_response(), true))
}

/// A policy version: `sha256:<64 lowercase hex>`.
pub fn check_policy_version(version: &str) -> Result<(), ApiError> {
    let well_formed = version.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if well_formed {
        Ok(())
    } else {
        Err(ApiError::bad(
            "version",
            format!(
                "must be sha256:<64 lowercase hex digits>, got {:?}",
                excerpt(version)
            ),
        ))
    }
}

/// Blocks in height order.
#[utoipa::path(get, path = "/v1/blocks", tag = "log",
    params(
        ("after" = Option<String>, Query, description = "Cursor: the `next` of the previous page (a height)"),
        ("limit" = Option<u32>, Query, description = "Page size, default 25, capped at 100"),
    ),
    responses(
        (status = 200, body = BlockPage),
        (status = 400, body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn blocks(State(s): State<Shared>, q: Params) -> Result<Json<BlockPage>, ApiError> {
    let map = params(q, BLOCKS_PARAMS)?;
    let after = opt_u64(&map, "after")?;
    let limit = limit(&map)?;
    let c = s.prover.pool.get().await?;
    let (blocks, more) = store::blocks(&c, after, limit).await?;
    let next = more
        .then(|| blocks.last().map(|b| b.height.to_string()))
        .flatten();
    Ok(Json(BlockPage { blocks, next }))
}

/// The query parameters of `GET /v1/blocks`.
pub const BLOCKS_PARAMS: &[&str] = &["after", "limit"];

/// C2SP tlog-tiles: the latest checkpoint.
#[utoipa::path(get, path = "/checkpoint", tag = "tiles",
    responses((status = 200, description = "C2SP signed checkpoint note", content_type = "text/plain", body = String)))]
pub async fn tlog_checkpoint(State(s): State<Shared>, q: Params) -> Result<Response, ApiError> {
    checkpoint(State(s), q).await
}

/// C2SP tlog-tiles: Merkle tiles `tile/<L>/<N>[.p/<W>]` and entry bundles
/// `tile/entries/<N>[.p/<W>]` (each entry a big-endian uint16 length and its leaf record).
#[utoipa::path(get, path = "/tile/{path}", tag = "tiles",
    params(("path" = String, Path, description = "<L>/<N>[.p/<W>] or entries/<N>[.p/<W>], N in C2SP x-prefixed 3-digit groups")),
    responses(
        (status = 200, description = "Tile or entry bundle bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn tile(
    State(s): State<Shared>,
    rest: PathParam,
    q: Params,
) -> Result<Response, ApiError> {
    params(q, &[])?;
    let rest = segment(rest, "path")?;
    let latest = s.prover.heads.latest(&s.prover.pool).await?;
    let size = latest.tree_size;
    let path = format!("tile/{rest}");
    let id = match tile_request(&rest, size)? {
        TileRequest::Tile(id) => id,
        TileRequest::Entries { first, width } => {
            let c = s.prover.pool.get().await?;
            let leaves = store::leaves(&c, first, width).await?;
            if leaves.len() != usize::from(width)
                || leaves.iter().zip(first..).any(|((i, _), want)| *i != want)
            {
                return Err(ApiError::Corrupt(format!(
                    "entries {first}..{} are not all stored",
                    first + u64::from(width)
                )));
            }
            let mut body = Vec::with_capacity(leaves.iter().map(|(_, l)| l.len() + 2).sum());
            for (i, leaf) in &leaves {
                let len = u16::try_from(leaf.len()).map_err(|_| {
                    ApiError::Corrupt(format!("entry {i}: leaf of {} bytes", leaf.len()))
                })?;
                body.extend_from_slice(&len.to_be_bytes());
                body.extend_from_slice(leaf);
            }
            return Ok(immutable(octets(body), width == TILE_WIDTH as u16));
        }
    };
    let tile = s
        .prover
        .tiles(&[id], size)
        .await?
        .pop()
        .ok_or_else(|| ApiError::Corrupt(format!("tile {path} was not read")))?;
    let hashes = tile
        .hashes()
        .get(..usize::from(id.width))
        .ok_or_else(|| ApiError::Corrupt(format!("tile {path} is short")))?;
    Ok(immutable(octets(tile_to_bytes(hashes)), id.is_full()))
}

/// What a tile path asks for, once it is known to lie in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileRequest {
    /// An entry bundle: the leaves `first..first + width`.
    Entries { first: u64, width: u16 },
    /// A Merkle tile.
    Tile(TileId),
}

/// Reads the path after `/tile/` against a tree of `size` leaves: 400 for a path that is
/// not canonical C2SP, 404 for a tile or bundle beyond the tree.
pub fn tile_request(rest: &str, size: u64) -> Result<TileRequest, ApiError> {
    if rest.len() > MAX_PARAM_BYTES {
        return Err(ApiError::bad("path", "is too long to be a tile path"));
    }
    let path = format!("tile/{rest}");
    let beyond = |what: String| {
        ApiError::not_found(
            "path",
            format!("{what} is not in the tree of size {size} (the latest checkpoint)"),
        )
    };
    if rest.starts_with("entries/") {
        let (n, width) =
            parse_entries_path(&path).map_err(|e| ApiError::bad("path", e.to_string()))?;
        let first = n
            .checked_mul(TILE_WIDTH)
            .filter(|f| f.saturating_add(u64::from(width)) <= size)
            .ok_or_else(|| beyond(format!("entry bundle {path}")))?;
        return Ok(TileRequest::Entries { first, width });
    }
    let id = TileId::parse(&path).map_err(|e| ApiError::bad("path", e.to_string()))?;
    let at_level = size >> (8 * u32::from(id.level));
    let fits = id
        .index
        .checked_mul(TILE_WIDTH)
        .is_some_and(|f| f.saturating_add(u64::from(id.width)) <= at_level);
    if !fits {
        return Err(beyond(format!("tile {path}")));
    }
    Ok(TileRequest::Tile(id))
}

fn octets(body: Vec<u8>) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

/// A route asked with a method other than GET or HEAD.
pub async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(req.method().to_string())
}

/// Any route not in the API.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(
        "path",
        format!(
            "no route {:?}; see /openapi.json",
            excerpt(req.uri().path())
        ),
    )
}

struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn new(g: &'a prometheus::IntGauge) -> Self {
        g.inc();
        InFlight(g)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Bounds every API request (concurrency, time) and counts it by route template.
pub async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let metrics = &s.prover.metrics;
    let start = Instant::now();
    let response = match Arc::clone(&s.in_flight).try_acquire_owned() {
        Err(_) => ApiError::Overloaded(s.max_concurrent).into_response(),
        Ok(_permit) => {
            // Dropped with the request, also when the client goes away mid-way.
            let _counted = InFlight::new(&metrics.in_flight);
            tokio::time::timeout(s.request_timeout, next.run(req))
                .await
                .unwrap_or_else(|_| {
                    ApiError::Timeout(s.request_timeout.as_millis()).into_response()
                })
        }
    };
    metrics
        .requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    metrics
        .latency
        .with_label_values(&[route.as_str()])
        .observe(start.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_bounded_and_named() {
        assert_eq!(parse_u64("index", "0").unwrap(), 0);
        assert_eq!(
            parse_u64("index", "9223372036854775807").unwrap(),
            i64::MAX as u64
        );
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            "0x10",
            " 1",
            "9223372036854775808",
            "99999999999999999999",
        ] {
            let e = parse_u64("index", bad).unwrap_err();
            assert_eq!(e.problem().parameter, Some("index"), "{bad}");
        }
    }

    #[test]
    fn limits_are_capped_and_zero_refused() {
        let m = |v: &str| HashMap::from([("limit".to_string(), v.to_string())]);
        assert_eq!(limit(&HashMap::new()).unwrap(), DEFAULT_PAGE);
        assert_eq!(limit(&m("7")).unwrap(), 7);
        assert_eq!(limit(&m("100000")).unwrap(), MAX_PAGE);
        assert!(limit(&m("0")).is_err());
    }

    #[test]
    fn subject_digests_are_checked() {
        let hex64 = "ab".repeat(32);
        assert_eq!(
            subject_digest(&format!("sha256:{hex64}")).unwrap(),
            ("sha256".to_string(), hex64.clone())
        );
        assert!(subject_digest("gitCommit:0123abc").is_ok());
        assert!(subject_digest("sha1:0123abc").is_ok());
        for bad in [
            "sha256",
            "sha256:",
            ":ab",
            "sha256:AB",
            "sha256:abc",
            "sha 256:ab",
            "a.b:ab",
        ] {
            let e = subject_digest(bad).unwrap_err();
            assert_eq!(e.problem().parameter, Some("subject_digest"), "{bad}");
        }
    }
}
