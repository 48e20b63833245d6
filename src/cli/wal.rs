//! `drctl wal push|fetch|list`: the WAL archive of a `postgres_physical`
//! job. `push` is PostgreSQL's `archive_command`, `fetch` a
//! `restore_command`; both are quiet on success, as those want.

use drctl::config::LoadedConfig;
use drctl::engine::wal;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum WalCommand {
    /// Store one WAL file (archive_command = 'drctl wal push --job JOB %p');
    /// the same file again is a no-op, different content under a stored
    /// name is refused
    Push {
        /// The postgres_physical job [default: the only one]
        #[arg(long)]
        job: Option<String>,
        /// The file PostgreSQL hands over (%p)
        path: PathBuf,
    },
    /// Fetch one WAL file, verified (restore_command = 'drctl wal fetch
    /// --job JOB %f %p'); exit 4 when it is not stored
    Fetch {
        /// The postgres_physical job [default: the only one]
        #[arg(long)]
        job: Option<String>,
        /// The age identity file, if the WAL is encrypted [default: as for restore]
        #[arg(long)]
        identity: Option<PathBuf>,
        /// The file name PostgreSQL asks for (%f)
        name: String,
        /// Where to write it (%p)
        dest: PathBuf,
    },
    /// The stored WAL: files, newest, and gaps in the chain
    List {
        /// The postgres_physical job [default: the only one]
        #[arg(long)]
        job: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn exec(cfg: &LoadedConfig, c: WalCommand) -> anyhow::Result<()> {
    match c {
        WalCommand::Push { job, path } => {
            match wal::push_file(cfg, job.as_deref(), &path).await? {
                wal::Pushed::Stored(r) => {
                    tracing::info!(file = %r.name, bytes = r.stored_bytes, "WAL file stored");
                }
                wal::Pushed::AlreadyStored => {
                    tracing::info!(file = %path.display(), "WAL file already stored with the same content");
                }
            }
            Ok(())
        }
        WalCommand::Fetch {
            job,
            identity,
            name,
            dest,
        } => Ok(wal::fetch_file(cfg, job.as_deref(), &name, &dest, identity.as_deref()).await?),
        WalCommand::List { job, json } => {
            let s = wal::summary(cfg, job.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(());
            }
            println!("job {} in {}", s.job, s.repository);
            println!(
                "files {}  segments {}  first {}  last {}  newest stored {}",
                s.files,
                s.segments,
                s.first.as_deref().unwrap_or("-"),
                s.last.as_deref().unwrap_or("-"),
                s.newest_stored_at
                    .map_or_else(|| "-".to_owned(), |t| super::when(&t.to_rfc3339()))
            );
            for g in &s.gaps {
                println!("GAP {g}");
            }
            for m in &s.missing_objects {
                println!("MISSING {m}");
            }
            for d in &s.diverged {
                println!("WARNING wal_timelines_diverged: {d}");
            }
            Ok(())
        }
    }
}
