//! Witness sink: C2SP tlog-witness `add-checkpoint`, with a consistency proof from the
//! size the witness last cosigned (our last receipt from it, or what its 409 says) to the
//! new checkpoint, read from the stored tiles. The receipt keeps the cosignature lines;
//! the reader appends them to the block's checkpoint (`/v1/blocks/{height}/checkpoint`).

use ace_core::db::{self, DbError};
use ace_core::merkle::{self, consistency_proof_node_ids};
use ace_core::witness::{
    add_checkpoint_body, interpret_response, note_body, AddCheckpointOutcome, CosignatureVerifier,
    WitnessError,
};
use deadpool_postgres::Pool;

use super::Anchoring;
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum WitnessSinkError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("POST {url}: {source}")]
    Send { url: String, source: reqwest::Error },
    #[error("{url}: {source}")]
    Witness { url: String, source: WitnessError },
    #[error("POST {url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} has cosigned tree size {witness_size} of this log, beyond block {height}'s {tree_size}: a fork, or a ledger restored from an old backup; investigate before anything else")]
    Ahead {
        url: String,
        witness_size: u64,
        height: u64,
        tree_size: u64,
    },
    #[error("FORK: {url} has cosigned another tree of this log at size {tree_size} (block {height}): the witness saw a different root for the same size. A split view or a rewritten ledger: stop and investigate; run `acectl audit`")]
    Fork {
        url: String,
        height: u64,
        tree_size: u64,
    },
    #[error("{url} keeps answering 409: it moved from size {first} to {second} while we asked")]
    Conflicting {
        url: String,
        first: u64,
        second: u64,
    },
    #[error("the checkpoint of block {0} has no note body")]
    NoBody(u64),
    #[error("consistency proof {from} → {to} from the stored tiles: {reason}")]
    Proof { from: u64, to: u64, reason: String },
}

pub async fn send(
    http: &reqwest::Client,
    pool: &Pool,
    sink: &str,
    url: &reqwest::Url,
    witness: &CosignatureVerifier,
    a: &Anchoring,
) -> Result<serde_json::Value, WitnessSinkError> {
    let endpoint = format!("{}/add-checkpoint", url.as_str().trim_end_matches('/'));
    let body_of_checkpoint = note_body(&a.checkpoint).ok_or(WitnessSinkError::NoBody(a.height))?;
    let c = pool.get().await.map_err(|e| DbError::Pool {
        target: "anchor pool".into(),
        message: e.to_string(),
    })?;
    let mut old = store::last_anchored(&**c, sink)
        .await?
        .map_or(0, |(_, size)| size);
    let mut conflicts = Vec::new();
    loop {
        if old > a.tree_size {
            return Err(WitnessSinkError::Ahead {
                url: endpoint,
                witness_size: old,
                height: a.height,
                tree_size: a.tree_size,
            });
        }
        let proof = if old == 0 || old == a.tree_size {
            Vec::new()
        } else {
            let proof_err = |reason: String| WitnessSinkError::Proof {
                from: old,
                to: a.tree_size,
                reason,
            };
            let nodes = consistency_proof_node_ids(old, a.tree_size)
                .map_err(|e| proof_err(e.to_string()))?;
            let set = db::load_tile_set(&**c, &nodes, a.tree_size).await?;
            merkle::consistency_proof(old, a.tree_size, &set)
                .map_err(|e| proof_err(e.to_string()))?
        };
        let send_err = |source| WitnessSinkError::Send {
            url: endpoint.clone(),
            source,
        };
        let resp = http
            .post(&endpoint)
            .body(add_checkpoint_body(old, &proof, &a.checkpoint))
            .send()
            .await
            .map_err(send_err)?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.map_err(send_err)?;
        let outcome = interpret_response(
            status,
            content_type.as_deref(),
            &text,
            body_of_checkpoint,
            std::slice::from_ref(witness),
        )
        .map_err(|source| WitnessSinkError::Witness {
            url: endpoint.clone(),
            source,
        })?;
        match outcome {
            AddCheckpointOutcome::Cosigned(cosignatures) => {
                return Ok(serde_json::json!({
                    "witness": witness.name(),
                    "vkey": witness.to_vkey(),
                    "url": endpoint,
                    "old_size": old,
                    "cosignatures": cosignatures.iter().map(|c| c.line.as_str()).collect::<Vec<_>>(),
                    "timestamps": cosignatures.iter().map(|c| c.timestamp).collect::<Vec<_>>(),
                }));
            }
            // The witness knows another size (first contact, or a lost receipt): once from
            // there; a second conflict means it is moving under us.
            AddCheckpointOutcome::Conflict { witness_size } => {
                // Sent at its own size and still refused: same size, another root.
                if old == a.tree_size && witness_size == a.tree_size {
                    return Err(WitnessSinkError::Fork {
                        url: endpoint,
                        height: a.height,
                        tree_size: a.tree_size,
                    });
                }
                conflicts.push(witness_size);
                if conflicts.len() > 1 {
                    return Err(WitnessSinkError::Conflicting {
                        url: endpoint,
                        first: conflicts[0],
                        second: witness_size,
                    });
                }
                old = witness_size;
            }
            // A plain 409 at the checkpoint's own size: same size, another root.
            AddCheckpointOutcome::Refused { status: 409, .. } if old == a.tree_size => {
                return Err(WitnessSinkError::Fork {
                    url: endpoint,
                    height: a.height,
                    tree_size: a.tree_size,
                });
            }
            AddCheckpointOutcome::Refused { status, body } => {
                return Err(WitnessSinkError::Refused {
                    url: endpoint,
                    status,
                    body,
                });
            }
        }
    }
}
