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

/// The job, its database and the safety copy an undo swaps back.
struct Chosen<'a> {
    job: JobName,
    config: &'a JobConfig,
    pg: &'a PostgresJob,
    target: PgTarget,
    tools: PgTools,
    copy: String,
    copy_made: chrono::NaiveDateTime,
}

/// The safety copy to swap back: `wanted` when given (it must be one of
/// `db`'s), else the newest; `None` when `db` has none (pure).
pub fn choose_copy(
    db: &str,
    names: &[String],
    wanted: Option<&str>,
) -> Option<(String, chrono::NaiveDateTime)> {
    let copies = postgres::safety_copies(db, names);
    match wanted {
        Some(w) => copies.into_iter().find(|(n, _)| n == w),
        None => copies.into_iter().last(),
    }
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
    let mut conn = SqlSession::open(&tools, &target.with_database(&pg.maintenance_db)).await?;
    let names = postgres::side_databases(&mut conn).await?;
    let _ = conn.close().await;
    let Some((copy, copy_made)) = choose_copy(&target.database, &names, wanted) else {
        return Err(Error::NotFound(match wanted {
            Some(w) => format!(
                "{w} is not a safety copy of {} (expected one of: {})",
                target.database,
                listed(&target.database, &names)
            ),
            None => format!(
                "{} has no safety copy on {}: nothing to undo (a restore into the job's own database keeps the replaced one as {}_pre_restore_<timestamp>)",
                target.database,
                target.display(),
                target.database
            ),
        }));
    };
    Ok(Chosen {
        job,
        config,
        pg,
        target,
        tools,
        copy,
        copy_made,
    })
}

fn listed(db: &str, names: &[String]) -> String {
    let copies: Vec<String> = postgres::safety_copies(db, names)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    if copies.is_empty() {
        "none".into()
    } else {
        copies.join(", ")
    }
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
        notes: Vec::new(),
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

    #[test]
    fn the_newest_copy_is_chosen_unless_one_is_named_and_others_are_never_chosen() {
        let names: Vec<String> = [
            "app_pre_restore_20261201000000",
            "app_pre_restore_20261201000000_2",
            "app_pre_restore_20261130000000",
            "app2_pre_restore_20261202000000",
            "app_pre_restore_20261203000000_x",
        ]
        .map(String::from)
        .to_vec();
        let newest = choose_copy("app", &names, None).map(|(n, _)| n);
        assert_eq!(newest.as_deref(), Some("app_pre_restore_20261201000000_2"));
        let named = choose_copy("app", &names, Some("app_pre_restore_20261130000000"));
        assert_eq!(
            named.map(|(n, _)| n).as_deref(),
            Some("app_pre_restore_20261130000000")
        );
        assert!(choose_copy("app", &names, Some("app2_pre_restore_20261202000000")).is_none());
        assert!(choose_copy("other", &names, None).is_none());
    }
}
