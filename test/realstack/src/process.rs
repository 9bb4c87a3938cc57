//! The control plane's processes and the watchdog that ends them.
//!
//! Every component runs in one process group whose leader is a small `sh` watchdog. The
//! watchdog's stdin is a pipe whose only write end this (test) process holds, close-on-exec,
//! so no component inherits it. When this process ends, however it ends (a normal exit, a
//! panic, `abort`, SIGKILL from a test runner's timeout), the kernel closes that end, the
//! watchdog reads end-of-file and stops the components: SIGTERM, up to 5 s for them to go
//! (etcd last), SIGKILL to what is left, then it removes the cluster's directory. Dropping a
//! [`Supervisor`] closes the pipe the same way and waits for the end.
//!
//! Why not `prctl(PR_SET_PDEATHSIG)`: it fires when the *thread* that forked the child ends,
//! not the process, and the test harness runs each test on a thread of its own that ends
//! long before the process does (the cluster is shared by all the tests of a process). It
//! would also need a pre-exec hook (unsafe) in every spawn. A pipe needs neither, and the
//! watchdog also covers cleanup of the data directory.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The watchdog. Component pids arrive on stdin, one per line, etcd first; at EOF it stops
/// them in two waves, each SIGTERM and then up to 5 s to go: everything but etcd, then etcd
/// (the apiserver takes more than 5 s to stop while etcd is going away under it). SIGKILL
/// to what is left, then the data directory goes (unless $2 is "keep"). It ignores SIGTERM
/// itself.
const WATCHDOG: &str = r#"
trap '' TERM INT HUP
dir=$1
mode=$2
pids=""
while read -r pid; do pids="$pids $pid"; done
alive() {
  for p in "$@"; do
    if [ -d /proc/$p ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$p/stat 2>/dev/null; then echo $p; fi
  done
}
stop() {
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null
  i=0
  while [ $i -lt 50 ] && [ -n "$(alive "$@")" ]; do sleep 0.1; i=$((i + 1)); done
}
set -- $pids
if [ $# -gt 0 ]; then
  first=$1
  shift
  stop "$@"
  stop $first
fi
left="$(alive $pids)"
[ -n "$left" ] && kill -KILL $left 2>/dev/null
[ "$mode" = keep ] || rm -rf "$dir"
"#;

pub struct Component {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

pub struct Supervisor {
    watchdog: Child,
    pipe: Option<ChildStdin>,
    pgid: u32,
    pub components: Vec<Component>,
}

impl Supervisor {
    /// Starts the watchdog for a cluster living in `dir`.
    pub fn start(dir: &Path, keep_dir: bool) -> Result<Supervisor> {
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("realstack-watchdog")
            .arg(dir)
            .arg(if keep_dir { "keep" } else { "remove" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .context("starting the watchdog (sh) that stops the control plane at exit")?;
        let pipe = watchdog.stdin.take();
        let pgid = watchdog.id();
        Ok(Supervisor {
            watchdog,
            pipe,
            pgid,
            components: Vec::new(),
        })
    }

    /// Starts `program` in the watchdog's process group, stdout and stderr to `log`.
    pub fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<u32> {
        self.spawn_with_env(name, program, args, &[], log)
    }

    /// [`Supervisor::spawn`] with these environment variables set on top of ours.
    pub fn spawn_with_env(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<u32> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("opening {} twice", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(self.pgid as i32)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let pid = child.id();
        let pipe = self
            .pipe
            .as_mut()
            .context("the watchdog's pipe is closed")?;
        writeln!(pipe, "{pid}")
            .and_then(|()| pipe.flush())
            .with_context(|| {
                format!(
                    "telling the watchdog (pid {}) about {name} (pid {pid})",
                    self.pgid
                )
            })?;
        self.components.push(Component {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        });
        Ok(pid)
    }

    /// Fails, with the end of its log, if a component has exited.
    pub fn check(&mut self) -> Result<()> {
        for c in &mut self.components {
            if let Some(status) = c
                .child
                .try_wait()
                .with_context(|| format!("checking on {}", c.name))?
            {
                bail!(
                    "{} exited ({status}); the end of its log {}:\n{}",
                    c.name,
                    c.log.display(),
                    tail(&c.log, 25)
                );
            }
        }
        Ok(())
    }

    /// The last lines of every component's log, for a timeout message.
    pub fn all_log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for c in &self.components {
            out.push_str(&format!(
                "--- {} ({}):\n{}\n",
                c.name,
                c.log.display(),
                tail(&c.log, lines)
            ));
        }
        out
    }

    pub fn pids(&self) -> Vec<(String, u32)> {
        self.components
            .iter()
            .map(|c| (c.name.clone(), c.child.id()))
            .collect()
    }

    pub fn watchdog_pid(&self) -> u32 {
        self.pgid
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // EOF for the watchdog: it stops the components; reaping our children here lets it see
        // them gone at once instead of as zombies.
        drop(self.pipe.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut self.components {
            while Instant::now() < deadline {
                match c.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        while Instant::now() < deadline {
            match self.watchdog.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!(
            "realstack: the watchdog (pid {}) did not finish stopping the control plane within 10 s",
            self.pgid
        );
    }
}

/// The last `n` lines of a file (or why it could not be read).
pub fn tail(path: &Path, n: usize) -> String {
    match File::open(path) {
        Ok(f) => {
            let mut last = VecDeque::with_capacity(n);
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                if last.len() == n {
                    last.pop_front();
                }
                last.push_back(line);
            }
            last.into_iter().collect::<Vec<_>>().join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
