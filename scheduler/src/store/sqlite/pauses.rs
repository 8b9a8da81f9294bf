//! The `pauses` table of the SQLite store: paused task queues and types.

use super::{Db, SqliteStore};
use crate::pauses::{MAX_PAUSES, Pause, PauseChange, PauseKind, PauseOutcome, too_many};
use crate::store::{
    StoreError,
    rows::{Stamp, ts},
};
use chrono::Utc;
use rusqlite::{OptionalExtension, params};

impl SqliteStore {
    /// Every stored pause.
    pub async fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        self.call(|db| db.pauses()).await?
    }

    /// Applies a `pause` or `resume` in one transaction, and returns what
    /// is paused now.
    pub async fn change_pause(&self, change: PauseChange) -> Result<PauseOutcome, StoreError> {
        self.call(move |db| db.change_pause(&change)).await?
    }
}

impl Db {
    fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        read_pauses(&self.conn)
    }

    fn change_pause(&mut self, c: &PauseChange) -> Result<PauseOutcome, StoreError> {
        let tx = self.conn.transaction()?;
        let kind = c.kind.as_str();
        let mut refused = None;
        if c.pause {
            let known = tx
                .query_row(
                    "SELECT 1 FROM pauses WHERE kind = ?1 AND name = ?2",
                    params![kind, c.name],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            let stored: i64 = tx.query_row("SELECT count(*) FROM pauses", [], |r| r.get(0))?;
            if known {
                // Paused already: it keeps its first `since`.
            } else if stored as usize >= MAX_PAUSES {
                refused = Some(too_many(stored as usize));
            } else {
                tx.execute(
                    "INSERT INTO pauses (kind, name, since) VALUES (?1, ?2, ?3)",
                    params![kind, c.name, ts(&Utc::now())],
                )?;
            }
        } else {
            tx.execute(
                "DELETE FROM pauses WHERE kind = ?1 AND name = ?2",
                params![kind, c.name],
            )?;
        }
        let pauses = read_pauses(&tx)?;
        tx.commit()?;
        Ok(PauseOutcome { pauses, refused })
    }
}

/// Every row of `pauses`.
fn read_pauses(conn: &rusqlite::Connection) -> Result<Vec<Pause>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT kind, name, since FROM pauses ORDER BY kind, name")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, name, since) = row?;
        out.push(Pause {
            kind: PauseKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("pause of unknown kind `{kind}`")))?,
            name,
            since: since.time()?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_are_idempotent_bounded_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let change = |pause, kind, name: &str| PauseChange {
            pause,
            kind,
            name: name.into(),
        };
        {
            let mut db = Db::open(&path).unwrap();
            let first = db
                .change_pause(&change(true, PauseKind::Queue, "q"))
                .unwrap();
            assert_eq!(first.pauses.len(), 1);
            assert_eq!(first.refused, None);
            let again = db
                .change_pause(&change(true, PauseKind::Queue, "q"))
                .unwrap();
            assert_eq!(again.pauses, first.pauses, "a second pause keeps the first");
            // A type and a queue of one name are two pauses.
            db.change_pause(&change(true, PauseKind::Type, "q"))
                .unwrap();
            let gone = db
                .change_pause(&change(false, PauseKind::Queue, "nope"))
                .unwrap();
            assert_eq!(
                gone.pauses.len(),
                2,
                "resuming what is not paused is harmless"
            );
        }
        let mut db = Db::open(&path).unwrap();
        let kinds: Vec<_> = db.pauses().unwrap().into_iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [PauseKind::Queue, PauseKind::Type]);
        for i in 2..MAX_PAUSES {
            db.change_pause(&change(true, PauseKind::Type, &format!("t{i}")))
                .unwrap();
        }
        let past = db
            .change_pause(&change(true, PauseKind::Type, "one-more"))
            .unwrap();
        assert_eq!(past.pauses.len(), MAX_PAUSES);
        let refused = past.refused.expect("past the bound");
        assert_eq!(refused.code, "too_many_pauses");
        assert!(refused.message.contains("1000"), "{}", refused.message);
        // One already paused is still answered as paused at the bound.
        let known = db
            .change_pause(&change(true, PauseKind::Queue, "q"))
            .unwrap();
        assert_eq!(known.refused, None);
        db.change_pause(&change(false, PauseKind::Queue, "q"))
            .unwrap();
        let room = db
            .change_pause(&change(true, PauseKind::Type, "one-more"))
            .unwrap();
        assert_eq!(room.refused, None);
    }
}
