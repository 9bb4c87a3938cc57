//! Reads the API server's audit log (JSON lines of audit.k8s.io/v1 `Event`, Metadata level)
//! for tests: the part written after a [`Mark`], narrowed to one user, its refused requests
//! rendered for a person, and request counts by verb and resource.
//!
//! ```no_run
//! # async fn t(cluster: &realstack::RealCluster) -> anyhow::Result<()> {
//! use realstack::audit::AuditLog;
//! let log = AuditLog::open(cluster.audit_log());
//! let mark = log.mark()?;
//! // … the story runs …
//! log.sync(&cluster.client().await?).await?;
//! let mine = log.since(&mark)?.by_user("system:serviceaccount:fluxgate-system:fluxgate");
//! assert!(mine.forbidden().is_empty(), "refused:\n{}", mine.forbidden().render());
//! # Ok(()) }
//! ```
//!
//! The log backend writes each event as the request completes (`--audit-log-mode` is
//! blocking by default), and a long-running request (a watch) once when its response starts
//! and once when it ends; [`Events::requests`] keeps one event per request. Leases are not
//! in the log: the cluster's policy drops them (see `AUDIT_POLICY` in lib.rs).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The apiserver's audit log file (and the backups it rotates it into).
#[derive(Clone, Debug)]
pub struct AuditLog {
    path: PathBuf,
}

/// A position in the audit log: [`AuditLog::since`] reads what was written after it, also
/// across a rotation (the file it points into is found again by its inode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The inode of the file `offset` is in; 0 when the log did not exist yet.
    inode: u64,
    offset: u64,
}

impl Mark {
    /// The beginning of the log.
    pub fn start() -> Mark {
        Mark {
            inode: 0,
            offset: 0,
        }
    }
}

/// The object a request was about (`objectRef`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    /// "" for the core group.
    pub group: String,
    pub version: String,
    /// The plural resource, e.g. `upgraderequests`.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl ObjectRef {
    /// `resource[.group][/subresource]`, as RBAC rules and kubectl name it.
    pub fn resource_name(&self) -> String {
        let mut out = self.resource.clone();
        if !self.group.is_empty() {
            out.push('.');
            out.push_str(&self.group);
        }
        if let Some(sub) = &self.subresource {
            out.push('/');
            out.push_str(sub);
        }
        out
    }
}

/// One audit event, the fields a test asks about.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub audit_id: String,
    /// `ResponseStarted` (long-running requests), `ResponseComplete` or `Panic`.
    pub stage: String,
    /// The RBAC verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub request_uri: String,
    pub username: String,
    pub groups: Vec<String>,
    pub user_agent: String,
    /// None for non-resource URLs (`/api`, `/version`, …).
    pub object: Option<ObjectRef>,
    /// The HTTP status; None when the event carries no response (yet).
    pub code: Option<u16>,
    /// `responseStatus.reason`, e.g. `Forbidden`; empty when none.
    pub reason: String,
    /// `responseStatus.message`; empty when none.
    pub message: String,
    /// The authorizer's decision (`authorization.k8s.io/decision`: allow or forbid).
    pub decision: Option<String>,
    /// `requestReceivedTimestamp`, RFC 3339 with microseconds.
    pub received: String,
}

impl AuditEvent {
    /// Parses one line of the log.
    pub fn parse(line: &str) -> Result<AuditEvent> {
        let v: Value = serde_json::from_str(line).context("not JSON")?;
        if v["kind"] != "Event" || v["apiVersion"] != "audit.k8s.io/v1" {
            bail!(
                "not an audit.k8s.io/v1 Event (kind {}, apiVersion {})",
                v["kind"],
                v["apiVersion"]
            );
        }
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let opt = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let object = v["objectRef"].as_object().map(|o| ObjectRef {
            group: s(&o.get("apiGroup").cloned().unwrap_or_default()),
            version: s(&o.get("apiVersion").cloned().unwrap_or_default()),
            resource: s(&o.get("resource").cloned().unwrap_or_default()),
            subresource: o.get("subresource").and_then(opt),
            namespace: o.get("namespace").and_then(opt),
            name: o.get("name").and_then(opt),
        });
        Ok(AuditEvent {
            audit_id: s(&v["auditID"]),
            stage: s(&v["stage"]),
            verb: s(&v["verb"]),
            request_uri: s(&v["requestURI"]),
            username: s(&v["user"]["username"]),
            groups: v["user"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            user_agent: s(&v["userAgent"]),
            object,
            code: v["responseStatus"]["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok()),
            reason: s(&v["responseStatus"]["reason"]),
            message: s(&v["responseStatus"]["message"]),
            decision: opt(&v["annotations"]["authorization.k8s.io/decision"]),
            received: s(&v["requestReceivedTimestamp"]),
        })
    }

    /// What was asked, as a key for counting: `resource[.group][/subresource]`, or the path
    /// of a non-resource URL (without its query).
    pub fn resource_key(&self) -> String {
        match &self.object {
            Some(object) => object.resource_name(),
            None => self
                .request_uri
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

/// `verb resource[.group][/subresource] namespace/name` (`in <namespace>` for a collection,
/// `(cluster-wide)` for one across namespaces or cluster-scoped), then the status code and,
/// for a failure, the API server's message.
impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource_key())?;
        if let Some(object) = &self.object {
            match (&object.namespace, &object.name) {
                (Some(ns), Some(name)) => write!(f, " {ns}/{name}")?,
                (Some(ns), None) => write!(f, " in {ns}")?,
                (None, Some(name)) => write!(f, " {name}")?,
                (None, None) => write!(f, " (cluster-wide)")?,
            }
        }
        if let Some(code) = self.code {
            write!(f, " → {code}")?;
            if code >= 400 && !self.message.is_empty() {
                write!(f, ": {}", self.message)?;
            }
        }
        Ok(())
    }
}

/// Audit events in the order they were written.
#[derive(Clone, Debug, Default)]
pub struct Events(Vec<AuditEvent>);

impl std::ops::Deref for Events {
    type Target = [AuditEvent];
    fn deref(&self) -> &[AuditEvent] {
        &self.0
    }
}

impl IntoIterator for Events {
    type Item = AuditEvent;
    type IntoIter = std::vec::IntoIter<AuditEvent>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<AuditEvent> for Events {
    fn from_iter<I: IntoIterator<Item = AuditEvent>>(iter: I) -> Events {
        Events(iter.into_iter().collect())
    }
}

impl Events {
    /// The events of requests made by `username` (`user.username`, e.g.
    /// `system:serviceaccount:<namespace>:<name>`).
    pub fn by_user(&self, username: &str) -> Events {
        self.filter(|e| e.username == username)
    }

    /// The events `keep` accepts.
    pub fn filter(&self, keep: impl Fn(&AuditEvent) -> bool) -> Events {
        self.0.iter().filter(|e| keep(e)).cloned().collect()
    }

    /// The requests answered 403 Forbidden — refused by the authorizer (`decision` is
    /// `forbid`) or by admission (e.g. a create in a namespace being deleted).
    pub fn forbidden(&self) -> Events {
        self.requests().filter(|e| e.code == Some(403))
    }

    /// One event per request (by audit ID): the last one written, so a watch that has
    /// ended counts with its final status and one still running with its start.
    pub fn requests(&self) -> Events {
        let mut last: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, e) in self.0.iter().enumerate() {
            last.insert(&e.audit_id, i);
        }
        let mut keep: Vec<usize> = last.into_values().collect();
        keep.sort_unstable();
        keep.into_iter().map(|i| self.0[i].clone()).collect()
    }

    /// How many requests there were of each (verb, resource) — resource as
    /// [`AuditEvent::resource_key`] spells it.
    pub fn counts(&self) -> BTreeMap<(String, String), usize> {
        let mut counts = BTreeMap::new();
        for e in self.requests().iter() {
            *counts
                .entry((e.verb.clone(), e.resource_key()))
                .or_insert(0) += 1;
        }
        counts
    }

    /// One line per distinct event (see [`AuditEvent`]'s `Display`), in the order each was
    /// first written, with `(×n)` when it was there n > 1 times (a refused watch is retried
    /// every few seconds): for a person.
    pub fn render(&self) -> String {
        let mut lines: Vec<(String, usize)> = Vec::new();
        for e in &self.0 {
            let line = e.to_string();
            match lines.iter_mut().find(|(l, _)| *l == line) {
                Some((_, n)) => *n += 1,
                None => lines.push((line, 1)),
            }
        }
        lines
            .into_iter()
            .map(|(line, n)| match n {
                1 => format!("  {line}"),
                n => format!("  {line} (×{n})"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// How long [`AuditLog::sync`] waits for its own request to show up.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

impl AuditLog {
    /// The log at `path` (`RealCluster::audit_log()`); nothing is read yet.
    pub fn open(path: impl Into<PathBuf>) -> AuditLog {
        AuditLog { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The end of what has been written so far (complete lines only: a line being written
    /// now belongs to what comes after the mark).
    pub fn mark(&self) -> Result<Mark> {
        match std::fs::metadata(&self.path) {
            Ok(meta) => {
                let end = complete_end(&self.path, meta.len())?;
                Ok(Mark {
                    inode: meta.ino(),
                    offset: end,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Mark::start()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// Every event written after `mark` (complete lines only).
    pub fn since(&self, mark: &Mark) -> Result<Events> {
        let current = std::fs::metadata(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let mut parts: Vec<(PathBuf, u64)> = Vec::new();
        if mark.inode == current.ino() {
            parts.push((self.path.clone(), mark.offset));
        } else {
            // The log was rotated since the mark (or the mark is the start): the backup
            // holding the mark's file from its offset, every later backup, then the file.
            let backups = self.backups()?;
            let from = if mark.inode == 0 {
                0
            } else {
                backups
                    .iter()
                    .position(|(_, inode)| *inode == mark.inode)
                    .with_context(|| {
                        format!(
                            "the audit log {} was rotated after the mark and the file the mark \
                             points into is gone (no backup beside it has inode {})",
                            self.path.display(),
                            mark.inode
                        )
                    })?
            };
            for (i, (path, _)) in backups.into_iter().enumerate().skip(from) {
                let offset = if i == from { mark.offset } else { 0 };
                parts.push((path, offset));
            }
            parts.push((self.path.clone(), 0));
        }
        let mut events = Vec::new();
        for (path, offset) in parts {
            read_events(&path, offset, &mut events)?;
        }
        Ok(Events(events))
    }

    /// Every event in the log, backups included.
    pub fn all(&self) -> Result<Events> {
        self.since(&Mark::start())
    }

    /// Returns once every request `client` has had answered before this call is in the log:
    /// it asks for a namespace that does not exist, under a name used once, and waits until
    /// that request's event is written (each event is written as its request completes, so
    /// those of earlier requests are there by then, up to a race of microseconds).
    pub async fn sync(&self, client: &kube::Client) -> Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "audit-sync-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mark = self.mark()?;
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(client.clone());
        namespaces
            .get_opt(&name)
            .await
            .with_context(|| format!("asking for namespace {name} to sync the audit log"))?;
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            let seen = self.since(&mark)?.iter().any(|e| {
                e.object.as_ref().is_some_and(|o| {
                    o.resource == "namespaces" && o.name.as_deref() == Some(name.as_str())
                })
            });
            if seen {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the audit log {} did not show the get of namespace {name} within {} s",
                    self.path.display(),
                    SYNC_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The rotated backups beside the log (`<stem>-<timestamp>.<ext>`, as the apiserver's
    /// log rotation names them), oldest first, with their inodes.
    fn backups(&self) -> Result<Vec<(PathBuf, u64)>> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let file = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let (stem, ext) = match file.rsplit_once('.') {
            Some((stem, ext)) => (stem.to_owned(), format!(".{ext}")),
            None => (file.to_owned(), String::new()),
        };
        let mut backups = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != file && name.starts_with(&format!("{stem}-")) && name.ends_with(&ext) {
                let meta = entry
                    .metadata()
                    .with_context(|| format!("reading {}", entry.path().display()))?;
                backups.push((entry.path(), meta.ino()));
            }
        }
        // The timestamp in the name sorts as the time does.
        backups.sort();
        Ok(backups)
    }
}

/// The end of the last complete line of `path` at or before `len`.
fn complete_end(path: &Path, len: u64) -> Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // Lines are about 1 KiB; look back in blocks until a newline.
    let mut end = len;
    let mut block = vec![0u8; 8192];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut block[..n]))
            .with_context(|| format!("reading {}", path.display()))?;
        if let Some(i) = block[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Appends the events of `path` from byte `offset`, complete lines only.
fn read_events(path: &Path, offset: u64, events: &mut Vec<AuditEvent>) -> Result<()> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.seek(SeekFrom::Start(offset))
        .with_context(|| format!("seeking to byte {offset} of {}", path.display()))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let text = std::str::from_utf8(&bytes[..complete])
        .with_context(|| format!("{} is not UTF-8 after byte {offset}", path.display()))?;
    let mut at = offset;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if !trimmed.is_empty() {
            let event = AuditEvent::parse(trimmed).with_context(|| {
                format!(
                    "the line at byte {at} of {} is not an audit event: {}",
                    path.display(),
                    trimmed.chars().take(200).collect::<String>()
                )
            })?;
            events.push(event);
        }
        at += line.len() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, stage: &str, verb: &str, code: u16, object: &str) -> String {
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"{stage}","requestURI":"/x","verb":"{verb}","user":{{"username":"system:serviceaccount:ns:sa","groups":["system:serviceaccounts"]}},"userAgent":"fluxgate/0.1.0","objectRef":{object},"responseStatus":{{"metadata":{{}},"code":{code}}},"requestReceivedTimestamp":"2026-01-01T00:00:00.000000Z","annotations":{{"authorization.k8s.io/decision":"allow"}}}}"#
        )
    }

    const PODS: &str = r#"{"resource":"pods","apiVersion":"v1"}"#;
    const STATUS: &str = r#"{"resource":"upgraderequests","namespace":"apps","name":"db","apiGroup":"fluxgate.dev","apiVersion":"v1alpha1","subresource":"status"}"#;

    #[test]
    fn a_watch_counts_once_and_forbidden_renders_for_a_person() {
        let events: Events = [
            line("a", "ResponseStarted", "watch", 200, PODS),
            line("b", "ResponseComplete", "update", 403, STATUS),
            line("a", "ResponseComplete", "watch", 200, PODS),
        ]
        .iter()
        .map(|l| AuditEvent::parse(l).unwrap())
        .collect();
        assert_eq!(events.requests().len(), 2);
        let counts = events.counts();
        assert_eq!(counts[&("watch".into(), "pods".into())], 1);
        assert_eq!(
            counts[&(
                "update".into(),
                "upgraderequests.fluxgate.dev/status".into()
            )],
            1
        );
        let forbidden = events.forbidden();
        assert_eq!(forbidden.len(), 1);
        let twice: Events = [&forbidden[0], &forbidden[0]]
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(
            twice.render(),
            "  update upgraderequests.fluxgate.dev/status apps/db → 403 (×2)"
        );
        assert_eq!(
            forbidden.render(),
            "  update upgraderequests.fluxgate.dev/status apps/db → 403"
        );
        assert_eq!(
            events.requests()[0].to_string(),
            "update upgraderequests.fluxgate.dev/status apps/db → 403"
        );
        assert_eq!(events.by_user("someone-else").len(), 0);
    }

    #[test]
    fn since_reads_after_the_mark_only_complete_lines_and_across_a_rotation() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path);
        assert_eq!(log.mark().unwrap(), Mark::start());
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "{}", line("1", "ResponseComplete", "get", 200, PODS)).unwrap();
        let mark = log.mark().unwrap();
        writeln!(f, "{}", line("2", "ResponseComplete", "list", 200, PODS)).unwrap();
        // Half a line: not yet an event.
        write!(f, "{{\"kind\":\"Ev").unwrap();
        let ids = |e: Events| e.iter().map(|e| e.audit_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(log.since(&mark).unwrap()), ["2"]);
        assert_eq!(ids(log.all().unwrap()), ["1", "2"]);
        // A mark taken now ends before the half line.
        let mark2 = log.mark().unwrap();
        writeln!(
            f,
            "ent\",\"apiVersion\":\"audit.k8s.io/v1\",\"auditID\":\"3\"}}"
        )
        .unwrap();
        drop(f);
        // Rotated as the apiserver's logger does: renamed to a timestamped backup, a new
        // file in its place.
        std::fs::rename(&path, dir.path().join("audit-2026-01-01T00-00-00.000.log")).unwrap();
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "{}", line("4", "ResponseComplete", "get", 200, PODS)).unwrap();
        assert_eq!(ids(log.since(&mark).unwrap()), ["2", "3", "4"]);
        assert_eq!(ids(log.since(&mark2).unwrap()), ["3", "4"]);
        // A malformed line is an error naming the file and where.
        writeln!(f, "not json").unwrap();
        let err = format!("{:#}", log.since(&mark2).unwrap_err());
        assert!(
            err.contains("audit.log") && err.contains("not an audit event"),
            "{err}"
        );
    }
}
