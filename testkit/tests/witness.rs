//! The test witness over real loopback HTTP, driven as the anchor will drive a witness:
//! request bodies from `core::witness`, proofs from `core::merkle`, answers read with
//! `interpret_response`.

use std::net::SocketAddr;
use std::sync::Arc;

use ace_core::checkpoint::{open_checkpoint, sign_checkpoint, Checkpoint, NoteSigner};
use ace_core::merkle::{consistency_proof, leaf_hash, Hash, MemoryTree};
use ace_core::witness::{
    add_checkpoint_body, cosigned_note, interpret_response, note_body, verify_cosigned_note,
    AddCheckpointOutcome, CosignatureVerifier,
};
use ace_testkit::witness::{post, TestWitness};

const ORIGIN: &str = "ledger.test/log";

fn ledger() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, [1; 32]).unwrap()
}

fn tree(n: u64, fork_at: Option<u64>) -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0..n {
        let forked = fork_at.is_some_and(|f| i >= f);
        t.push(leaf_hash(
            format!("leaf {i}{}", if forked { " forked" } else { "" }).as_bytes(),
        ));
    }
    t
}

fn checkpoint(t: &MemoryTree, size: u64, signer: &NoteSigner) -> String {
    let cp = Checkpoint {
        origin: signer.name().to_string(),
        tree_size: size,
        root_hash: t.root_at(size).unwrap(),
        extensions: vec!["ace-ledger test".into()],
    };
    sign_checkpoint(&cp, &[signer]).unwrap()
}

struct Client {
    addr: SocketAddr,
    witness: CosignatureVerifier,
}

impl Client {
    async fn ask(&self, old: u64, proof: &[Hash], note: &str) -> AddCheckpointOutcome {
        let a = post(
            self.addr,
            "/add-checkpoint",
            &add_checkpoint_body(old, proof, note),
        )
        .await
        .unwrap();
        interpret_response(
            a.status,
            a.content_type.as_deref(),
            &a.body,
            note_body(note).unwrap(),
            std::slice::from_ref(&self.witness),
        )
        .unwrap()
    }
}

async fn start() -> (Arc<TestWitness>, Client) {
    let w = Arc::new(TestWitness::new("witness.test/w1", ledger().verifier()));
    let addr = Arc::clone(&w).spawn().await.unwrap();
    let witness = CosignatureVerifier::parse(&w.vkey()).unwrap();
    (w, Client { addr, witness })
}

fn refused(o: &AddCheckpointOutcome) -> u16 {
    match o {
        AddCheckpointOutcome::Refused { status, .. } => *status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn add_checkpoint_follows_tlog_witness() {
    let (w, c) = start().await;
    let signer = ledger();
    let t = tree(40, None);
    let mut asked = 0;

    // First contact: old 0, no proof → cosigned; the cosigned note opens with the
    // ledger key alone and with the witness key.
    let n5 = checkpoint(&t, 5, &signer);
    let AddCheckpointOutcome::Cosigned(cos) = c.ask(0, &[], &n5).await else {
        panic!("first contact not cosigned")
    };
    asked += 1;
    assert_eq!(cos.len(), 1);
    assert_eq!(cos[0].witness, "witness.test/w1");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(cos[0].timestamp <= now && cos[0].timestamp + 60 > now);
    let cosigned = cosigned_note(&n5, &[cos[0].line.clone()]);
    assert_eq!(
        open_checkpoint(&cosigned, &[signer.verifier()])
            .unwrap()
            .tree_size,
        5
    );
    let (cp, found) = verify_cosigned_note(
        &cosigned,
        &[signer.verifier()],
        std::slice::from_ref(&c.witness),
    )
    .unwrap();
    assert_eq!((cp.tree_size, found), (5, cos.clone()));
    assert_eq!(w.latest(ORIGIN), Some((5, t.root_at(5).unwrap())));

    // Growth with the right old size and a consistency proof → cosigned.
    let n13 = checkpoint(&t, 13, &signer);
    let p = consistency_proof(5, 13, &t).unwrap();
    assert!(!p.is_empty());
    assert!(matches!(
        c.ask(5, &p, &n13).await,
        AddCheckpointOutcome::Cosigned(_)
    ));
    asked += 1;

    // A stale old size → 409 with the witness's size; the retry from there succeeds.
    let n20 = checkpoint(&t, 20, &signer);
    assert_eq!(
        c.ask(5, &consistency_proof(5, 20, &t).unwrap(), &n20).await,
        AddCheckpointOutcome::Conflict { witness_size: 13 }
    );
    assert_eq!(
        c.ask(0, &[], &n20).await,
        AddCheckpointOutcome::Conflict { witness_size: 13 }
    );
    assert!(matches!(
        c.ask(13, &consistency_proof(13, 20, &t).unwrap(), &n20)
            .await,
        AddCheckpointOutcome::Cosigned(_)
    ));
    asked += 3;

    // A bad proof → 422: one hash flipped, one hash missing, and a fork's proof.
    let n27 = checkpoint(&t, 27, &signer);
    let mut bad = consistency_proof(20, 27, &t).unwrap();
    bad[0][0] ^= 1;
    assert_eq!(refused(&c.ask(20, &bad, &n27).await), 422);
    bad[0][0] ^= 1;
    bad.pop();
    assert_eq!(refused(&c.ask(20, &bad, &n27).await), 422);
    let fork = tree(27, Some(18));
    let forked = checkpoint(&fork, 27, &signer);
    assert_eq!(
        refused(
            &c.ask(20, &consistency_proof(20, 27, &fork).unwrap(), &forked)
                .await
        ),
        422
    );
    asked += 3;
    assert_eq!(w.latest(ORIGIN).map(|l| l.0), Some(20));

    // Signed by another key for the origin → 403; an unknown origin → 404.
    let impostor = NoteSigner::from_seed(ORIGIN, [2; 32]).unwrap();
    let p27 = consistency_proof(20, 27, &t).unwrap();
    assert_eq!(
        refused(&c.ask(20, &p27, &checkpoint(&t, 27, &impostor)).await),
        403
    );
    let stranger = NoteSigner::from_seed("other.test/log", [1; 32]).unwrap();
    assert_eq!(
        refused(&c.ask(0, &[], &checkpoint(&t, 27, &stranger)).await),
        404
    );
    // The ledger's signature plus an unknown one: the unknown one is ignored.
    let both = sign_checkpoint(
        &Checkpoint::parse_body(note_body(&n27).unwrap()).unwrap(),
        &[&signer, &impostor],
    )
    .unwrap();
    assert!(matches!(
        c.ask(20, &p27, &both).await,
        AddCheckpointOutcome::Cosigned(_)
    ));
    asked += 3;

    // Same size: the same root is cosigned again (no proof); another root is a 409
    // without a size; old beyond the checkpoint and a malformed body are 400s.
    assert!(matches!(
        c.ask(27, &[], &n27).await,
        AddCheckpointOutcome::Cosigned(_)
    ));
    let o = c.ask(27, &[], &forked).await;
    assert_eq!(refused(&o), 409);
    assert_eq!(
        refused(&c.ask(40, &[], &checkpoint(&t, 30, &signer)).await),
        400
    );
    let a = post(c.addr, "/add-checkpoint", "old 027\n\nx")
        .await
        .unwrap();
    assert_eq!(a.status, 400);
    asked += 4;

    // Down: 503, counted; back up, it resumes where it was.
    w.set_down(true);
    let n40 = checkpoint(&t, 40, &signer);
    let p40 = consistency_proof(27, 40, &t).unwrap();
    assert_eq!(refused(&c.ask(27, &p40, &n40).await), 503);
    w.set_down(false);
    assert!(matches!(
        c.ask(27, &p40, &n40).await,
        AddCheckpointOutcome::Cosigned(_)
    ));
    asked += 2;
    assert_eq!(w.requests(), asked);
    assert_eq!(w.latest(ORIGIN), Some((40, t.root())));
}

/// The old-size check and the update are atomic: of concurrent requests from the same old
/// size, one is cosigned and the others get the new size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_cannot_roll_the_witness_back() {
    let (w, c) = start().await;
    let signer = ledger();
    let t = tree(64, None);
    let n8 = checkpoint(&t, 8, &signer);
    assert!(matches!(
        c.ask(0, &[], &n8).await,
        AddCheckpointOutcome::Cosigned(_)
    ));
    let c = Arc::new(c);
    let mut tasks = Vec::new();
    for size in 20..30 {
        let c = Arc::clone(&c);
        let note = checkpoint(&t, size, &signer);
        let proof = consistency_proof(8, size, &t).unwrap();
        tasks.push(tokio::spawn(async move {
            (size, c.ask(8, &proof, &note).await)
        }));
    }
    let mut cosigned = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (size, AddCheckpointOutcome::Cosigned(_)) => cosigned.push(size),
            (_, AddCheckpointOutcome::Conflict { witness_size }) => {
                assert!((20..30).contains(&witness_size))
            }
            (_, other) => panic!("{other:?}"),
        }
    }
    assert_eq!(cosigned.len(), 1, "{cosigned:?}");
    assert_eq!(w.latest(ORIGIN).map(|l| l.0), Some(cosigned[0]));
}
