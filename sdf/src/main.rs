//! `ace-sdf`: runs the SDF scenarios (sdf/sdf.yml) against a stack it starts itself.
//! Exits 0 when every scenario passed, 1 when one failed, 2 when it could not run.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "ace-sdf",
    about = "Run the SDF end-to-end scenarios against a stack started in a clean namespace"
)]
struct Args {
    /// The scenario file.
    #[arg(long, default_value = "sdf/sdf.yml")]
    file: PathBuf,
    /// Run only the scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Where acectl and the service binaries are; default beside this binary.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The Postgres server (superuser `postgres`, trust or PGPASSWORD) the stack's fresh
    /// database is made on.
    #[arg(long, default_value = "127.0.0.1")]
    pg_host: String,
    #[arg(long, default_value_t = 5432)]
    pg_port: u16,
    /// Keep the stack's directory (logs, keys, configs) even when everything passed.
    #[arg(long)]
    keep: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let bin_dir = match args.bin_dir.clone().map(Ok).unwrap_or_else(|| {
        std::env::current_exe().map(|p| p.parent().map(PathBuf::from).unwrap_or_default())
    }) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("ace-sdf: finding the binaries' directory: {e}");
            std::process::exit(2);
        }
    };
    let opts = ace_sdf::RunOptions {
        file: args.file,
        only: args.only,
        keep: args.keep,
        stack: ace_sdf::StackOptions {
            bin_dir,
            pg_host: args.pg_host,
            pg_port: args.pg_port,
        },
    };
    let mut out = std::io::stdout();
    let code = match ace_sdf::run(&opts, &mut out).await {
        Ok(s) if s.failed == 0 => 0,
        Ok(_) => 1,
        Err(e) => {
            eprintln!("ace-sdf: {e}");
            2
        }
    };
    std::process::exit(code);
}
