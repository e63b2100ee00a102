//! What each op's cache key hashes, field by field (BuildKit's `CacheMap`
//! per op is the model). Every op struct is destructured whole, so a field
//! added to an op is a compile error here until someone decides whether it
//! belongs in the key. Values go in as named fields of their own text or
//! bytes, never as a serde rendering of kiln's internal types (which would
//! change keys whenever a type's shape changed). The one document hashed
//! whole is a metadata step's resulting image config, in its OCI JSON form:
//! that is the step's effect, in a format fixed by the image spec.
//!
//! `tests::golden_keys` pins the keys of a few known steps: a change there
//! is a change of every user's cache, made on purpose (bump
//! [`kiln_cache::KEY_FORMAT`] when it is).

use kiln_cache::{CacheKey, KeyBuilder};
use kiln_graph::{
    CopyOp, HeredocInput, ImageConfig, Inputs, Mount, MountKind, MountOptions, Network, Platform,
    RunOp, Sharing, SourceRef,
};
use kiln_store::Layer;

/// FROM: what the stage starts from (a manifest digest, `scratch`, or the
/// key of the stage it builds on) and the platform asked for.
pub(crate) fn from_key(base: &str, platform: &Platform) -> CacheKey {
    let Platform {
        os,
        architecture,
        variant,
    } = platform;
    KeyBuilder::new("from")
        .text("base", base)
        .text("os", os)
        .text("architecture", architecture)
        .text("variant", variant.as_deref().unwrap_or(""))
        .finish()
}

/// RUN: the command and everything its container is made of. `mounted` is
/// the digest of what its bind mounts show; cache mounts and secrets are
/// deliberately outside the key (BuildKit's rule).
pub(crate) fn run_key(
    parent: Option<&CacheKey>,
    run: &RunOp,
    inputs: &Inputs,
    mounted: &[u8],
) -> CacheKey {
    let RunOp {
        argv,
        shell_form,
        heredocs,
        mounts,
        network,
        insecure,
        devices,
        extra_hosts,
        ulimits,
        shm_size,
    } = run;
    let mut key = KeyBuilder::new("run");
    key.key("parent", parent);
    list(&mut key, "argv", argv);
    key.text("shell_form", flag(*shell_form));
    key.text("heredocs", &heredocs.len().to_string());
    for heredoc in heredocs {
        heredoc_fields(&mut key, heredoc);
    }
    key.text("mounts", &mounts.len().to_string());
    for mount in mounts {
        mount_fields(&mut key, mount);
    }
    key.text(
        "network",
        match network {
            Network::Default => "default",
            Network::None => "none",
            Network::Host => "host",
        },
    );
    key.text("insecure", flag(*insecure));
    list(&mut key, "devices", devices);
    // Named and only when there are some: the keys of every RUN without
    // --add-host stay what they were.
    if !extra_hosts.is_empty() {
        let lines: Vec<String> = extra_hosts
            .iter()
            .map(|(n, a)| format!("{a} {n}"))
            .collect();
        list(&mut key, "extra_hosts", &lines);
    }
    if !ulimits.is_empty() {
        list(&mut key, "ulimits", ulimits);
    }
    if let Some(bytes) = shm_size {
        key.text("shm_size", &bytes.to_string());
    }
    key.field("mounted", mounted);
    run_inputs(&mut key, inputs);
    key.finish()
}

/// COPY and ADD: the op as planned and the content it selected (`content`
/// covers the selected paths and their digests). `parent` is `None` for
/// `--link`, whose layer does not depend on what it lands on.
pub(crate) fn copy_key(parent: Option<&CacheKey>, copy: &CopyOp, content: &[u8]) -> CacheKey {
    let CopyOp {
        add,
        sources,
        dest,
        from,
        chown,
        chmod,
        link,
        excludes,
        parents,
        keep_git_dir,
        checksum,
        unpack,
        heredocs,
    } = copy;
    let mut key = KeyBuilder::new("copy");
    key.key("parent", parent);
    key.text("add", flag(*add));
    list(&mut key, "sources", sources);
    key.text("dest", dest);
    source_ref(&mut key, from.as_ref());
    key.text("chown", chown.as_deref().unwrap_or(""));
    key.text("chmod", chmod.as_ref().map_or("", |c| c.as_str()));
    key.text("link", flag(*link));
    list(&mut key, "excludes", excludes);
    key.text("parents", flag(*parents));
    key.text("keep_git_dir", flag(*keep_git_dir));
    key.text("checksum", checksum.as_deref().unwrap_or(""));
    key.text(
        "unpack",
        match unpack {
            None => "default",
            Some(true) => "true",
            Some(false) => "false",
        },
    );
    key.text("heredocs", &heredocs.len().to_string());
    for heredoc in heredocs {
        heredoc_fields(&mut key, heredoc);
    }
    key.field("content", content);
    key.finish()
}

/// Not a step's key: what a selection from a stack of layers (a `COPY
/// --from`'s sources, a bind mount's) is remembered by, so a rebuild keys
/// the step without reading the layers. `op` is what decides the selection
/// (the COPY keyed without parent or content, or the mount's source); the
/// layers are content digests, so equal layers give an equal selection;
/// `owner` is `--chown` resolved to numbers; `layer_owners` says whether the
/// selected files keep the layers' owners (only root can give them).
pub(crate) fn selection_key(
    op: &CacheKey,
    layers: &[Layer],
    owner: Option<(u64, u64)>,
    layer_owners: bool,
) -> CacheKey {
    let mut key = KeyBuilder::new("selection");
    key.key("op", Some(op));
    key.text("layers", &layers.len().to_string());
    for layer in layers {
        key.text("layer", &layer.digest.to_string());
    }
    let owner = owner.map_or(String::new(), |(uid, gid)| format!("{uid}:{gid}"));
    key.text("owner", &owner);
    key.text("layer_owners", flag(layer_owners));
    key.finish()
}

/// What a bind mount's selection depends on besides its layers: its source.
pub(crate) fn bind_source_key(source: &str) -> CacheKey {
    KeyBuilder::new("bind-source")
        .text("source", source)
        .finish()
}

/// WORKDIR: the directory, and the user it is made for.
pub(crate) fn workdir_key(parent: Option<&CacheKey>, path: &str, inputs: &Inputs) -> CacheKey {
    KeyBuilder::new("workdir")
        .key("parent", parent)
        .text("path", path)
        .text("user", &inputs.user)
        .finish()
}

/// A metadata instruction: its text as planned and the config it leaves
/// (MAINTAINER's author is in `display`).
pub(crate) fn config_key(
    parent: Option<&CacheKey>,
    instruction: &str,
    display: &str,
    config: &ImageConfig,
) -> CacheKey {
    // An image config always serialises; an empty text would still differ
    // from any real one.
    let config = serde_json::to_string(config).unwrap_or_default();
    KeyBuilder::new("config")
        .key("parent", parent)
        .text("instruction", instruction)
        .text("display", display)
        .text("config", &config)
        .finish()
}

/// Not a cache key: where a step sits, for comparing it with its own past
/// (the record that explains a miss): the build's scope, the stage, and
/// the step's place in it.
pub(crate) fn position_key(scope: &str, stage: &str, index: usize) -> CacheKey {
    KeyBuilder::new("position")
        .text("scope", scope)
        .text("stage", stage)
        .text("index", &index.to_string())
        .finish()
}

/// What a RUN sees of its stage: the environment, user and directory.
fn run_inputs(key: &mut KeyBuilder, inputs: &Inputs) {
    key.text("env", &inputs.env.len().to_string());
    for (name, value) in &inputs.env {
        key.text("env.name", name).text("env.value", value);
    }
    key.text("user", &inputs.user);
    key.text("workdir", &inputs.workdir);
}

fn mount_fields(key: &mut KeyBuilder, mount: &Mount) {
    let Mount {
        kind,
        target,
        from,
        source,
        read_only,
        options,
    } = mount;
    key.text(
        "mount.kind",
        match kind {
            MountKind::Bind => "bind",
            MountKind::Cache => "cache",
            MountKind::Tmpfs => "tmpfs",
            MountKind::Secret => "secret",
            MountKind::Ssh => "ssh",
        },
    );
    key.text("mount.target", target);
    source_ref(key, from.as_ref());
    key.text("mount.source", source.as_deref().unwrap_or(""));
    key.text("mount.read_only", flag(*read_only));
    let MountOptions {
        id,
        sharing,
        mode,
        uid,
        gid,
        size,
        required,
        env,
    } = options;
    let number = |n: &Option<u32>| n.map_or(String::new(), |n| n.to_string());
    key.text("mount.id", id.as_deref().unwrap_or(""))
        .text(
            "mount.sharing",
            match sharing {
                Sharing::Shared => "shared",
                Sharing::Private => "private",
                Sharing::Locked => "locked",
            },
        )
        .text("mount.mode", &number(mode))
        .text("mount.uid", &number(uid))
        .text("mount.gid", &number(gid))
        .text("mount.size", &size.map_or(String::new(), |n| n.to_string()))
        .text("mount.required", flag(*required))
        .text("mount.env", env.as_deref().unwrap_or(""));
}

fn heredoc_fields(key: &mut KeyBuilder, heredoc: &HeredocInput) {
    let HeredocInput {
        name,
        content,
        fd,
        expand,
    } = heredoc;
    key.text("heredoc.name", name)
        .text("heredoc.content", content)
        .text("heredoc.fd", &fd.to_string())
        .text("heredoc.expand", flag(*expand));
}

fn source_ref(key: &mut KeyBuilder, from: Option<&SourceRef>) {
    match from {
        None => key.text("from", ""),
        Some(SourceRef::Stage(id)) => key.text("from.stage", &id.to_string()),
        Some(SourceRef::Image(reference)) => key.text("from.image", reference),
    };
}

fn list(key: &mut KeyBuilder, name: &str, items: &[String]) {
    key.text(name, &items.len().to_string());
    for item in items {
        key.text(name, item);
    }
}

fn flag(value: bool) -> &'static str {
    if value {
        "true"
    } else {
        "false"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            user: "app".into(),
            workdir: "/src".into(),
            ..Inputs::default()
        }
    }

    fn run(argv: &[&str]) -> RunOp {
        RunOp {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            shell_form: true,
            heredocs: Vec::new(),
            mounts: vec![Mount {
                kind: MountKind::Cache,
                target: "/root/.cache".into(),
                from: None,
                source: None,
                read_only: false,
                options: MountOptions {
                    id: Some("/root/.cache".into()),
                    ..MountOptions::default()
                },
            }],
            network: Network::None,
            insecure: false,
            devices: Vec::new(),
            extra_hosts: Vec::new(),
            ulimits: Vec::new(),
            shm_size: None,
        }
    }

    fn copy() -> CopyOp {
        CopyOp {
            add: false,
            sources: vec!["src/".into()],
            dest: "/app/".into(),
            from: Some(SourceRef::Stage(0)),
            chown: Some("1000:1000".into()),
            chmod: Some(kiln_graph::Chmod::parse("0644").unwrap()),
            link: false,
            excludes: Vec::new(),
            parents: false,
            keep_git_dir: false,
            checksum: None,
            unpack: None,
            heredocs: Vec::new(),
        }
    }

    /// The keys of known steps. If this fails, every user's cache misses
    /// after the change: make it on purpose, then update the pins.
    #[test]
    fn golden_keys() {
        let platform = Platform::parse("linux/amd64").unwrap();
        let from = from_key("sha256:1111", &platform);
        let run = run_key(
            Some(&from),
            &run(&["/bin/sh", "-c", "make all"]),
            &inputs(),
            b"mounted",
        );
        let copy = copy_key(Some(&run), &copy(), b"content");
        let workdir = workdir_key(Some(&copy), "/app", &inputs());
        let mut config = ImageConfig::default();
        config.set_env("A", "1");
        let config = config_key(Some(&workdir), "ENV", "ENV A=1", &config);
        let pinned = [
            (
                from,
                "d76ae1fb98f1b08030a165c624b87a2a25c3a8b99c62ef2eb05d2267faf3bf1e",
            ),
            (
                run,
                "76f1ea5d329469fed043e3030312aa20adbd934ca29201cdeee8beec65684b27",
            ),
            (
                copy,
                "4f213196375ec8dac130152d9d9aca858b4d153aa7cf19ac22e8351cc6ad2697",
            ),
            (
                workdir,
                "1ead6b3a57f24b373bc29a35812927c4cb5f402062a143ec44681a8a930da40d",
            ),
            (
                config,
                "b1e7d006a080023441d1642b3d4eae9367e2e839146f58e2b3feed8e72887f86",
            ),
        ];
        let got: Vec<String> = pinned.iter().map(|(key, _)| key.hex()).collect();
        let want: Vec<&str> = pinned.iter().map(|(_, hex)| *hex).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn every_field_counts() {
        let base = run_key(None, &run(&["sh", "-c", "a"]), &inputs(), b"");
        let mut other = run(&["sh", "-c", "a"]);
        other.network = Network::Host;
        assert_ne!(base, run_key(None, &other, &inputs(), b""));
        let mut other = run(&["sh", "-c", "a"]);
        other.mounts[0].read_only = true;
        assert_ne!(base, run_key(None, &other, &inputs(), b""));
        // Argument boundaries are part of the key: "a b" is not "a","b".
        assert_ne!(
            run_key(None, &run(&["sh", "-c", "a b"]), &inputs(), b""),
            run_key(None, &run(&["sh", "-c", "a", "b"]), &inputs(), b"")
        );
        let mut moved = inputs();
        moved.workdir = "/elsewhere".into();
        assert_ne!(base, run_key(None, &run(&["sh", "-c", "a"]), &moved, b""));
        let plain = copy_key(None, &copy(), b"c");
        let mut chmod = copy();
        chmod.chmod = Some(kiln_graph::Chmod::parse("0755").unwrap());
        assert_ne!(plain, copy_key(None, &chmod, b"c"));
        assert_ne!(plain, copy_key(None, &copy(), b"d"));
    }
}
