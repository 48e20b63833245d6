//! Command-line front end. Thin: each subcommand file parses its arguments,
//! calls one library entry point and renders text, JSON or a progress bar.

/// `println!` for the CLI: a reader that closed our stdout (`drctl backups
/// | head`) ends the program quietly, as with any Unix tool, instead of the
/// panic std's println! gives on EPIPE. (SIGPIPE stays ignored: a child's
/// closed stdin must be an error we can report, not a signal that kills us.)
macro_rules! println {
    () => { $crate::cli::out_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::out_line(format_args!($($arg)*)) };
}

mod alerts;
mod backups;
mod config_cmd;
mod copy;
mod doctor;
mod drill;
mod fleet;
mod logging;
mod progress;
mod prune;
mod restore;
mod rpo;
mod run;
mod status;
mod table;
mod verify;
mod wal;

use clap::{Parser, Subcommand};
use drctl::config::LoadedConfig;
use drctl::Error;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "drctl",
    version = drctl::LONG_VERSION,
    about = "Backups, maintenance and restore drills for PostgreSQL hosts"
)]
struct Cli {
    /// Config file [default: /etc/drctl/drctl.toml, else embedded defaults]
    #[arg(short, long, global = true, env = "DRCTL_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines as text, JSON, or journal fields [default: the journal
    /// under systemd, else text]
    #[arg(long, global = true, env = "DRCTL_LOG_FORMAT", value_enum)]
    log_format: Option<logging::LogFormat>,
    /// More log detail (-v: drctl's debug lines; -vv: every crate's; -vvv: trace); DRCTL_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors in the log
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job now (a backup prints its id; exit 0 only once the manifest is committed)
    Run(run::Args),
    /// List committed backups from the repository
    Backups(backups::Args),
    /// Restore a backup (latest or by id)
    Restore(Box<restore::Args>),
    /// Check stored backups against their manifests (size, SHA-256; --deep: decode and read)
    Verify(verify::Args),
    /// Apply retention (and sweep orphans): never the newest, nothing in use or locked
    Prune(prune::Args),
    /// Copy backups into the jobs' copy repositories (backfill; idempotent)
    Copy(copy::Args),
    /// RPO per job: target, age of the newest backup, status, compliance over a window
    Rpo(rpo::Args),
    /// Run every scheduled job on its schedule (under systemd: Type=notify)
    Daemon,
    /// Jobs with their schedule, last run, outcome and next run (from local state)
    Status(status::StatusArgs),
    /// A job's recent runs, with errors
    Logs(status::LogsArgs),
    /// Firing alerts and the delivery outbox; `alerts test` checks each channel
    Alerts(alerts::Args),
    /// Restore drills: run one, list them
    Drill {
        #[command(subcommand)]
        command: drill::DrillCommand,
    },
    /// The WAL archive of a postgres_physical job: push (archive_command), fetch (restore_command), list
    Wal {
        #[command(subcommand)]
        command: wal::WalCommand,
    },
    /// Inspect the configuration
    Config {
        #[command(subcommand)]
        command: config_cmd::ConfigCommand,
    },
    /// Check the whole setup (config, databases, repositories, clock, space, alerts, systemd), with fixes
    Doctor(doctor::Args),
    /// Every host publishing into the repositories: version, jobs, failures, RPO, drills, staleness
    Fleet(fleet::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Write the man pages (drctl.1 and drctl-COMMAND.1) into a directory
    #[command(hide = true)]
    Man {
        /// Where to write them
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, cli.verbose, cli.quiet);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drctl: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(dispatch(cli));
    // Blocking threads still reading a pipe that a stray grandchild of a
    // killed tool holds open must not keep drctl from exiting.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            use drctl::base::error::Exit;
            let exit = if e.downcast_ref::<run::Skipped>().is_some() {
                Exit::Skipped
            } else if let Some(p) = e.downcast_ref::<run::Problem>() {
                p.exit
            } else {
                e.downcast_ref::<Error>().map_or(Exit::Failed, Error::exit)
            };
            let mut text = format!("{e}");
            for cause in e.chain().skip(1) {
                text.push_str(&format!(": {cause}"));
            }
            eprintln!("drctl: error: {}", drctl::base::secret::redact(&text));
            ExitCode::from(exit.code())
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let load = || LoadedConfig::load(cli.config.as_deref());
    match cli.command {
        Command::Run(a) => run::exec(&load()?, a).await,
        Command::Backups(a) => backups::exec(&load()?, a).await,
        Command::Restore(a) => restore::exec(&load()?, *a).await,
        Command::Daemon => Ok(drctl::daemon::run(cli.config.clone()).await?),
        Command::Status(a) => status::status(&load()?, a).await,
        Command::Logs(a) => status::logs(&load()?, a).await,
        Command::Prune(a) => prune::exec(&load()?, a).await,
        Command::Copy(a) => copy::exec(&load()?, a).await,
        Command::Rpo(a) => rpo::exec(&load()?, a).await,
        Command::Verify(a) => verify::exec(&load()?, a).await,
        Command::Alerts(a) => alerts::exec(&load()?, a).await,
        Command::Drill { command } => drill::exec(&load()?, command).await,
        Command::Wal { command } => wal::exec(&load()?, command).await,
        Command::Config { command } => config_cmd::exec(cli.config.as_deref(), command).await,
        Command::Doctor(a) => doctor::exec(&load()?, a).await,
        Command::Fleet(a) => fleet::exec(&load()?, a).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "drctl", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out_dir } => write_man_pages(&out_dir),
    }
}

/// `drctl(1)` and one page per subcommand (`drctl-restore(1)`), from the
/// same definitions as `--help`, so the pages never drift from the CLI.
fn write_man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut pages = vec![("drctl".to_owned(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("drctl-{}", sub.get_name());
        pages.push((
            name.clone(),
            sub.clone().name(name).version(drctl::LONG_VERSION),
        ));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut out)
            .with_context(|| format!("rendering {name}(1)"))?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// A token cancelled by SIGINT or SIGTERM, so a run stops cleanly: children
/// killed, partial objects removed, the run recorded as interrupted.
pub fn cancel_on_signals() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("drctl: stopping (signal received)");
        t.cancel();
    });
    token
}

pub fn out_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("drctl: error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Bytes as an operator reads them.
/// Deliver what this command queued (and anything else due) now, bounded;
/// the daemon, or the next command, retries whatever is left.
pub async fn deliver_now(cfg: &LoadedConfig, state: &drctl::services::state::State) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    match tokio::time::timeout(
        std::time::Duration::from_secs(40),
        drctl::services::alerts::deliver_due(cfg, state, Some(deadline)),
    )
    .await
    {
        Ok(Err(e)) => tracing::error!(error = %e, "delivering alerts"),
        Err(_) => tracing::warn!("alert delivery is slow; the daemon or the next run retries"),
        Ok(Ok(_)) => {}
    }
}

/// `--label`, checked: a malformed label is a usage error (exit 2).
pub fn label_arg(text: Option<&str>) -> drctl::Result<Option<drctl::base::ids::Label>> {
    text.map(drctl::base::ids::Label::parse)
        .transpose()
        .map_err(|m| drctl::Error::Usage(format!("--label: {m}")))
}

/// A stored RFC 3339 time (`2026-12-02T04:24:20.547038342+00:00`) as a
/// table cell: to the second, in UTC (`2026-12-02 04:24:20Z`); text that is
/// not a time is shown as it is.
pub fn when(text: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(text).map_or_else(
        |_| text.to_owned(),
        |t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%SZ")
                .to_string()
        },
    )
}

pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}
