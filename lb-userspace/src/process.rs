//! HAProxy's process settings, applied by `lb run`: `ulimit-n` (before anything opens
//! sockets), `pidfile` (written once everything is started), then `chroot` and the
//! identity change (`user`/`uid`, `group`/`gid`) once listeners are bound and XDP is loaded.
//!
//! The identity change drops every capability: lb keeps none (no keep-caps). glibc applies
//! `setgroups`, `setgid` and `setuid` to every thread of the process, and the kernel clears
//! the capability sets of each thread whose user IDs all leave 0. What that stops (binding
//! new ports below 1024 on a reload, the `[announce]` interface, reading files the user may
//! not read) is in docs/operations.md; `lb run` refuses `user` with `[announce]`.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::unistd::{Gid, Group, Uid, UnlinkatFlags, User, chdir, chroot, unlinkat};

use crate::config::model::{Ident, Process};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(
        "ulimit_n {want}: the open-files limit cannot be raised above its hard limit {hard}: {source}"
    )]
    UlimitAboveHard {
        want: u64,
        hard: u64,
        source: nix::Error,
    },
    #[error("ulimit_n {want}: {source}")]
    Ulimit { want: u64, source: nix::Error },
    #[error("pidfile {path}: {source}")]
    Pidfile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} `{name}` does not exist")]
    Unknown { what: &'static str, name: String },
    #[error("looking up {what} `{name}`: {source}")]
    Lookup {
        what: &'static str,
        name: String,
        source: nix::Error,
    },
    #[error("chroot {path}: {source}")]
    Chroot { path: PathBuf, source: nix::Error },
    #[error("cannot change to uid {uid} gid {gid}: {step}: {source}")]
    Identity {
        uid: u32,
        gid: u32,
        step: &'static str,
        source: nix::Error,
    },
}

/// `ulimit-n N`: sets the open-files limit, soft and hard, to `n` (as HAProxy). Lowering
/// always works; raising above the hard limit needs a privilege the host may not grant.
pub fn set_nofile(n: u64) -> Result<(), ProcessError> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|source| ProcessError::Ulimit { want: n, source })?;
    setrlimit(Resource::RLIMIT_NOFILE, n, n).map_err(|source| {
        if n > hard {
            ProcessError::UlimitAboveHard {
                want: n,
                hard,
                source,
            }
        } else {
            ProcessError::Ulimit { want: n, source }
        }
    })
}

/// The identity `lb run` changes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// Resolves `user`/`group` (names through the passwd and group databases). Without a group,
/// the user's primary group. `None`: neither is set.
pub fn identity(p: &Process) -> Result<Option<Identity>, ProcessError> {
    let user = match &p.user {
        None => None,
        Some(Ident::Id(id)) => Some((*id, User::from_uid(Uid::from_raw(*id)).ok().flatten())),
        Some(Ident::Name(n)) => {
            let u = found("user", n, User::from_name(n))?;
            Some((u.uid.as_raw(), Some(u)))
        }
    };
    let gid = match &p.group {
        None => user
            .as_ref()
            .and_then(|(_, u)| u.as_ref().map(|u| u.gid.as_raw())),
        Some(Ident::Id(id)) => Some(*id),
        Some(Ident::Name(n)) => Some(found("group", n, Group::from_name(n))?.gid.as_raw()),
    };
    Ok(match (user, gid) {
        (None, None) => None,
        (Some((uid, _)), gid) => Some(Identity {
            uid,
            gid: gid.unwrap_or_else(|| Gid::current().as_raw()),
        }),
        (None, Some(gid)) => Some(Identity {
            uid: Uid::current().as_raw(),
            gid,
        }),
    })
}

/// The entry a passwd or group lookup of `name` found.
fn found<T>(
    what: &'static str,
    name: &str,
    r: Result<Option<T>, nix::Error>,
) -> Result<T, ProcessError> {
    r.map_err(|source| ProcessError::Lookup {
        what,
        name: name.to_owned(),
        source,
    })?
    .ok_or_else(|| ProcessError::Unknown {
        what,
        name: name.to_owned(),
    })
}

/// `pidfile`: written with lb's PID when created, removed when dropped. The directory is
/// held open, so the file is removed by its directory even after `chroot`; after the
/// identity change that needs the directory to be writable by the new user (else the file
/// stays, as HAProxy leaves it).
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    dir: Option<std::fs::File>,
}

impl Pidfile {
    pub fn create(path: &Path) -> Result<Pidfile, ProcessError> {
        let err = |source| ProcessError::Pidfile {
            path: path.to_owned(),
            source,
        };
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(err)?;
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("/"));
        let dir = std::fs::File::open(parent).map_err(err)?;
        Ok(Pidfile {
            path: path.to_owned(),
            dir: Some(dir),
        })
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let name = self.path.file_name().unwrap_or(OsStr::new(""));
        if let Err(e) = unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
            tracing::warn!("pidfile {} not removed: {e}", self.path.display());
        }
    }
}

/// After start: `chroot` (then `/` is the working directory), then the identity change:
/// supplementary groups dropped (only `gid` kept), `setgid`, `setuid`, for every thread.
/// `own` lists directories handed to the new user first (the XDP pin directory, so lb can
/// remove its link pins at exit).
pub fn confine(
    chroot_dir: Option<&Path>,
    ident: Option<Identity>,
    own: &[PathBuf],
) -> Result<(), ProcessError> {
    if let Some(id) = ident {
        for dir in own {
            if let Err(e) = nix::unistd::chown(
                dir,
                Some(Uid::from_raw(id.uid)),
                Some(Gid::from_raw(id.gid)),
            ) {
                tracing::warn!(
                    "cannot hand {} to uid {}: {e} (XDP stays attached at exit)",
                    dir.display(),
                    id.uid
                );
            }
        }
    }
    if let Some(dir) = chroot_dir {
        let err = |source| ProcessError::Chroot {
            path: dir.to_owned(),
            source,
        };
        chroot(dir).map_err(err)?;
        chdir("/").map_err(err)?;
    }
    let Some(id) = ident else { return Ok(()) };
    let fail = |step, source| ProcessError::Identity {
        uid: id.uid,
        gid: id.gid,
        step,
        source,
    };
    let gid = Gid::from_raw(id.gid);
    if Uid::effective().is_root() {
        nix::unistd::setgroups(&[gid]).map_err(|e| fail("setgroups", e))?;
    }
    nix::unistd::setgid(gid).map_err(|e| fail("setgid", e))?;
    nix::unistd::setuid(Uid::from_raw(id.uid)).map_err(|e| fail("setuid", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_resolves_names_numbers_and_the_primary_group() {
        assert_eq!(identity(&Process::default()).ok(), Some(None));
        let root = Process {
            user: Some(Ident::Name("root".into())),
            ..Process::default()
        };
        assert_eq!(
            identity(&root).ok().flatten(),
            Some(Identity { uid: 0, gid: 0 })
        );
        let numeric = Process {
            user: Some(Ident::Id(4242)),
            group: Some(Ident::Id(4343)),
            ..Process::default()
        };
        assert_eq!(
            identity(&numeric).ok().flatten(),
            Some(Identity {
                uid: 4242,
                gid: 4343
            })
        );
        let unknown = Process {
            user: Some(Ident::Name("no-such-user-lb".into())),
            ..Process::default()
        };
        assert!(
            identity(&unknown)
                .err()
                .is_some_and(|e| e.to_string() == "user `no-such-user-lb` does not exist")
        );
    }

    #[test]
    fn pidfile_is_written_and_removed() {
        let dir = std::env::temp_dir().join(format!("lb-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("lb.pid");
        let pf = Pidfile::create(&path).expect("create");
        assert_eq!(
            std::fs::read_to_string(&path).ok(),
            Some(format!("{}\n", std::process::id()))
        );
        drop(pf);
        assert!(!path.exists());
        let _ = std::fs::remove_dir(&dir);
    }
}
