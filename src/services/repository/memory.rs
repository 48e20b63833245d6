//! An in-memory store for fast tests of the backup protocol (commit,
//! latest selection, leases), with faults on demand: the Nth call of an
//! operation fails, or a stored object is altered behind the protocol's
//! back. Tests only: real stores are tested against real servers.

use super::{Backend, BoxRead, ObjectInfo};
use crate::base::error::{Error, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::io::AsyncReadExt;

/// Key -> (bytes, when written).
type Objects = BTreeMap<String, (Vec<u8>, DateTime<Utc>)>;

/// A store in memory that can be told to fail or to lose bytes.
#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<Objects>,
    /// (operation, calls left before it fails once).
    fail: Mutex<Option<(&'static str, usize)>>,
}

impl MemoryBackend {
    /// The `n`th call (1-based) of `op` (`put_stream`, `put_if_absent`,
    /// `get`, `list`, `delete`) fails with a store error.
    pub fn fail_nth(&self, op: &'static str, n: usize) {
        *self.lock_fail() = Some((op, n));
    }

    /// Replace an object's bytes (bit rot, a store losing a part).
    pub fn tamper(&self, key: &str, bytes: Vec<u8>) {
        if let Some(o) = self.lock_objects().get_mut(key) {
            o.0 = bytes;
        }
    }

    /// An object's bytes (empty if there is none).
    pub fn get_bytes(&self, key: &str) -> Vec<u8> {
        self.lock_objects()
            .get(key)
            .map(|o| o.0.clone())
            .unwrap_or_default()
    }

    /// Lose an object.
    pub fn remove(&self, key: &str) {
        self.lock_objects().remove(key);
    }

    /// Every key stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock_objects().keys().cloned().collect()
    }

    fn lock_objects(&self) -> std::sync::MutexGuard<'_, Objects> {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_fail(&self) -> std::sync::MutexGuard<'_, Option<(&'static str, usize)>> {
        self.fail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn call(&self, op: &'static str) -> Result<()> {
        let mut f = self.lock_fail();
        if let Some((o, n)) = f.as_mut() {
            if *o == op {
                *n -= 1;
                if *n == 0 {
                    *f = None;
                    return Err(Error::repo("memory", format!("{op}: injected failure")));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory:".into()
    }

    async fn put_stream(&self, key: &str, mut reader: BoxRead, _hint: Option<u64>) -> Result<u64> {
        self.call("put_stream")?;
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| Error::io(format!("reading {key}"), e))?;
        let n = bytes.len() as u64;
        self.lock_objects()
            .insert(key.to_owned(), (bytes, Utc::now()));
        Ok(n)
    }

    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.call("put_if_absent")?;
        let mut o = self.lock_objects();
        if o.contains_key(key) {
            return Err(Error::repo("memory", format!("{key} exists")));
        }
        o.insert(key.to_owned(), (bytes, Utc::now()));
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<BoxRead> {
        self.call("get")?;
        let bytes = self
            .lock_objects()
            .get(key)
            .map(|o| o.0.clone())
            .ok_or_else(|| Error::NotFound(key.to_owned()))?;
        Ok(Box::pin(std::io::Cursor::new(bytes)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.call("list")?;
        Ok(self
            .lock_objects()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, (b, at))| ObjectInfo {
                key: k.clone(),
                size: b.len() as u64,
                modified: Some(*at),
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.call("delete")?;
        self.lock_objects().remove(key);
        Ok(())
    }
}
