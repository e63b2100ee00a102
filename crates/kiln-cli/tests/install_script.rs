//! `scripts/install.sh` puts the binary, its man pages and completions
//! where a system looks for them (here under a temporary prefix, with
//! the binary under test instead of a release build).

use std::path::Path;
use std::process::Command;

#[test]
fn install_puts_the_binary_man_pages_and_completions_under_the_prefix() {
    let prefix = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(prefix.path())
        .env("KILN_BIN", env!("CARGO_BIN_EXE_kiln"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = prefix.path();
    let version = Command::new(root.join("bin/kiln"))
        .arg("version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("kiln version "));
    // A page for kiln and one per command, groups' commands included,
    // none for hidden ones; each a roff page with its flags.
    let man = root.join("share/man/man1");
    let page = std::fs::read_to_string(man.join("kiln-build.1")).unwrap();
    assert!(page.contains(".TH kiln-build 1"), "{page}");
    assert!(page.contains("\\-\\-no\\-cache"), "{page}");
    for name in [
        "kiln.1",
        "kiln-image-ls.1",
        "kiln-system-df.1",
        "kiln-run.1",
    ] {
        assert!(man.join(name).is_file(), "{name}");
    }
    let pages: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !pages
            .iter()
            .any(|p| p.contains("monitor") || p.contains("attach") || p.contains("man-pages")),
        "{pages:?}"
    );
    // bash finds the completion where bash-completion looks.
    let bash = root.join("share/bash-completion/completions/kiln");
    let probe = format!("source {}; complete -p kiln", bash.display());
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("_kiln"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(root.join("share/zsh/site-functions/_kiln").is_file());
    assert!(root
        .join("share/fish/vendor_completions.d/kiln.fish")
        .is_file());
}
