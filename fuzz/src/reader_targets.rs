//! The reader fuzz target: every query string and path parameter the reader reads, fed to
//! the same functions its handlers call, with no database (a handler only reaches
//! Postgres once these have accepted the request).

use std::collections::HashMap;

use ace_core::ids::EnvelopeDigest;
use ace_core::tiles::TILE_WIDTH;
use ace_reader::api::{self, TileRequest};
use ace_reader::config::MAX_PAGE;
use ace_reader::problem::ApiError;
use axum::extract::Query;
use axum::http::{StatusCode, Uri};

/// The query parameters of each route that takes some, and of those that take none.
const ROUTES: [&[&str]; 5] = [
    api::SEARCH_PARAMS,
    api::BLOCKS_PARAMS,
    api::PROOF_PARAMS,
    api::CONSISTENCY_PARAMS,
    &[],
];

/// Tree sizes around tile boundaries and the limits of the log's bigint columns.
const TREE_SIZES: [u64; 8] = [
    0,
    1,
    255,
    256,
    65_793,
    16_777_472,
    i64::MAX as u64,
    u64::MAX,
];

/// `reader_query` target: the input as a query string of each route, then as each path
/// parameter (entry index or block height, envelope digest, policy version, tile path).
pub fn reader_query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    query(text);
    path_parameter(text);
    for size in TREE_SIZES {
        tile(text, size);
    }
}

fn query(text: &str) {
    // A request line that is not a URI is refused by hyper before any handler runs.
    let Ok(uri) = format!("/v1/entries?{text}").parse::<Uri>() else {
        return;
    };
    for allowed in ROUTES {
        let map = match api::params(Query::try_from_uri(&uri), allowed) {
            Ok(map) => map,
            Err(e) => {
                bad_request(&e);
                continue;
            }
        };
        assert!(map.keys().all(|k| allowed.contains(&k.as_str())));
        let checked = if allowed == api::SEARCH_PARAMS {
            api::search_query(&map).map(|s| {
                assert!((1..=MAX_PAGE).contains(&s.limit));
                assert!(s.after.is_none_or(|a| i64::try_from(a).is_ok()));
                assert!(s.predicate_type.is_none_or(|p| !p.is_empty()));
            })
        } else if allowed == api::BLOCKS_PARAMS {
            api::opt_u64(&map, "after").and_then(|_| api::limit(&map).map(|_| ()))
        } else if allowed == api::PROOF_PARAMS {
            api::opt_u64(&map, "tree_size").map(|_| ())
        } else if allowed == api::CONSISTENCY_PARAMS {
            api::consistency_sizes(&map).map(|_| ())
        } else {
            Ok(())
        };
        if let Err(e) = checked {
            bad_request(&e);
        }
    }
}

fn path_parameter(text: &str) {
    match api::parse_u64("index", text) {
        Ok(n) => assert!(i64::try_from(n).is_ok()),
        Err(e) => bad_request(&e),
    }
    if let Ok(d) = EnvelopeDigest::parse(text) {
        assert_eq!(d.as_str(), text);
    }
    if let Err(e) = api::check_policy_version(text) {
        bad_request(&e);
    }
    match api::subject_digest(text) {
        Ok((alg, value)) => assert_eq!(format!("{alg}:{value}"), text),
        Err(e) => bad_request(&e),
    }
}

fn tile(rest: &str, size: u64) {
    match api::tile_request(rest, size) {
        Ok(TileRequest::Entries { first, width }) => {
            assert_eq!(first % TILE_WIDTH, 0);
            assert!((1..=256).contains(&width));
            assert!(first + u64::from(width) <= size);
        }
        Ok(TileRequest::Tile(id)) => {
            // Canonical: one tile, one path.
            assert_eq!(id.path(), format!("tile/{rest}"));
            let last = (id.index * TILE_WIDTH + u64::from(id.width)) << (8 * u32::from(id.level));
            assert!(last <= size, "tile {rest} accepted beyond a tree of {size}");
        }
        Err(e) => {
            let status = e.status();
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
                "{e}"
            );
            let _ = problem_json(&e);
        }
    }
}

/// A parameter error must be a 400 naming the parameter, and render as a problem.
fn bad_request(e: &ApiError) {
    assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");
    assert!(e.problem().parameter.is_some_and(|p| !p.is_empty()), "{e}");
    let _ = problem_json(e);
}

fn problem_json(e: &ApiError) -> HashMap<String, serde_json::Value> {
    serde_json::from_slice(&serde_json::to_vec(&e.problem()).expect("a problem serialises"))
        .expect("a problem is a JSON object")
}
