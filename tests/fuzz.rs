//! Property-based fuzzing (proptest) of everything drctl parses from places
//! others can write to: the config loader, the manifest parser, backup ids
//! and tar entry paths. The property is always the same: any input gives a
//! value or an error, never a panic; and what is accepted is safe.
//! Bounded: a few hundred cases each, seconds in CI.

use drctl::base::manifest::Manifest;
use proptest::prelude::*;
use std::path::Path;

const VALID_MANIFEST: &str = r#"{
  "format": 1,
  "id": "20261122T020000.123Z-db1-0a1b2c3d",
  "job": "appdb",
  "kind": "postgres",
  "host": "db1",
  "started_at": "2026-11-22T02:00:00.123Z",
  "finished_at": "2026-11-22T02:01:00Z",
  "drctl_version": "0.1.0",
  "artifacts": [
    {"name": "globals.sql.zst", "content": "pg_globals_sql", "raw_bytes": 10, "stored_bytes": 9, "sha256": "00", "compression": "zstd"},
    {"name": "database.dump.zst.age", "content": "pg_dump_custom", "raw_bytes": 10, "stored_bytes": 9, "sha256": "00", "compression": "zstd", "encryption_recipients": ["x"]}
  ],
  "tables": [{"schema": "public", "name": "t", "rows": 1, "bytes": 8192}]
}"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn manifests_from_arbitrary_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Manifest::parse(&bytes, "k");
    }

    #[test]
    fn mutated_manifests_never_name_a_path_outside_the_backup(
        at in 0usize..VALID_MANIFEST.len(),
        insert in "[./a-z\\\\\"\\x00-\\x1f{}\\[\\],:0-9]{0,24}",
        cut in 0usize..64,
    ) {
        let mut s = VALID_MANIFEST.to_owned();
        let at = (0..=at).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        let end = (at + cut).min(s.len());
        let end = (end..=s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
        s.replace_range(at..end, &insert);
        if let Ok(m) = Manifest::parse(s.as_bytes(), "k") {
            for a in &m.artifacts {
                prop_assert!(!a.name.contains('/') && !a.name.contains(".."), "{}", a.name);
            }
        }
    }

    #[test]
    fn backup_ids_parse_or_fail_and_accepted_ones_are_one_path_component(s in "\\PC{0,80}") {
        if let Ok(id) = drctl::base::ids::BackupId::parse(&s) {
            prop_assert!(!id.as_str().contains('/') && id.as_str() != ".." && !id.as_str().starts_with('.'));
            let _ = id.timestamp();
            let _ = id.host();
        }
    }

    #[test]
    fn accepted_tar_paths_stay_inside_the_target(
        parts in proptest::collection::vec("(\\.\\.|\\.|[a-z]{1,3}|/|)", 1..6),
        link in proptest::collection::vec("(\\.\\.|\\.|[a-z]{1,3}|/|)", 0..5),
        kind in 0u8..8,
    ) {
        let path = parts.join("/");
        let target = link.join("/");
        let kind = match kind {
            0 => tar::EntryType::Regular,
            1 => tar::EntryType::Directory,
            2 => tar::EntryType::Symlink,
            3 => tar::EntryType::Link,
            4 => tar::EntryType::Fifo,
            5 => tar::EntryType::Char,
            6 => tar::EntryType::Block,
            _ => tar::EntryType::Regular,
        };
        let ok = drctl::engine::restore::files::check_entry(Path::new(&path), kind, Some(Path::new(&target))).is_ok();
        if ok {
            // Resolve lexically under /root: never above it.
            let mut depth: i64 = 0;
            for c in Path::new(&path).components() {
                match c {
                    std::path::Component::Normal(_) => depth += 1,
                    std::path::Component::ParentDir => depth -= 1,
                    std::path::Component::RootDir => depth = -100,
                    _ => {}
                }
                prop_assert!(depth >= 0, "{path} accepted");
            }
            prop_assert!(!matches!(kind, tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block));
        }
    }

    #[test]
    fn configs_from_arbitrary_text_load_or_name_the_file(text in "(\\[[a-z.]{1,12}\\]\\n|[a-z_]{1,10} = (\"[^\"\\n]{0,10}\"|[0-9]{1,4}|true|\\[\\]|\\{\\})\\n|\\PC{0,12}\\n){0,12}") {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("drctl.toml");
        std::fs::write(&p, format!("state_dir = \"{}\"\n{text}", dir.path().display())).unwrap();
        match drctl::config::LoadedConfig::load(Some(&p)) {
            Ok(_) => {}
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("drctl.toml") || e.exit_code() == 2, "{msg}");
            }
        }
    }
}
