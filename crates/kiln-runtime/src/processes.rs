//! The processes of a running container (`docker top`): every process
//! of the host whose pid namespace is its pid 1's, read from `/proc`.

use std::os::unix::fs::MetadataExt;

/// One process, as `ps -ef` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// In the host's pid namespace.
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    /// Its command line, arguments joined by spaces (`[name]` when it
    /// has none).
    pub command: String,
}

/// The processes in the pid namespace of `init` (a container's pid 1, in
/// the host's numbering), sorted by pid; empty once it is gone.
pub fn container_processes(init: i32) -> Vec<ProcessInfo> {
    let namespace = |pid: i32| {
        std::fs::metadata(format!("/proc/{pid}/ns/pid"))
            .ok()
            .map(|m| (m.dev(), m.ino()))
    };
    let Some(wanted) = namespace(init) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if namespace(pid) != Some(wanted) {
            continue;
        }
        if let Some(info) = read_process(pid) {
            found.push(info);
        }
    }
    found.sort_by_key(|p| p.pid);
    found
}

fn read_process(pid: i32) -> Option<ProcessInfo> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| rest.trim().to_owned())
    };
    let ppid = field("PPid:")?.parse().ok()?;
    let uid = field("Uid:")?.split_whitespace().next()?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let command = if args.is_empty() {
        format!("[{}]", field("Name:").unwrap_or_default())
    } else {
        args.join(" ")
    };
    Some(ProcessInfo {
        pid,
        ppid,
        uid,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_process_is_in_its_own_namespace() {
        let me = std::process::id() as i32;
        let found = container_processes(me);
        let mine = found.iter().find(|p| p.pid == me).expect("itself");
        // SAFETY: getuid has no preconditions.
        assert_eq!(mine.uid, unsafe { libc::getuid() });
        assert!(!mine.command.is_empty());
        assert!(container_processes(i32::MAX).is_empty());
    }
}
