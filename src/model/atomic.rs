//! Writing a folder so that nothing is lost when the writer dies at any moment: the new folder is
//! filled beside the old one and renamed into place, and the leftovers of a writer that was killed
//! are finished or removed the next time anyone writes, resumes or starts a run there.
//!
//! ```text
//! parent/.NAME.tmp-PID/            the new folder being filled (holds a `.sbert-tui-write` note)
//! parent/.NAME.old-PID/            the old folder, for the moment between two renames
//! parent/NAME/                     the result
//! ```
//!
//! The note inside the temporary folder says `partial` while it is filled and `ready` (with the
//! entries to carry over from the old folder) once it is complete. Recovery of a dead writer's
//! leftovers: a `partial` folder is removed (the old folder was never touched); a `ready` one is
//! swapped into place, carrying what it was to carry; a lone `.old` folder is removed once the new
//! folder is in place (or renamed back if the new one is missing). Folders without the note are
//! never touched: they are not ours.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{ModelError, Result};

/// The note inside a folder being written.
const NOTE: &str = ".sbert-tui-write";

/// Where files go while a folder is being written; lets tests fail a write midway.
pub struct Writer {
    root: PathBuf,
    written: usize,
    /// Test hook: fail when this many files have been written.
    pub fail_after: Option<usize>,
}

impl Writer {
    fn new(root: PathBuf) -> Self {
        Self {
            root,
            written: 0,
            fail_after: None,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `bytes` to `rel` (creating folders) and syncs it to disk.
    pub fn file(&mut self, rel: &str, bytes: &[u8]) -> Result<()> {
        if self.fail_after == Some(self.written) {
            return Err(ModelError::write(
                self.root.join(rel),
                std::io::Error::other("simulated failure while saving"),
            ));
        }
        let path = self.root.join(rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| ModelError::write(dir, e))?;
        }
        let mut f = fs::File::create(&path).map_err(|e| ModelError::write(&path, e))?;
        f.write_all(bytes)
            .map_err(|e| ModelError::write(&path, e))?;
        f.sync_all().map_err(|e| ModelError::write(&path, e))?;
        self.written += 1;
        Ok(())
    }

    pub fn json(&mut self, rel: &str, value: &serde_json::Value) -> Result<()> {
        let mut text = serde_json::to_string_pretty(value).expect("JSON values serialize");
        text.push('\n');
        self.file(rel, text.as_bytes())
    }

    pub fn dir(&mut self, rel: &str) -> Result<()> {
        let path = self.root.join(rel);
        fs::create_dir_all(&path).map_err(|e| ModelError::write(&path, e))
    }
}

/// A moment at which a test makes the writer stop as if the process had been killed (no clean-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillPoint {
    /// The temporary folder is complete, nothing renamed yet.
    Ready,
    /// After the carried entries moved into the temporary folder.
    Carried,
    /// After the old folder moved aside, before the new one moved into place.
    OldMoved,
    /// After the new folder moved into place, before the old one was removed.
    Swapped,
}

/// Test hooks for [`write_folder_atomically_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Hooks {
    /// Fail (and clean up) when this many files have been written.
    pub fail_after: Option<usize>,
    /// Stop at this point without cleaning up, as a kill would.
    pub kill_at: Option<KillPoint>,
}

fn parts(target: &Path) -> Result<(PathBuf, String)> {
    let name = match target.components().next_back() {
        Some(std::path::Component::Normal(n)) => n.to_string_lossy().into_owned(),
        _ => {
            return Err(ModelError::Invalid(format!(
                "`{}` does not name a folder that can be written",
                target.display()
            )));
        }
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

fn sync_dir(dir: &Path) {
    // Makes the renames durable; best effort (not every platform can open a folder).
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Writes a folder through `<parent>/.<name>.tmp-<pid>` and renames it into place. An existing
/// folder is kept until the new one is complete (then replaced); entries of the old folder named
/// in `carry` (for example `checkpoints`) move into the new one. On an error the temporary folder
/// is removed and the old folder is left as it was; after a kill, [`recover`] finishes or undoes
/// what was started.
pub fn write_folder_atomically(
    target: &Path,
    carry: &[&str],
    fail_after: Option<usize>,
    fill: impl FnOnce(&mut Writer) -> Result<()>,
) -> Result<()> {
    write_folder_atomically_with(
        target,
        carry,
        Hooks {
            fail_after,
            kill_at: None,
        },
        fill,
    )
}

/// [`write_folder_atomically`] with test hooks.
pub fn write_folder_atomically_with(
    target: &Path,
    carry: &[&str],
    hooks: Hooks,
    fill: impl FnOnce(&mut Writer) -> Result<()>,
) -> Result<()> {
    let (parent, name) = parts(target)?;
    fs::create_dir_all(&parent).map_err(|e| ModelError::write(&parent, e))?;
    recover(target)?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    let old = parent.join(format!(".{name}.old-{pid}"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| ModelError::write(&tmp, e))?;
    let note = tmp.join(NOTE);
    fs::write(&note, "partial\n").map_err(|e| ModelError::write(&note, e))?;
    let mut writer = Writer::new(tmp.clone());
    writer.fail_after = hooks.fail_after;
    if let Err(e) = fill(&mut writer) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let ready = std::iter::once("ready")
        .chain(carry.iter().copied())
        .collect::<Vec<_>>()
        .join("\n");
    let mark = || -> std::io::Result<()> {
        let mut f = fs::File::create(&note)?;
        f.write_all(ready.as_bytes())?;
        f.sync_all()
    };
    if let Err(e) = mark() {
        let _ = fs::remove_dir_all(&tmp);
        return Err(ModelError::write(&note, e));
    }
    sync_dir(&parent);
    let killed = || {
        Err(ModelError::write(
            target,
            std::io::Error::other("simulated kill"),
        ))
    };
    if hooks.kill_at == Some(KillPoint::Ready) {
        return killed();
    }
    let carried: Vec<String> = carry.iter().map(|c| c.to_string()).collect();
    swap(target, &tmp, &old, &carried, hooks.kill_at).map_err(|e| ModelError::write(target, e))
}

/// Moves the complete folder `tmp` into place at `target` (carrying `carry` over from the old
/// one), then removes the old folder. Every step can be repeated after an interruption.
fn swap(
    target: &Path,
    tmp: &Path,
    old: &Path,
    carry: &[String],
    kill_at: Option<KillPoint>,
) -> std::io::Result<()> {
    let killed = |at: KillPoint| {
        if kill_at == Some(at) {
            Err(std::io::Error::other("simulated kill"))
        } else {
            Ok(())
        }
    };
    if target.exists() {
        for c in carry {
            let from = target.join(c);
            let to = tmp.join(c);
            if from.exists() && !to.exists() {
                fs::rename(&from, &to)?;
            }
        }
        killed(KillPoint::Carried)?;
        fs::rename(target, old)?;
        killed(KillPoint::OldMoved)?;
    }
    fs::rename(tmp, target)?;
    if let Some(parent) = target.parent() {
        sync_dir(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        });
    }
    killed(KillPoint::Swapped)?;
    let _ = fs::remove_file(target.join(NOTE));
    if old.exists() {
        fs::remove_dir_all(old)?;
    }
    Ok(())
}

/// True when a process with this id is running (another writer may be at work).
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        // This process writes one folder at a time: its own leftovers are from an interrupted
        // earlier attempt.
        return false;
    }
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false; // no process has such an id
        };
        if pid <= 0 {
            return false; // 0 and negative ids name process groups, not a writer
        }
        // SAFETY: signal 0 only checks that the process exists.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        true // cannot tell: leave it alone
    }
}

/// A leftover of a writer: (target name, "tmp" or "old", pid).
fn leftover(name: &str) -> Option<(&str, &str, u32)> {
    let rest = name.strip_prefix('.')?;
    let (stem, pid) = rest.rsplit_once('-')?;
    let pid: u32 = pid.parse().ok()?;
    let (target, kind) = stem.rsplit_once('.')?;
    matches!(kind, "tmp" | "old").then_some((target, kind, pid))
}

/// What a temporary folder's note says.
enum Note {
    Missing,
    Partial,
    Ready(Vec<String>),
}

fn read_note(tmp: &Path) -> Note {
    match fs::read_to_string(tmp.join(NOTE)) {
        Err(_) => Note::Missing,
        Ok(text) => {
            let mut lines = text.lines();
            match lines.next() {
                Some("ready") => Note::Ready(lines.map(str::to_string).collect()),
                _ => Note::Partial,
            }
        }
    }
}

/// Finishes or undoes what writers of `target` that are no longer running left behind. Returns
/// what was done, one line each (empty when there was nothing to do).
pub fn recover(target: &Path) -> Result<Vec<String>> {
    let (parent, name) = parts(target)?;
    let mut done = Vec::new();
    let Ok(entries) = fs::read_dir(&parent) else {
        return Ok(done);
    };
    let mut tmps = Vec::new();
    let mut olds = Vec::new();
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        if let Some((t, kind, pid)) = leftover(&file)
            && t == name
            && !alive(pid)
            && e.path().is_dir()
        {
            if kind == "tmp" {
                tmps.push((pid, e.path()));
            } else {
                olds.push((pid, e.path()));
            }
        }
    }
    let io = |e: std::io::Error| ModelError::write(target, e);
    for (pid, tmp) in tmps {
        let old = parent.join(format!(".{name}.old-{pid}"));
        match read_note(&tmp) {
            Note::Missing => {} // not ours
            Note::Partial => {
                fs::remove_dir_all(&tmp).map_err(io)?;
                done.push(format!("removed {} (an unfinished save)", tmp.display()));
            }
            Note::Ready(carry) => {
                swap(target, &tmp, &old, &carry, None).map_err(io)?;
                done.push(format!(
                    "finished an interrupted save of {}",
                    target.display()
                ));
            }
        }
    }
    for (pid, old) in olds {
        if !old.exists() {
            continue; // removed by a swap above
        }
        let tmp = parent.join(format!(".{name}.tmp-{pid}"));
        if tmp.exists() {
            continue; // a temporary folder without a note: not ours to finish
        }
        if target.exists() {
            fs::remove_dir_all(&old).map_err(io)?;
            done.push(format!("removed {} (a replaced folder)", old.display()));
        } else {
            fs::rename(&old, target).map_err(io)?;
            done.push(format!("restored {}", target.display()));
        }
    }
    let _ = fs::remove_file(target.join(NOTE));
    Ok(done)
}

/// Runs [`recover`] for every folder in `dir` that a dead writer left leftovers of.
pub fn recover_all(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            leftover(&file).map(|(t, _, _)| t.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    let mut done = Vec::new();
    for n in names {
        done.extend(recover(&dir.join(n))?);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_recognised_by_name() {
        assert_eq!(leftover(".run-1.tmp-123"), Some(("run-1", "tmp", 123)));
        assert_eq!(
            leftover(".checkpoint-000010.old-9"),
            Some(("checkpoint-000010", "old", 9))
        );
        assert_eq!(leftover("run-1.tmp-123"), None);
        assert_eq!(leftover(".run.tmp-x"), None);
        assert_eq!(leftover(".run.new-12"), None);
    }
}
