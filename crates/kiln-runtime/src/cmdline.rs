//! The container's pid 1 is a fork of kiln. Under `--init` it never execs,
//! so its `/proc/1/cmdline` and `/proc/1/environ` would be kiln's own:
//! build args, `--secret src=` paths, host paths. The parent finds where
//! its argv and environment strings are ([`own_areas`]); pid 1 blanks them
//! and shrinks the areas with `PR_SET_MM` ([`scrub`]) before any command
//! runs, so the container reads `kiln-init` and an empty environment.
//! Without `--init` pid 1 execs the command, which replaces both with the
//! command's own; the blanking then only covers the setup before it.

/// The name the init's `/proc/PID/cmdline` shows.
const INIT_NAME: &[u8] = b"kiln-init\0";

/// This process's memory layout as the kernel records it
/// (`/proc/self/stat`), which `PR_SET_MM_MAP` must be given back whole;
/// the current break is read by the init itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArgEnvAreas {
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

/// This process's areas; `None` if `/proc` cannot tell (nothing to scrub
/// is better than a guess at addresses).
pub(crate) fn own_areas() -> Option<ArgEnvAreas> {
    parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

fn parse_stat(stat: &str) -> Option<ArgEnvAreas> {
    // The command name (field 2) may hold spaces and parentheses: count
    // fields from the last ')'; field 3 comes right after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let areas = ArgEnvAreas {
        start_code: field(26)?,
        end_code: field(27)?,
        start_stack: field(28)?,
        start_data: field(45)?,
        end_data: field(46)?,
        start_brk: field(47)?,
        arg_start: field(48)?,
        arg_end: field(49)?,
        env_start: field(50)?,
        env_end: field(51)?,
    };
    (areas.arg_start < areas.arg_end && areas.env_start <= areas.env_end).then_some(areas)
}

/// In the init (allocation-free): overwrites kiln's argv with
/// `kiln-init`, zeroes its environment, and ends both areas there.
/// `PR_SET_MM_MAP` failing leaves the zeroed areas at their old size,
/// which still shows nothing of the host.
pub(crate) fn scrub(areas: &ArgEnvAreas) {
    let arg_len = (areas.arg_end - areas.arg_start) as usize;
    let name_len = INIT_NAME.len().min(arg_len);
    // SAFETY: the kernel placed kiln's argv and environment strings at
    // these addresses of the initial stack, which stays mapped and
    // writable for the life of the process; this is the init's own copy
    // (cloned without CLONE_VM), and nothing in it reads them again.
    unsafe {
        std::ptr::write_bytes(areas.arg_start as *mut u8, 0, arg_len);
        std::ptr::copy_nonoverlapping(INIT_NAME.as_ptr(), areas.arg_start as *mut u8, name_len);
        std::ptr::write_bytes(
            areas.env_start as *mut u8,
            0,
            (areas.env_end - areas.env_start) as usize,
        );
    }
    // The thread's name (`/proc/1/comm`) too, for one name everywhere.
    let _ = crate::sys::set_name(c"kiln-init");
    let _ = crate::sys::set_mm_map(&crate::sys::MmMap {
        start_code: areas.start_code,
        end_code: areas.end_code,
        start_data: areas.start_data,
        end_data: areas.end_data,
        start_brk: areas.start_brk,
        brk: crate::sys::current_brk(),
        start_stack: areas.start_stack,
        arg_start: areas.arg_start,
        arg_end: areas.arg_start + name_len as u64,
        env_start: areas.env_start,
        env_end: areas.env_start,
        auxv: std::ptr::null_mut(),
        auxv_size: 0,
        exe_fd: u32::MAX,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_areas() {
        let areas = own_areas().expect("/proc/self/stat has the areas");
        assert!(areas.arg_end > areas.arg_start);
    }

    #[test]
    fn command_names_with_parentheses_do_not_shift_fields() {
        let mut stat = String::from("12 (a) b) S");
        for n in 4..=52 {
            stat.push_str(&format!(" {n}"));
        }
        let areas = parse_stat(&stat).unwrap();
        assert_eq!(
            (areas.start_code, areas.start_brk, areas.arg_start),
            (26, 47, 48)
        );
        assert_eq!(
            (areas.arg_end, areas.env_start, areas.env_end),
            (49, 50, 51)
        );
    }
}
