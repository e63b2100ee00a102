//! Docker's default seccomp profile, kiln's own copy of its logic (moby's
//! `profiles/seccomp/default.json`, module v0.2.3): which syscalls a
//! container may make, for which capabilities, architectures and kernels,
//! with which argument filters. Everything else fails with EPERM.
//! `tests/seccomp_conformance.rs` checks it against moby's file.

use super::{Action, Arg, Filter, Op, Profile, SyscallGroup};

/// `clone` flags that create namespaces (CLONE_NEWNS | NEWCGROUP | NEWUTS
/// | NEWIPC | NEWUSER | NEWPID | NEWNET): refused without CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// The personalities a container may choose (PER_LINUX, PER_LINUX32,
/// UNAME26, UNAME26 | PER_LINUX32) and the query value: no
/// READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE and the like.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Syscalls every container may make.
const ALWAYS_ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Syscalls that need CAP_SYS_ADMIN (mounts, namespaces, BPF...).
const SYS_ADMIN: &[&str] = &[
    "bpf",
    "clone",
    "clone3",
    "fanotify_init",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "lookup_dcookie",
    "lsm_get_self_attr",
    "lsm_list_modules",
    "lsm_set_self_attr",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "perf_event_open",
    "quotactl",
    "quotactl_fd",
    "setdomainname",
    "sethostname",
    "setns",
    "syslog",
    "umount",
    "umount2",
    "unshare",
];

/// Syscalls allowed by a single other capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Syscalls that exist (or are needed) only on some architectures (Go's
/// names for them).
const BY_ARCH: &[(&[&str], &[&str])] = &[
    (&["ppc64le"], &["sync_file_range2", "swapcontext"]),
    (
        &["arm", "arm64"],
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
    ),
    (&["amd64", "x32"], &["arch_prctl"]),
    (&["amd64", "x32", "x86"], &["modify_ldt"]),
    (
        &["s390", "s390x"],
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
    ),
    (&["riscv64"], &["riscv_flush_icache"]),
];

/// Docker's default profile.
pub fn docker_default() -> Profile {
    let mut syscalls = vec![
        group(ALWAYS_ALLOWED, Action::Allow),
        // ptrace is safe from kernel 4.8 on, where seccomp is rechecked
        // after the tracer changes a syscall.
        SyscallGroup {
            includes: Filter {
                min_kernel: Some("4.8".into()),
                ..Filter::default()
            },
            ..group(
                &["process_vm_readv", "process_vm_writev", "ptrace"],
                Action::Allow,
            )
        },
    ];
    // Every socket family but AF_ALG (38) and AF_VSOCK (40).
    for (op, family) in [(Op::Lt, 38), (Op::Eq, 39), (Op::Gt, 40)] {
        syscalls.push(with_arg(
            group(&["socket"], Action::Allow),
            0,
            op,
            family,
            0,
        ));
    }
    for &persona in PERSONALITIES {
        syscalls.push(with_arg(
            group(&["personality"], Action::Allow),
            0,
            Op::Eq,
            persona,
            0,
        ));
    }
    for (arches, names) in BY_ARCH {
        syscalls.push(SyscallGroup {
            includes: arches_filter(arches),
            ..group(names, Action::Allow)
        });
    }
    syscalls.push(SyscallGroup {
        includes: caps_filter("CAP_DAC_READ_SEARCH"),
        ..group(&["open_by_handle_at"], Action::Allow)
    });
    syscalls.push(SyscallGroup {
        includes: caps_filter("CAP_SYS_ADMIN"),
        ..group(SYS_ADMIN, Action::Allow)
    });
    // Without CAP_SYS_ADMIN, clone only without namespace flags (the flags
    // are the second argument on s390).
    syscalls.push(SyscallGroup {
        excludes: Filter {
            arches: vec!["s390".into(), "s390x".into()],
            ..caps_filter("CAP_SYS_ADMIN")
        },
        ..with_arg(
            group(&["clone"], Action::Allow),
            0,
            Op::MaskedEq,
            CLONE_NAMESPACE_FLAGS,
            0,
        )
    });
    syscalls.push(SyscallGroup {
        includes: arches_filter(&["s390", "s390x"]),
        excludes: caps_filter("CAP_SYS_ADMIN"),
        ..with_arg(
            group(&["clone"], Action::Allow),
            1,
            Op::MaskedEq,
            CLONE_NAMESPACE_FLAGS,
            0,
        )
    });
    // clone3 cannot be filtered on its flags (they are in memory): ENOSYS
    // makes libc fall back to clone, which can.
    syscalls.push(SyscallGroup {
        errno_ret: Some(ENOSYS),
        excludes: caps_filter("CAP_SYS_ADMIN"),
        ..group(&["clone3"], Action::Errno)
    });
    for (cap, names) in BY_CAPABILITY {
        syscalls.push(SyscallGroup {
            includes: caps_filter(cap),
            ..group(names, Action::Allow)
        });
    }
    Profile {
        default_action: Action::Errno,
        default_errno_ret: Some(EPERM),
        syscalls,
    }
}

fn group(names: &[&str], action: Action) -> SyscallGroup {
    SyscallGroup {
        names: names.iter().map(|n| n.to_string()).collect(),
        name: None,
        action,
        errno_ret: None,
        args: Vec::new(),
        includes: Filter::default(),
        excludes: Filter::default(),
    }
}

fn with_arg(group: SyscallGroup, index: u32, op: Op, value: u64, value_two: u64) -> SyscallGroup {
    SyscallGroup {
        args: vec![Arg {
            index,
            value,
            value_two,
            op,
        }],
        ..group
    }
}

fn caps_filter(cap: &str) -> Filter {
    Filter {
        caps: vec![cap.to_string()],
        ..Filter::default()
    }
}

fn arches_filter(arches: &[&str]) -> Filter {
    Filter {
        arches: arches.iter().map(|a| a.to_string()).collect(),
        ..Filter::default()
    }
}
