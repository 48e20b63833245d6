//! `drctl restore --undo --job X`: the rollback an on-call engineer needs
//! when the restored data turns out wrong. The newest safety copy
//! (`<db>_pre_restore_<ts>`, what the last restore replaced) takes the
//! database's name back, by the same journaled swap a restore ends with:
//! the database being replaced becomes a safety copy in its turn (so an
//! undo can itself be undone), and a kill between the two renames is
//! finished or rolled back by the next `drctl restore` or `drctl status`.
//! Like a restore, it runs the job's hooks around itself, needs consent,
//! is announced and is journaled with its phases.

use super::{journal, postgres, Plan, Procedure, Report, RestoreRequest};
use crate::base::error::{Error, Result};
use crate::base::ids::JobName;
use crate::config::{JobConfig, Kind, LoadedConfig, PostgresJob};
use crate::services::pg::{job_target, PgTarget, PgTools, SqlSession};
use serde::{Deserialize, Serialize};

/// The job, its database and the safety copy an undo swaps back.
struct Chosen<'a> {
    job: JobName,
    config: &'a JobConfig,
    pg: &'a PostgresJob,
    target: PgTarget,
    tools: PgTools,
    copy: String,
    copy_made: chrono::NaiveDateTime,
    undoes: Option<Undoes>,
    notes: Vec<String>,
}

/// A database's write counters (`pg_stat_database`): what a restore left
/// and what the database holds now, so that an undo says what it takes out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writes {
    /// Transactions committed.
    pub transactions: i64,
    /// Rows inserted.
    pub inserted: i64,
    /// Rows updated.
    pub updated: i64,
    /// Rows deleted.
    pub deleted: i64,
    /// When the statistics were last reset (a reset makes a difference
    /// meaningless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_reset: Option<String>,
}

/// The writes between two readings of the same database's counters, or
/// `None` when they cannot be compared (the statistics were reset, or a
/// counter went backwards) (pure).
pub fn writes_since(then: &Writes, now: &Writes) -> Option<Writes> {
    let d = Writes {
        transactions: now.transactions - then.transactions,
        inserted: now.inserted - then.inserted,
        updated: now.updated - then.updated,
        deleted: now.deleted - then.deleted,
        stats_reset: None,
    };
    let backwards = d.transactions < 0 || d.inserted < 0 || d.updated < 0 || d.deleted < 0;
    (then.stats_reset == now.stats_reset && !backwards).then_some(d)
}

/// What an undo takes back: the restore (or undo) whose safety copy it
/// swaps in, when that ended, and what was written since.
#[derive(Debug, Clone, Serialize)]
pub struct Undoes {
    /// "restore of backup B", "undo (back to C)".
    pub what: String,
    /// When it completed.
    pub ended_at: chrono::DateTime<chrono::Utc>,
    /// The safety copy it made, which the undo swaps back.
    pub copy: String,
    /// Written into the live database since (absent when not measurable).
    pub writes_since: Option<Writes>,
}

/// The safety copy an undo swaps back, and the restore it undoes (pure).
///
/// `wanted` when given (it must be one of `db`'s copies). Else the copy of
/// the newest restore or undo of `db` that completed, from `past` (this
/// host's journal, newest first; an undo that did not complete changed
/// nothing and is passed over). Refused when the newest restore did not
/// complete: the live database is the one from before it, and the newest
/// copy is an earlier restore's, so swapping it in would take out
/// everything written since (`--copy` names it if that is meant). With
/// nothing of `db` journaled here, the newest copy by its name's time.
pub fn decide<'p>(
    db: &str,
    names: &[String],
    past: &'p [journal::Past],
    wanted: Option<&str>,
) -> Result<(String, chrono::NaiveDateTime, Option<&'p journal::Past>)> {
    let copies = postgres::safety_copies(db, names);
    let listed = || {
        if copies.is_empty() {
            "none".to_owned()
        } else {
            copies
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    if let Some(w) = wanted {
        return copies
            .iter()
            .find(|(n, _)| n == w)
            .map(|(n, at)| (n.clone(), *at, None))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{w} is not a safety copy of {db} (expected one of: {})",
                    listed()
                ))
            });
    }
    let last = past
        .iter()
        .find(|p| p.action == journal::Action::Restore || p.step == journal::Step::Done);
    let when = |p: &journal::Past| {
        p.ended_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let Some(p) = last else {
        return copies
            .last()
            .map(|(n, at)| (n.clone(), *at, None))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{db} has no safety copy: nothing to undo (a restore into the job's own database keeps the replaced one as {db}_pre_restore_<timestamp>)"
                ))
            });
    };
    if p.step != journal::Step::Done {
        return Err(Error::Refused(format!(
            "the last restore of {db} (backup {}, {}) was {}: the live database is still the one from before it, so there is nothing of it to undo, and the newest safety copy ({}) is an earlier restore's: swapping it in would take out everything written since. Name it with --copy if that is what you want",
            p.backup_id,
            when(p),
            if p.step == journal::Step::RolledBack { "rolled back" } else { "not completed" },
            copies.last().map_or("none", |(n, _)| n.as_str())
        )));
    }
    let Some(safety) = &p.safety else {
        return Err(Error::NotFound(format!(
            "the last restore of {db} (backup {}, {}) replaced no database (there was none): nothing to swap back; --copy NAME swaps an older copy in (copies: {})",
            p.backup_id,
            when(p),
            listed()
        )));
    };
    copies
        .iter()
        .find(|(n, _)| n == safety)
        .map(|(n, at)| (n.clone(), *at, Some(p)))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "{safety}, the safety copy the last restore of {db} made ({}), no longer exists (dropped after safety_copy_keep, or by hand); --copy NAME swaps an older copy in (copies: {})",
                when(p),
                listed()
            ))
        })
}

/// Remember the live database's write counters right after a swap, for a
/// later undo's plan. Best effort: without them the plan says the writes
/// since are not known.
pub(super) async fn remember_writes(conn: &mut SqlSession, db: &str, journal: &journal::Journal) {
    let stored = match read_writes(conn, db).await {
        Ok(Some(w)) => serde_json::to_string(&w).map_err(|e| Error::Other(e.to_string())),
        Ok(None) => return,
        Err(e) => Err(e),
    };
    let stored = match stored {
        Ok(json) => journal.writes(&json).await,
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        tracing::warn!(error = %e, "cannot record the restored database's write counters");
    }
}

/// `db`'s write counters now.
async fn read_writes(conn: &mut SqlSession, db: &str) -> Result<Option<Writes>> {
    let rows = conn
        .rows(&format!(
            "SELECT xact_commit::text, tup_inserted::text, tup_updated::text, tup_deleted::text, stats_reset::text FROM pg_stat_database WHERE datname = {}",
            crate::services::pg::quote_literal(db)
        ))
        .await?;
    let Some(r) = rows.into_iter().next() else {
        return Ok(None);
    };
    let n = |i: usize| {
        r.get(i)
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    Ok(Some(Writes {
        transactions: n(0),
        inserted: n(1),
        updated: n(2),
        deleted: n(3),
        stats_reset: r.get(4).cloned().flatten(),
    }))
}

/// What the plan says of the restore being undone (pure).
fn describe(u: &Undoes, db: &str) -> String {
    let when = u
        .ended_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let since = match &u.writes_since {
        Some(w) => format!(
            "since then {db} committed {} transaction(s): {} row(s) inserted, {} updated, {} deleted; the undo takes them out of the live database (they stay in the copy it keeps)",
            w.transactions, w.inserted, w.updated, w.deleted
        ),
        None => format!(
            "what {db} has been written since is not known (statistics reset, or not measured); the undo takes it out of the live database (it stays in the copy it keeps)"
        ),
    };
    format!("undoes the {} that completed at {when}; {since}", u.what)
}

async fn choose<'a>(
    cfg: &'a LoadedConfig,
    req: &RestoreRequest,
    wanted: Option<&str>,
) -> Result<Chosen<'a>> {
    let name = super::job_name(cfg, req)?;
    let (job, config) = cfg.job(&name)?;
    let Kind::Postgres(pg) = &config.kind else {
        return Err(Error::WrongKind {
            job: job.to_string(),
            kind: config.kind(),
            expected: "an undo swaps a database's safety copy back (expected a postgres job)",
        });
    };
    if req.to.is_some() {
        return Err(Error::Usage(
            "--undo swaps the job's own database back; it takes no --to".into(),
        ));
    }
    let target = job_target(pg)?;
    let tools = PgTools::for_job(pg).await?;
    let state = crate::services::state::State::open(&cfg.config.state_dir).await?;
    let past = journal::history(&state, job.as_str(), &target.database).await?;
    let mut conn = SqlSession::open(&tools, &target.with_database(&pg.maintenance_db)).await?;
    let names = postgres::side_databases(&mut conn).await?;
    let (copy, copy_made, undone) = decide(&target.database, &names, &past, wanted)?;
    let now = read_writes(&mut conn, &target.database)
        .await
        .ok()
        .flatten();
    let _ = conn.close().await;
    let undoes = undone.map(|p| Undoes {
        what: match p.action {
            journal::Action::Restore => format!("restore of backup {}", p.backup_id),
            journal::Action::Undo => format!("undo (back to {})", p.backup_id),
        },
        ended_at: p.ended_at,
        copy: copy.clone(),
        writes_since: p
            .writes
            .as_deref()
            .and_then(|j| serde_json::from_str::<Writes>(j).ok())
            .zip(now.as_ref())
            .and_then(|(then, now)| writes_since(&then, now)),
    });
    let notes = match &undoes {
        Some(u) => vec![describe(u, &target.database)],
        None if wanted.is_none() => vec![format!(
            "no restore of {} is journaled on this host: the newest safety copy is chosen by the time in its name",
            target.database
        )],
        None => Vec::new(),
    };
    Ok(Chosen {
        job,
        config,
        pg,
        target,
        tools,
        copy,
        copy_made,
        undoes,
        notes,
    })
}

/// What an undo would do.
pub async fn plan(cfg: &LoadedConfig, req: &RestoreRequest, wanted: Option<&str>) -> Result<Plan> {
    let c = choose(cfg, req, wanted).await?;
    let db = &c.target.database;
    let mut steps = vec![format!(
        "swap: rename {db} to {db}_pre_restore_<timestamp> (kept as a safety copy, so this undo can be undone), rename {} to {db}",
        c.copy
    )];
    if let Some(h) = super::hooks_for(c.config, req) {
        super::wrap_steps(&mut steps, h);
    }
    Ok(Plan {
        job: c.job.to_string(),
        kind: "postgres".into(),
        repository: "-".into(),
        backup_id: c.copy.clone(),
        backup_finished_at: c.copy_made.and_utc().to_rfc3339(),
        backup_host: crate::base::host::name(),
        stored_bytes: 0,
        raw_bytes: 0,
        target: c.target.display(),
        replaces_existing: true,
        steps,
        notes: c.notes,
        undoes: c.undoes,
    })
}

/// Swap the safety copy back (consent needed: exit 4 without it).
pub async fn run(cfg: &LoadedConfig, req: &RestoreRequest, wanted: Option<&str>) -> Result<Report> {
    let started = std::time::Instant::now();
    let state = crate::services::state::State::open(&cfg.config.state_dir).await?;
    for note in journal::recover(cfg, &state).await {
        tracing::warn!("{note}");
    }
    let c = choose(cfg, req, wanted).await?;
    let consent = || {
        if req.confirmed {
            Ok(())
        } else {
            Err(Error::Refused(format!(
                "undo replaces {} with {} (the current one is kept as a safety copy); confirm, or pass --yes",
                c.target.display(),
                c.copy
            )))
        }
    };
    consent()?;
    let key = c.target.display();
    let _lock = super::lock_target(cfg, &key)?;
    let journal = journal::Journal::begin(
        &state,
        &journal::Start {
            job: c.job.as_str(),
            backup_id: &c.copy,
            repository: "-",
            target: &key,
            lease: None,
            action: journal::Action::Undo,
            origin: req.origin,
        },
    )
    .await?;
    let procedure = Procedure {
        cfg,
        state: &state,
        job: &c.job,
        hooks: super::hooks_for(c.config, req),
        req,
        journal: &journal,
        started,
    };
    let work = async {
        let t = std::time::Instant::now();
        let swapped = swap_back(&c, &journal).await;
        super::settle_outcome(cfg, &state, &journal, &swapped).await?;
        let mut report = swapped?;
        report.swap_seconds = t.elapsed().as_secs_f64();
        report.phases = vec![journal::Phase::new("swap", report.swap_seconds, true)];
        Ok(report)
    };
    let what = format!("undo of the last restore of {} (back to {})", c.job, c.copy);
    procedure.around(work, consent, &what).await
}

async fn swap_back(c: &Chosen<'_>, journal: &journal::Journal) -> Result<Report> {
    let db = &c.target.database;
    let admin = c.target.with_database(&c.pg.maintenance_db);
    let mut conn = SqlSession::open(&c.tools, &admin).await?;
    let exists = postgres::database_exists(&mut conn, db).await?;
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let safety = postgres::safety_name(&mut conn, db, &stamp).await?;
    // The copy was not created by this undo: recovery never drops it.
    journal
        .names(Some(db), &c.copy, false, exists.then_some(safety.as_str()))
        .await?;
    let safety_copy = postgres::swap(&mut conn, db, &c.copy, exists, &safety, journal).await?;
    Ok(Report {
        backup_id: c.copy.clone(),
        target: c.target.display(),
        safety_copy,
        ..Report::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn past(action: journal::Action, step: journal::Step, safety: Option<&str>) -> journal::Past {
        journal::Past {
            action,
            step,
            backup_id: "B".into(),
            safety: safety.map(String::from),
            ended_at: chrono::Utc::now(),
            writes: None,
        }
    }

    #[test]
    fn the_last_completed_restores_copy_is_chosen_and_a_rolled_back_restore_refuses() {
        use journal::{Action, Step};
        let names: Vec<String> = [
            "app_pre_restore_20261201000000",
            "app_pre_restore_20261130000000",
            "app2_pre_restore_20261202000000",
            "app_pre_restore_20261203000000_x",
        ]
        .map(String::from)
        .to_vec();
        let pick = |past: &[journal::Past], wanted: Option<&str>| {
            decide("app", &names, past, wanted).map(|(n, _, p)| (n, p.is_some()))
        };
        // Nothing journaled: the newest copy by name; none at all: NotFound.
        assert_eq!(
            pick(&[], None).unwrap(),
            ("app_pre_restore_20261201000000".into(), false)
        );
        assert!(matches!(
            decide("other", &names, &[], None),
            Err(Error::NotFound(_))
        ));
        // The last completed restore's copy, even when a newer copy exists.
        let done = past(
            Action::Restore,
            Step::Done,
            Some("app_pre_restore_20261130000000"),
        );
        assert_eq!(
            pick(std::slice::from_ref(&done), None).unwrap(),
            ("app_pre_restore_20261130000000".into(), true)
        );
        // An undo that was rolled back changed nothing: passed over.
        let undo_back = past(Action::Undo, Step::RolledBack, None);
        assert_eq!(
            pick(&[undo_back, done.clone()], None).unwrap().0,
            "app_pre_restore_20261130000000"
        );
        // A restore rolled back after it: refused, unless --copy names one.
        for step in [Step::RolledBack, Step::Failed] {
            let back = past(
                Action::Restore,
                step,
                Some("app_pre_restore_20261201000000"),
            );
            let both = [back.clone(), done.clone()];
            let r = decide("app", &names, &both, None);
            assert!(matches!(r, Err(Error::Refused(_))), "{r:?}");
            assert_eq!(
                pick(&[back], Some("app_pre_restore_20261201000000"))
                    .unwrap()
                    .0,
                "app_pre_restore_20261201000000"
            );
        }
        // Its copy dropped since, or it replaced nothing: said, not guessed.
        let gone = past(
            Action::Restore,
            Step::Done,
            Some("app_pre_restore_20261111000000"),
        );
        assert!(
            matches!(decide("app", &names, &[gone], None), Err(Error::NotFound(m)) if m.contains("no longer exists"))
        );
        let fresh = past(Action::Restore, Step::Done, None);
        assert!(
            matches!(decide("app", &names, &[fresh], None), Err(Error::NotFound(m)) if m.contains("replaced no database"))
        );
        // Named: only one of the database's own copies.
        assert!(decide("app", &names, &[], Some("app2_pre_restore_20261202000000")).is_err());
    }

    #[test]
    fn writes_since_are_the_counters_difference_unless_reset_or_backwards() {
        let then = Writes {
            transactions: 10,
            inserted: 100,
            updated: 5,
            deleted: 1,
            stats_reset: Some("r1".into()),
        };
        let now = Writes {
            transactions: 13,
            inserted: 150,
            updated: 5,
            deleted: 4,
            stats_reset: Some("r1".into()),
        };
        let d = writes_since(&then, &now).unwrap();
        assert_eq!(
            (d.transactions, d.inserted, d.updated, d.deleted),
            (3, 50, 0, 3)
        );
        let reset = Writes {
            stats_reset: Some("r2".into()),
            ..now.clone()
        };
        assert_eq!(writes_since(&then, &reset), None);
        let backwards = Writes {
            inserted: 90,
            ..now
        };
        assert_eq!(writes_since(&then, &backwards), None);
    }
}
