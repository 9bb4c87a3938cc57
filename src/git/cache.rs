//! The on-disk clone cache: one bare repository per remote URL + branch under the cache
//! directory, named by a hash (never by the URL, which may hold credentials), opened or
//! created on demand, and guarded so that one operation at a time uses it — in this process
//! (a busy set) and across processes (an exclusive lock on a sibling lock file).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::remote::RemoteUrl;

/// Directory name for a remote + branch: 32 hex digits of SHA-1 over the URL without
/// userinfo and the branch, so rotating a token keeps the cache and no secret is on disk.
pub(crate) fn dir_name(url: &RemoteUrl, branch: &str) -> String {
    let id = format!("{}\n{branch}", url.without_userinfo());
    // git2 hashes blobs with SHA-1: stable across versions, no extra hashing crate.
    match git2::Oid::hash_object(git2::ObjectType::Blob, id.as_bytes()) {
        Ok(oid) => oid.to_string()[..32].to_owned(),
        // Hashing in memory does not fail in practice; fall back to a readable, safe name.
        Err(_) => id
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    b as char
                } else {
                    '_'
                }
            })
            .take(64)
            .collect(),
    }
}

/// Cache directories in use by this process.
static BUSY: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
static RELEASED: Condvar = Condvar::new();

/// Exclusive use of one cache directory until dropped.
pub(crate) struct CacheLock {
    dir: PathBuf,
    // Holds the cross-process lock; closing the file releases it.
    _file: File,
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        let mut busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
        busy.remove(&self.dir);
        RELEASED.notify_all();
    }
}

/// Takes the cache directory `dir` for exclusive use, waiting until `deadline`.
/// The error says who is likely holding it.
pub(crate) fn lock(dir: &Path, lock_file: &Path, deadline: Instant) -> Result<CacheLock, String> {
    {
        let mut busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
        while busy.contains(dir) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("another operation in this process is still using the cache".into());
            }
            busy = RELEASED
                .wait_timeout(busy, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        busy.insert(dir.to_path_buf());
    }
    // From here on a failure must give the in-process slot back.
    let release = |msg: String| {
        let mut busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
        busy.remove(dir);
        RELEASED.notify_all();
        msg
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_file)
        .map_err(|e| {
            release(format!(
                "cannot open lock file {}: {e}",
                lock_file.display()
            ))
        })?;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if Instant::now() >= deadline {
                    return Err(release(format!(
                        "another process holds {}",
                        lock_file.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(release(format!("cannot lock {}: {e}", lock_file.display())));
            }
        }
    }
    Ok(CacheLock {
        dir: dir.to_path_buf(),
        _file: file,
    })
}

/// Opens the bare repository at `dir`, creating it when absent. Errors mean a damaged
/// cache (or an unusable directory).
pub(crate) fn open_or_create(dir: &Path) -> Result<git2::Repository, git2::Error> {
    if dir.exists() {
        let repo = git2::Repository::open_bare(dir)?;
        if !repo.is_bare() {
            return Err(git2::Error::from_str("cache is not a bare repository"));
        }
        Ok(repo)
    } else {
        git2::Repository::init_bare(dir)
    }
}

/// Cheap integrity check of what every operation starts from: the tracking ref, its commit
/// and that commit's tree must be readable.
pub(crate) fn validate(repo: &git2::Repository, tracking_ref: &str) -> Result<(), git2::Error> {
    match repo.find_reference(tracking_ref) {
        Ok(reference) => {
            let commit = reference.peel_to_commit()?;
            commit.tree()?;
            Ok(())
        }
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Every fetch adds a small pack and libgit2 cannot repack, so a long-lived cache slowly
/// fragments; past this many packs we start over from a fresh clone (one clone per few
/// hundred operations).
pub(crate) const MAX_PACKS: usize = 256;

/// Whether the cache at `dir` has fragmented into more than [`MAX_PACKS`] packs.
pub(crate) fn too_fragmented(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("objects").join("pack")).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
            .count()
            > MAX_PACKS
    })
}

/// Deletes a damaged cache so the next open re-clones it.
pub(crate) fn wipe(dir: &Path) -> std::io::Result<()> {
    let removed = match std::fs::symlink_metadata(dir) {
        Ok(meta) if !meta.is_dir() => std::fs::remove_file(dir),
        _ => std::fs::remove_dir_all(dir),
    };
    match removed {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_name_ignores_credentials_and_depends_on_branch() {
        let a = RemoteUrl::parse("https://u:secret@host/o/r.git").expect("url");
        let b = RemoteUrl::parse("https://host/o/r.git").expect("url");
        assert_eq!(dir_name(&a, "main"), dir_name(&b, "main"));
        assert_ne!(dir_name(&a, "main"), dir_name(&a, "prod"));
        let name = dir_name(&a, "main");
        assert_eq!(name.len(), 32);
        assert!(name.bytes().all(|c| c.is_ascii_hexdigit()), "{name}");
    }

    #[test]
    fn many_packs_mean_start_over() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let packs = tmp.path().join("objects").join("pack");
        std::fs::create_dir_all(&packs).expect("mkdir");
        assert!(!too_fragmented(tmp.path()));
        for i in 0..=MAX_PACKS {
            std::fs::write(packs.join(format!("pack-{i}.pack")), b"").expect("write");
            std::fs::write(packs.join(format!("pack-{i}.idx")), b"").expect("write");
        }
        assert!(too_fragmented(tmp.path()));
        assert!(!too_fragmented(&tmp.path().join("absent")));
    }

    #[test]
    fn one_holder_at_a_time() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("repo");
        let lock_file = tmp.path().join("repo.lock");
        let first = lock(&dir, &lock_file, Instant::now() + Duration::from_secs(1)).expect("free");
        let started = Instant::now();
        let second = lock(
            &dir,
            &lock_file,
            Instant::now() + Duration::from_millis(200),
        );
        assert!(second.is_err(), "held by `first`");
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(first);
        lock(&dir, &lock_file, Instant::now() + Duration::from_secs(1)).expect("released");
    }

    #[test]
    fn the_file_lock_excludes_other_holders() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let lock_file = tmp.path().join("x.lock");
        // Another "process": a separate open file description holding the lock.
        let other = File::create(&lock_file).expect("create");
        other.lock().expect("lock");
        let res = lock(
            &tmp.path().join("x"),
            &lock_file,
            Instant::now() + Duration::from_millis(100),
        );
        assert!(res.is_err_and(|e| e.contains("another process")));
        drop(other);
        lock(
            &tmp.path().join("x"),
            &lock_file,
            Instant::now() + Duration::from_secs(1),
        )
        .expect("free again");
    }
}
