//! Streams and the writer's consumer under a unique prefix on a real NATS server, deleted
//! when the test ends, so tests share one server without colliding.

use ace_core::nats::{InitOptions, Names};
use async_nats::jetstream;

use crate::db::{run_detached, unique};

/// The shared test server.
pub const NATS_URL: &str = "nats://127.0.0.1:4222";

pub struct TestNats {
    pub url: String,
    pub names: Names,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

impl TestNats {
    pub async fn new() -> TestNats {
        Self::with(NATS_URL, InitOptions::default()).await
    }

    pub async fn with(url: &str, opts: InitOptions) -> TestNats {
        let names = Names::new(&unique("t")).expect("a unique prefix is a valid prefix");
        let client = async_nats::connect(url)
            .await
            .unwrap_or_else(|e| panic!("the test NATS server at {url} is needed: {e}"));
        let js = jetstream::new(client.clone());
        ace_core::nats::init(&js, &names, &opts)
            .await
            .unwrap_or_else(|e| panic!("creating the test streams on {url}: {e}"));
        TestNats {
            url: url.into(),
            names,
            client,
            js,
        }
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let js = self.js.clone();
        let streams = [
            self.names.intake_stream(),
            self.names.acks_stream(),
            self.names.dlq_stream(),
            self.names.checkpoints_stream(),
        ];
        run_detached(async move {
            for s in streams {
                let _ = js.delete_stream(&s).await;
            }
        });
    }
}
