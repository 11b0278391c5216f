//! Sequencing one batch: dedupe, assign contiguous indexes, build leaves, extend the tile
//! tree, seal the block and sign its checkpoint. Pure: the store writes what this plans,
//! in one transaction.

use std::collections::HashMap;

use ace_core::ack::{Ack, AckStatus};
use ace_core::block::BlockHeader;
use ace_core::checkpoint::{sign_checkpoint, Checkpoint, NoteError, NoteSigner};
use ace_core::envelope::envelope_sha256;
use ace_core::leaf::LeafRecord;
use ace_core::merkle::Hash;
use ace_core::rejection::Rejection;
use ace_core::statement::Subject;
use ace_core::tiles::{TileAppender, TileError, TileId};
use bytes::Bytes;

use crate::verify::{Incoming, Verdict};

/// Why a batch could not be planned: both are broken invariants, not bad input.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("signing the checkpoint: {0}")]
    Note(#[from] NoteError),
    #[error("extending the tree: {0}")]
    Tiles(#[from] TileError),
}

/// The log's state as the sequencer holds it between batches.
#[derive(Debug, Clone)]
pub struct LogState {
    pub tiles: TileAppender,
    pub last_block: BlockHeader,
}

impl LogState {
    pub fn tree_size(&self) -> u64 {
        self.tiles.tree_size()
    }
}

/// An entry already in the log, found by digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExistingEntry {
    pub index: u64,
    pub block: u64,
    pub stream_seq: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct NewEntry {
    pub index: u64,
    pub digest: String,
    pub producer: String,
    pub envelope: Bytes,
    pub leaf: Vec<u8>,
    pub integrated_time: i64,
    pub payload_type: String,
    pub predicate_type: Option<String>,
    pub keyid: String,
    pub stream_seq: u64,
    pub warnings: Vec<String>,
    pub subjects: Vec<Subject>,
}

#[derive(Debug, Clone)]
pub struct DlqRow {
    pub stream_seq: u64,
    pub subject: String,
    pub producer: String,
    pub digest: Option<String>,
    pub rejection: Rejection,
    pub envelope: Bytes,
    pub headers: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct SealedBlock {
    pub header: BlockHeader,
    pub block_hash: Hash,
    pub checkpoint: String,
}

/// Everything one batch writes, and what each message is told.
#[derive(Debug)]
pub struct Plan {
    pub entries: Vec<NewEntry>,
    pub tiles: Vec<(TileId, Vec<Hash>)>,
    /// None when the batch appended nothing (only duplicates and rejections).
    pub block: Option<SealedBlock>,
    pub dlq: Vec<DlqRow>,
    /// One per message, in message order: (producer, ack).
    pub acks: Vec<(String, Ack)>,
    pub state: LogState,
}

/// Plan a batch. `messages[i]` has verdict `verdicts[i]`; `existing` maps digests already
/// in the log to their entries; `now_ms` becomes the integrated time of every new entry.
pub fn plan(
    state: &LogState,
    messages: &[Incoming],
    verdicts: Vec<Verdict>,
    existing: &HashMap<String, ExistingEntry>,
    now_ms: i64,
    signer: &NoteSigner,
) -> Result<Plan, PlanError> {
    let mut next = state.clone();
    // Time never runs backwards in the log, whatever the clock does.
    let now_ms = now_ms.max(state.last_block.sealed_at);
    let height = state.last_block.height + 1;
    let first_index = state.tree_size();
    let mut entries: Vec<NewEntry> = Vec::new();
    let mut in_batch: HashMap<String, u64> = HashMap::new();
    let mut dlq = Vec::new();
    let mut acks = Vec::with_capacity(messages.len());

    for (msg, verdict) in messages.iter().zip(verdicts) {
        let producer = verdict.producer().to_string();
        match verdict {
            Verdict::Reject {
                producer,
                digest,
                rejection,
            } => {
                let digest = digest.map(|d| d.as_str().to_string());
                acks.push((
                    producer.clone(),
                    Ack {
                        digest: digest.clone(),
                        status: AckStatus::Rejected,
                        index: None,
                        block: None,
                        warnings: vec![],
                        reason: Some(rejection.clone()),
                        stream_seq: msg.stream_seq,
                    },
                ));
                dlq.push(DlqRow {
                    stream_seq: msg.stream_seq,
                    subject: msg.subject.clone(),
                    producer,
                    digest,
                    rejection,
                    envelope: msg.payload.clone(),
                    headers: msg.headers.clone(),
                });
            }
            Verdict::Admit(a) => {
                let digest = a.digest.as_str().to_string();
                let dup = if let Some(e) = existing.get(&digest) {
                    // A redelivery of the very message that made the entry is that
                    // message's own acceptance, not a duplicate.
                    let status = if e.stream_seq == Some(msg.stream_seq) {
                        AckStatus::Accepted
                    } else {
                        AckStatus::Duplicate
                    };
                    Some((status, e.index, e.block))
                } else {
                    in_batch
                        .get(&digest)
                        .map(|&i| (AckStatus::Duplicate, i, height))
                };
                if let Some((status, index, block)) = dup {
                    acks.push((
                        producer,
                        Ack {
                            digest: Some(digest),
                            status,
                            index: Some(index),
                            block: Some(block),
                            warnings: vec![],
                            reason: None,
                            stream_seq: msg.stream_seq,
                        },
                    ));
                    continue;
                }
                let index = first_index + entries.len() as u64;
                in_batch.insert(digest.clone(), index);
                let leaf = LeafRecord {
                    digest: digest.clone(),
                    envelope_sha256: envelope_sha256(&msg.payload),
                    index,
                    integrated_time: now_ms,
                    producer: a.producer.clone(),
                };
                acks.push((
                    producer,
                    Ack {
                        digest: Some(digest.clone()),
                        status: AckStatus::Accepted,
                        index: Some(index),
                        block: Some(height),
                        warnings: a.warnings.clone(),
                        reason: None,
                        stream_seq: msg.stream_seq,
                    },
                ));
                entries.push(NewEntry {
                    index,
                    digest,
                    producer: a.producer,
                    envelope: msg.payload.clone(),
                    leaf: leaf.to_bytes(),
                    integrated_time: now_ms,
                    payload_type: a.payload_type,
                    predicate_type: a.predicate_type,
                    keyid: a.keyid.as_str().to_string(),
                    stream_seq: msg.stream_seq,
                    warnings: a.warnings,
                    subjects: a.subjects,
                });
            }
        }
    }

    let (tiles, block) = if entries.is_empty() {
        (Vec::new(), None)
    } else {
        let leaf_hashes: Vec<Hash> = entries
            .iter()
            .map(|e| ace_core::merkle::leaf_hash(&e.leaf))
            .collect();
        let tiles = next.tiles.append(&leaf_hashes)?;
        let header = state
            .last_block
            .next(next.tiles.tree_size(), next.tiles.root(), now_ms);
        let checkpoint = sign_checkpoint(
            &Checkpoint {
                origin: signer.name().to_string(),
                tree_size: header.tree_size,
                root_hash: header.root_hash,
                extensions: vec![],
            },
            &[signer],
        )?;
        next.last_block = header;
        (
            tiles,
            Some(SealedBlock {
                block_hash: header.block_hash(),
                header,
                checkpoint,
            }),
        )
    };
    Ok(Plan {
        entries,
        tiles,
        block,
        dlq,
        acks,
        state: next,
    })
}

/// The genesis block: tree size 0, signed like every other.
pub fn genesis(now_ms: i64, signer: &NoteSigner) -> Result<SealedBlock, NoteError> {
    let header = BlockHeader::genesis(now_ms);
    let checkpoint = sign_checkpoint(
        &Checkpoint {
            origin: signer.name().to_string(),
            tree_size: 0,
            root_hash: header.root_hash,
            extensions: vec![],
        },
        &[signer],
    )?;
    Ok(SealedBlock {
        block_hash: header.block_hash(),
        header,
        checkpoint,
    })
}
