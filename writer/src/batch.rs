//! Sequencing one batch: dedupe, assign contiguous indexes, build leaves, extend the tile
//! tree, seal the block and sign its checkpoint. Pure: the store writes what this plans,
//! in one transaction.

use std::collections::HashMap;

use ace_core::ack::{Ack, AckStatus};
use ace_core::block::BlockHeader;
use ace_core::checkpoint::{sign_checkpoint, Checkpoint, NoteError, NoteSigner};
use ace_core::envelope::envelope_sha256;
use ace_core::ids::ProducerId;
use ace_core::key_event::KEY_EVENT_PAYLOAD_TYPE;
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
    /// None for the entries the ledger appends itself.
    pub stream_seq: Option<u64>,
    pub warnings: Vec<String>,
    pub subjects: Vec<Subject>,
    /// The key event this entry records (producer `_ledger`).
    pub key_event: Option<u64>,
}

/// A key event to append, signed by the ledger's keys.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub event: u64,
    pub envelope: Bytes,
    pub digest: String,
    pub keyid: String,
}

impl LedgerEntry {
    pub fn new(event: &ace_core::key_event::KeyEvent, signers: &[&NoteSigner]) -> LedgerEntry {
        let env = event.envelope(signers);
        LedgerEntry {
            event: event.event,
            digest: env.digest().as_str().to_owned(),
            keyid: env
                .signatures
                .first()
                .map(|s| s.keyid.clone())
                .unwrap_or_default(),
            envelope: Bytes::from(env.to_json()),
        }
    }
}

/// A rejected message's row. Its identity is (`stream_seq`, `stored_at`): a redelivery of
/// the message keeps its first row, a message that reuses the sequence in a recreated
/// stream gets its own.
#[derive(Debug, Clone)]
pub struct DlqRow {
    pub stream_seq: u64,
    pub stored_at: chrono::DateTime<chrono::Utc>,
    pub delivered: i64,
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
/// `ledger` (key events) goes first, so that a key's registration precedes its use.
pub fn plan(
    state: &LogState,
    messages: &[Incoming],
    verdicts: Vec<Verdict>,
    existing: &HashMap<String, ExistingEntry>,
    now_ms: i64,
    signers: &[&NoteSigner],
    ledger: Vec<LedgerEntry>,
) -> Result<Plan, PlanError> {
    let mut next = state.clone();
    // Time never runs backwards in the log, whatever the clock does.
    let now_ms = now_ms.max(state.last_block.sealed_at);
    let height = state.last_block.height + 1;
    let first_index = state.tree_size();
    let mut entries: Vec<NewEntry> = Vec::new();
    // digest -> (index, stream_seq) of the entries this batch creates.
    let mut in_batch: HashMap<String, (u64, u64)> = HashMap::new();
    let mut dlq = Vec::new();
    let mut acks = Vec::with_capacity(messages.len());

    for l in ledger {
        let index = first_index + entries.len() as u64;
        let leaf = LeafRecord {
            digest: l.digest.clone(),
            envelope_sha256: envelope_sha256(&l.envelope),
            index,
            integrated_time: now_ms,
            producer: ProducerId::LEDGER.to_owned(),
        };
        entries.push(NewEntry {
            index,
            digest: l.digest,
            producer: ProducerId::LEDGER.to_owned(),
            envelope: l.envelope,
            leaf: leaf.to_bytes(),
            integrated_time: now_ms,
            payload_type: KEY_EVENT_PAYLOAD_TYPE.to_owned(),
            predicate_type: None,
            keyid: l.keyid,
            stream_seq: None,
            warnings: Vec::new(),
            subjects: Vec::new(),
            key_event: Some(l.event),
        });
    }

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
                    stored_at: msg.stored_at,
                    delivered: msg.delivered,
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
                // A redelivery of the very message that made the entry (same stream
                // sequence, possibly twice in one batch) is that message's own
                // acceptance, not a duplicate.
                let status_for = |seq: Option<u64>| {
                    if seq == Some(msg.stream_seq) {
                        AckStatus::Accepted
                    } else {
                        AckStatus::Duplicate
                    }
                };
                let dup = if let Some(e) = existing.get(&digest) {
                    Some((status_for(e.stream_seq), e.index, e.block))
                } else {
                    in_batch
                        .get(&digest)
                        .map(|&(i, seq)| (status_for(Some(seq)), i, height))
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
                in_batch.insert(digest.clone(), (index, msg.stream_seq));
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
                    stream_seq: Some(msg.stream_seq),
                    warnings: a.warnings,
                    subjects: a.subjects,
                    key_event: None,
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
                origin: origin(signers),
                tree_size: header.tree_size,
                root_hash: header.root_hash,
                extensions: vec![],
            },
            signers,
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
pub fn genesis(now_ms: i64, signers: &[&NoteSigner]) -> Result<SealedBlock, NoteError> {
    let header = BlockHeader::genesis(now_ms);
    let checkpoint = sign_checkpoint(
        &Checkpoint {
            origin: origin(signers),
            tree_size: 0,
            root_hash: header.root_hash,
            extensions: vec![],
        },
        signers,
    )?;
    Ok(SealedBlock {
        block_hash: header.block_hash(),
        header,
        checkpoint,
    })
}

/// The origin line: every ledger key bears the log's name (checked when they are loaded).
fn origin(signers: &[&NoteSigner]) -> String {
    signers
        .first()
        .map(|s| s.name().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Admitted;
    use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
    use ace_core::ids::KeyId;
    use ace_core::merkle::MemoryTree;
    use ace_core::rejection::RejectionCode;
    use ed25519_dalek::SigningKey;

    fn signer() -> NoteSigner {
        NoteSigner::from_seed("test.example/log", [7u8; 32]).unwrap()
    }

    fn genesis_state() -> LogState {
        LogState {
            tiles: TileAppender::new(),
            last_block: BlockHeader::genesis(1_000),
        }
    }

    /// A message and its admitting verdict for statement `n`.
    fn admitted(n: u8, seq: u64) -> (Incoming, Verdict) {
        let key = SigningKey::from_bytes(&[1u8; 32]);
        let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &[b'{', n, b'}'], &key);
        let raw = env.to_json();
        (
            Incoming {
                subject: "ace.intake.acme".into(),
                payload: Bytes::from(raw),
                stream_seq: seq,
                stored_at: chrono::DateTime::UNIX_EPOCH,
                delivered: 1,
                published_at_ms: None,
                headers: serde_json::json!({}),
            },
            Verdict::Admit(Admitted {
                producer: "acme".into(),
                digest: env.digest(),
                payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
                predicate_type: None,
                subjects: vec![],
                keyid: KeyId::from_public_key(&key.verifying_key()),
                warnings: vec![],
            }),
        )
    }

    fn run(
        state: &LogState,
        items: Vec<(Incoming, Verdict)>,
        existing: &HashMap<String, ExistingEntry>,
    ) -> Plan {
        let (msgs, verdicts): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        plan(
            state,
            &msgs,
            verdicts,
            existing,
            2_000,
            &[&signer()],
            Vec::new(),
        )
        .unwrap()
    }

    #[test]
    fn new_entries_get_contiguous_indexes_a_block_and_a_root_over_their_leaves() {
        let p = run(
            &genesis_state(),
            (0..5).map(|n| admitted(n, n as u64 + 1)).collect(),
            &HashMap::new(),
        );
        assert_eq!(
            p.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        let block = p.block.as_ref().unwrap();
        assert_eq!(
            (
                block.header.height,
                block.header.first_index,
                block.header.tree_size
            ),
            (1, 0, 5)
        );
        let mut tree = MemoryTree::new();
        for e in &p.entries {
            tree.push(ace_core::merkle::leaf_hash(&e.leaf));
        }
        assert_eq!(block.header.root_hash, tree.root());
        assert_eq!(
            block.header.prev_block_hash,
            BlockHeader::genesis(1_000).block_hash()
        );
        assert!(p
            .acks
            .iter()
            .all(|(_, a)| a.status == AckStatus::Accepted && a.block == Some(1)));
        let cp = ace_core::checkpoint::open_checkpoint(&block.checkpoint, &[signer().verifier()])
            .unwrap();
        assert_eq!((cp.tree_size, cp.root_hash), (5, tree.root()));
    }

    #[test]
    fn duplicates_in_the_batch_and_in_the_log_name_the_original() {
        let state = genesis_state();
        let (m0, v0) = admitted(0, 10);
        let (m0b, v0b) = admitted(0, 11); // same statement, another message
        let (m0c, v0c) = admitted(0, 10); // the first message delivered twice
        let (m1, v1) = admitted(1, 12);
        let mut existing = HashMap::new();
        if let Verdict::Admit(a) = &v1 {
            existing.insert(
                a.digest.as_str().to_string(),
                ExistingEntry {
                    index: 41,
                    block: 9,
                    stream_seq: Some(3),
                },
            );
        }
        let p = run(
            &state,
            vec![(m0, v0), (m0b, v0b), (m0c, v0c), (m1, v1)],
            &existing,
        );
        assert_eq!(p.entries.len(), 1);
        let st: Vec<_> = p
            .acks
            .iter()
            .map(|(_, a)| (a.status, a.index, a.block))
            .collect();
        assert_eq!(
            st,
            vec![
                (AckStatus::Accepted, Some(0), Some(1)),
                (AckStatus::Duplicate, Some(0), Some(1)),
                (AckStatus::Accepted, Some(0), Some(1)),
                (AckStatus::Duplicate, Some(41), Some(9)),
            ]
        );
    }

    #[test]
    fn a_redelivered_message_already_in_the_log_is_accepted_again() {
        let (m, v) = admitted(0, 7);
        let mut existing = HashMap::new();
        if let Verdict::Admit(a) = &v {
            existing.insert(
                a.digest.as_str().to_string(),
                ExistingEntry {
                    index: 3,
                    block: 2,
                    stream_seq: Some(7),
                },
            );
        }
        let p = run(&genesis_state(), vec![(m, v)], &existing);
        assert!(p.block.is_none(), "nothing new, no block");
        assert_eq!(p.acks[0].1.status, AckStatus::Accepted);
        assert_eq!(p.acks[0].1.index, Some(3));
    }

    #[test]
    fn rejections_become_dlq_rows_and_seal_no_block_alone() {
        let (m, _) = admitted(0, 5);
        let v = Verdict::Reject {
            producer: "acme".into(),
            digest: None,
            rejection: Rejection::new(RejectionCode::MalformedEnvelope, "nope")
                .with_field("payload"),
        };
        let p = run(&genesis_state(), vec![(m.clone(), v)], &HashMap::new());
        assert!(p.block.is_none() && p.entries.is_empty());
        assert_eq!(p.dlq.len(), 1);
        assert_eq!(p.dlq[0].envelope, m.payload);
        assert_eq!(
            (p.dlq[0].stream_seq, p.dlq[0].stored_at),
            (m.stream_seq, m.stored_at),
            "the row is named by its message's identity in JetStream"
        );
        assert_eq!(p.acks[0].1.status, AckStatus::Rejected);
        assert_eq!(p.state.last_block, genesis_state().last_block);
    }

    #[test]
    fn the_next_batch_continues_the_tree_and_time_never_goes_back() {
        let p1 = run(
            &genesis_state(),
            (0..3).map(|n| admitted(n, n as u64)).collect(),
            &HashMap::new(),
        );
        let (msgs, verdicts): (Vec<_>, Vec<_>) = (3..6).map(|n| admitted(n, n as u64)).unzip();
        // A clock that went backwards.
        let p2 = plan(
            &p1.state,
            &msgs,
            verdicts,
            &HashMap::new(),
            500,
            &[&signer()],
            Vec::new(),
        )
        .unwrap();
        let b2 = p2.block.unwrap().header;
        assert_eq!((b2.height, b2.first_index, b2.tree_size), (2, 3, 6));
        assert_eq!(b2.prev_block_hash, p1.block.unwrap().header.block_hash());
        assert!(b2.sealed_at >= 2_000);
        assert!(p2.entries.iter().all(|e| e.integrated_time >= 2_000));
    }
}
