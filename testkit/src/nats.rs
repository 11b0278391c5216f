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

/// A private nats-server (Debian's `/usr/sbin/nats-server`) for a test that configures one
/// its own way (authorization, TLS): `dir/server.conf` is `listen` on a free loopback port
/// followed by `config`; its log goes to `dir/server.log`. Killed when dropped.
pub struct PrivateNats {
    pub child: std::process::Child,
    pub port: u16,
}

impl PrivateNats {
    /// Starts it and waits (up to 30 s) until it listens: the INFO line comes before any
    /// TLS, so a TCP connect proves the server is up without a handshake.
    pub fn start(dir: &std::path::Path, config: &str) -> PrivateNats {
        let port = crate::pgserver::free_port();
        let conf = dir.join("server.conf");
        std::fs::write(&conf, format!("listen: \"127.0.0.1:{port}\"\n{config}"))
            .expect("writing the private nats-server's config");
        let log = dir.join("server.log");
        let child = std::process::Command::new("/usr/sbin/nats-server")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the private nats-server's log"))
            .spawn()
            .expect("starting a private nats-server (Debian package nats-server)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server on {port} did not start; see {}",
                log.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        PrivateNats { child, port }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
