//! What the driver submitted, one small file per stage key under the results folder:
//! a driver killed outright and started again reads them and follows the jobs that are
//! still queued or running instead of submitting their stages twice.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exec::executor::JobRef;

/// A submitted stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub job: JobRef,
    pub stage: String,
    pub submitted_unix: u64,
}

/// The records of one results folder.
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn new(dir: PathBuf) -> Records {
        Records { dir }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The record of `key`, if a driver left one (an unreadable one counts as none:
    /// the stage is then submitted again, which the cache's lock makes harmless).
    pub fn get(&self, key: &str) -> Option<Record> {
        let text = std::fs::read_to_string(self.path(key)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes `key`'s record whole or not at all.
    pub fn put(&self, key: &str, record: &Record) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let text = serde_json::to_string_pretty(record).expect("records serialize");
        crate::artifacts::replace(&self.path(key), text.as_bytes())
    }

    pub fn remove(&self, key: &str) {
        let _ = std::fs::remove_file(self.path(key));
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
