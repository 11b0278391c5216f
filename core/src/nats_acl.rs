//! nats-server's authorization block for a ledger: one NKey user per producer and per
//! service, each allowed exactly the subjects it uses (DESIGN.md, "NATS subjects").
//! Rendered by `acectl nats render` from the `nats_users` table; included by the server's
//! config (`include "ace-auth.conf"`), reloaded with SIGHUP.

use crate::nats::{Names, WRITER_CONSUMER};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// May publish only to its own intake subject and read only its own acks.
    Producer,
    /// Pulls from the intake through its durable consumer, publishes acks and DLQ notices.
    Writer,
    /// Publishes checkpoints.
    Anchor,
    /// Re-publishes DLQ items to intake subjects and reads the writer consumer's info.
    Dashboard,
    /// Everything: `acectl nats init` (streams and consumer). Keep its seed offline.
    Admin,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "producer" => Kind::Producer,
            "writer" => Kind::Writer,
            "anchor" => Kind::Anchor,
            "dashboard" => Kind::Dashboard,
            "admin" => Kind::Admin,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub kind: Kind,
    /// `U…` public NKey.
    pub public_key: String,
}

/// (publish allow, subscribe allow) of a user.
pub fn permissions(names: &Names, u: &User) -> (Vec<String>, Vec<String>) {
    let intake = names.intake_stream();
    let inbox = "_INBOX.>".to_string();
    match u.kind {
        Kind::Producer => (
            vec![names.intake_subject(&u.name)],
            vec![names.ack_subject(&u.name), inbox],
        ),
        Kind::Writer => (
            vec![
                format!("$JS.API.STREAM.INFO.{intake}"),
                format!("$JS.API.CONSUMER.INFO.{intake}.{WRITER_CONSUMER}"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{intake}.{WRITER_CONSUMER}"),
                format!("$JS.ACK.{intake}.{WRITER_CONSUMER}.>"),
                names.ack_subject("*"),
                names.dlq_subject("*"),
            ],
            vec![inbox],
        ),
        Kind::Anchor => (vec![names.checkpoint_subject()], vec![inbox]),
        Kind::Dashboard => (
            vec![
                names.intake_subject("*"),
                format!("$JS.API.CONSUMER.INFO.{intake}.{WRITER_CONSUMER}"),
            ],
            vec![inbox],
        ),
        Kind::Admin => (vec![">".into()], vec![">".into()]),
    }
}

fn list(v: &[String]) -> String {
    let quoted: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The `authorization { users = [...] }` block. Users not given (a suspended producer)
/// are absent, so the server refuses their connections.
pub fn render(names: &Names, users: &[User]) -> String {
    let mut out = format!(
        "# Rendered by `acectl nats render` for prefix {:?}; do not edit: re-render instead.\nauthorization {{\n  users = [\n",
        names.prefix()
    );
    for u in users {
        let (publish, subscribe) = permissions(names, u);
        out.push_str(&format!(
            "    # {} ({:?})\n    {{ nkey: {:?}, permissions: {{ publish: {{ allow: {} }}, subscribe: {{ allow: {} }} }} }}\n",
            u.name,
            u.kind,
            u.public_key,
            list(&publish),
            list(&subscribe)
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producers_get_their_own_subjects_only() {
        let names = Names::new("ace").expect("prefix");
        let u = User {
            name: "acme".into(),
            kind: Kind::Producer,
            public_key: format!("U{}", "A".repeat(55)),
        };
        let (p, s) = permissions(&names, &u);
        assert_eq!(p, vec!["ace.intake.acme"]);
        assert_eq!(s, vec!["ace.ack.acme", "_INBOX.>"]);
        let text = render(&names, &[u]);
        assert!(
            text.contains("publish: { allow: [\"ace.intake.acme\"] }"),
            "{text}"
        );
        assert!(
            !text.contains("$JS"),
            "a producer has no JetStream API right: {text}"
        );
    }

    #[test]
    fn the_writer_is_limited_to_its_stream_and_consumer() {
        let names = Names::new("t1").expect("prefix");
        let u = User {
            name: "writer".into(),
            kind: Kind::Writer,
            public_key: format!("U{}", "B".repeat(55)),
        };
        let (p, _) = permissions(&names, &u);
        assert!(
            p.iter()
                .all(|s| !s.starts_with("$JS") || s.contains("T1_INTAKE")),
            "{p:?}"
        );
        assert!(p.contains(&"$JS.API.CONSUMER.MSG.NEXT.T1_INTAKE.WRITER".to_string()));
    }
}
