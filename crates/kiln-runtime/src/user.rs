//! `USER` resolution with Docker's (runc's `GetExecUser`) rules, reading
//! `/etc/passwd` and `/etc/group` from the image's lower dirs, so no
//! container is needed to know who the command runs as.

use std::path::PathBuf;

use crate::error::RuntimeError;
use crate::layers::LowerView;
use crate::spec::User;

/// A resolved `USER`: credentials plus the home directory Docker puts in
/// `HOME` when the environment has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub user: User,
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `user[:group]` (names or numbers) against the merged view of
/// `lower_dirs` (top-most first).
/// The user a process of an image runs as, the one rule for RUN and `kiln
/// run`: `spec` (USER or `--user`) resolved against the image's files, or
/// with none, root, with its groups if the image has an `/etc/passwd` (an
/// image without one, such as scratch, still runs as 0:0).
pub fn process_user(
    lower_dirs: &[PathBuf],
    spec: Option<&str>,
) -> Result<ResolvedUser, RuntimeError> {
    match spec.filter(|s| !s.is_empty()) {
        Some(spec) => resolve_user(lower_dirs, spec),
        None => Ok(resolve_user(lower_dirs, "root").unwrap_or(ResolvedUser {
            user: User::default(),
            home: "/root".into(),
        })),
    }
}

/// `HOME` for `user`, unless the environment sets it (Docker's and
/// BuildKit's rule).
pub fn set_default_home(env: &mut Vec<String>, user: &ResolvedUser) {
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
}

pub fn resolve_user(lower_dirs: &[PathBuf], spec: &str) -> Result<ResolvedUser, RuntimeError> {
    let view = LowerView::new(lower_dirs.to_vec());
    let passwd = text(view.read_file("/etc/passwd"));
    let group = text(view.read_file("/etc/group"));
    resolve_from(&passwd, &group, spec)
}

/// `--group-add`: each group by name (the image's `/etc/group`) or
/// number.
pub fn resolve_groups(lower_dirs: &[PathBuf], names: &[String]) -> Result<Vec<u32>, RuntimeError> {
    let view = LowerView::new(lower_dirs.to_vec());
    let groups = parse_group(&text(view.read_file("/etc/group")));
    names
        .iter()
        .map(|name| match groups.iter().find(|e| e.name == *name) {
            Some(entry) => Ok(entry.gid),
            None => name
                .parse()
                .map_err(|_| user_error(name, "no such group in the image's /etc/group")),
        })
        .collect()
}

fn text(bytes: Option<Vec<u8>>) -> String {
    bytes
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn user_error(spec: &str, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::User {
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

fn resolve_from(passwd: &str, group: &str, spec: &str) -> Result<ResolvedUser, RuntimeError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() {
        "root"
    } else {
        user_part
    };
    let users = parse_passwd(passwd);
    let by_name = users.iter().find(|u| u.name == user_part);
    let numeric = user_part.parse::<u32>().ok();
    let entry = by_name.or_else(|| numeric.and_then(|uid| users.iter().find(|u| u.uid == uid)));
    let (uid, mut gid, home, name) = match (entry, numeric) {
        (Some(e), _) => (e.uid, e.gid, e.home.clone(), Some(e.name.clone())),
        (None, Some(uid)) => (uid, 0, "/".to_string(), None),
        (None, None) => {
            return Err(user_error(
                spec,
                format!("no user named {user_part:?} in /etc/passwd"),
            ))
        }
    };
    let groups = parse_group(group);
    let mut additional_gids = Vec::new();
    match group_part {
        Some(g) if !g.is_empty() => {
            gid = match groups.iter().find(|e| e.name == g) {
                Some(e) => e.gid,
                None => g
                    .parse()
                    .map_err(|_| user_error(spec, format!("no group named {g:?} in /etc/group")))?,
            };
        }
        _ => {
            // Supplementary groups only in the implicit form, as runc does.
            if let Some(name) = &name {
                additional_gids = groups
                    .iter()
                    .filter(|e| e.members.iter().any(|m| m == name))
                    .map(|e| e.gid)
                    .collect();
                additional_gids.dedup();
            }
        }
    }
    Ok(ResolvedUser {
        user: User {
            uid,
            gid,
            additional_gids,
        },
        home,
    })
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).copied().unwrap_or("/").to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nbroken\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\naudio:x:29:app\n";

    fn resolve(spec: &str) -> Result<ResolvedUser, RuntimeError> {
        resolve_from(PASSWD, GROUP, spec)
    }

    #[test]
    fn names_and_supplementary_groups() {
        let r = resolve("app").unwrap();
        assert_eq!(r.user.uid, 1000);
        assert_eq!(r.user.gid, 1000);
        assert_eq!(r.user.additional_gids, vec![10, 29]);
        assert_eq!(r.home, "/home/app");
    }

    #[test]
    fn explicit_group_drops_supplementary() {
        let r = resolve("app:wheel").unwrap();
        assert_eq!((r.user.gid, r.user.additional_gids.len()), (10, 0));
        assert_eq!(resolve("app:77").unwrap().user.gid, 77);
    }

    #[test]
    fn numeric_users() {
        let r = resolve("1000").unwrap();
        assert_eq!(r.user.gid, 1000);
        let r = resolve("4242").unwrap();
        assert_eq!((r.user.uid, r.user.gid, r.home.as_str()), (4242, 0, "/"));
        assert_eq!(resolve("").unwrap().user.uid, 0);
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(matches!(resolve("nobody"), Err(RuntimeError::User { .. })));
        assert!(matches!(
            resolve("app:nogroup"),
            Err(RuntimeError::User { .. })
        ));
    }
}
