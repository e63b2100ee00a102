//! Capability sets: Docker's default set for the command, and what the
//! container's init keeps. Plain bit masks, so applying them needs no
//! allocation after `clone` (the `caps` crate works on `HashSet`s, which
//! is why it is not used here).

pub const CHOWN: u32 = 0;
pub const DAC_OVERRIDE: u32 = 1;
pub const FOWNER: u32 = 3;
pub const FSETID: u32 = 4;
pub const KILL: u32 = 5;
pub const SETGID: u32 = 6;
pub const SETUID: u32 = 7;
pub const SETPCAP: u32 = 8;
pub const NET_BIND_SERVICE: u32 = 10;
pub const NET_RAW: u32 = 13;
pub const SYS_CHROOT: u32 = 18;
pub const MKNOD: u32 = 27;
pub const AUDIT_WRITE: u32 = 29;
pub const SETFCAP: u32 = 31;

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT: &[u32] = &[
    CHOWN,
    DAC_OVERRIDE,
    FSETID,
    FOWNER,
    MKNOD,
    NET_RAW,
    SETGID,
    SETUID,
    SETFCAP,
    SETPCAP,
    NET_BIND_SERVICE,
    SYS_CHROOT,
    KILL,
    AUDIT_WRITE,
];

pub const fn mask(caps: &[u32]) -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < caps.len() {
        mask |= 1 << caps[i];
        i += 1;
    }
    mask
}

pub const DOCKER_DEFAULT_MASK: u64 = mask(DOCKER_DEFAULT);

/// The init only signals (a command running as another uid needs
/// CAP_KILL) and reaps; everything else is dropped once the command runs.
pub const INIT_MASK: u64 = mask(&[KILL]);

/// Capability names by number (`linux/capability.h`), as seccomp
/// profiles name them.
const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of capability `name` (`CAP_SYS_ADMIN`), if kiln knows it.
pub fn number(name: &str) -> Option<u32> {
    NAMES.iter().position(|n| *n == name).map(|n| n as u32)
}

/// Every capability this process has (a privileged container gets what
/// its caller holds; asking for more fails with EPERM).
pub fn own_permitted() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapPrm:"))?;
            u64::from_str_radix(line["CapPrm:".len()..].trim(), 16).ok()
        })
        .unwrap_or(DOCKER_DEFAULT_MASK)
}

/// Highest capability number of the running kernel (read before `clone`).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &u32| n < 64)
        .unwrap_or(40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mask_has_fourteen_caps() {
        assert_eq!(DOCKER_DEFAULT_MASK.count_ones(), 14);
        assert_ne!(DOCKER_DEFAULT_MASK & (1 << SETUID), 0);
        // CAP_SYS_ADMIN (21) is not in Docker's default set.
        assert_eq!(DOCKER_DEFAULT_MASK & (1 << 21), 0);
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("CAP_MKNOD"), Some(MKNOD));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
    }
}
