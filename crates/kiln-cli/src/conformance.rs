//! The CLI conformance table (docs/cli-conformance.md): every docker or
//! buildx command and flag a Docker user types, its kiln spelling, and
//! the integration tests that run kiln with it. The kiln side is checked
//! against the clap definitions (a spelling that does not parse fails),
//! every kiln command and flag must be in the table or in its kiln-only
//! part, and "tested by" is found in the test sources, never written by
//! hand: the page cannot drift from the code. `KILN_WRITE_DOCS=1 cargo
//! test -p kiln-cli conformance` rewrites it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clap::CommandFactory;

/// A docker spelling, kiln's (none: not there yet), and a note.
struct Row {
    docker: &'static str,
    kiln: Option<&'static str>,
    note: &'static str,
}

const fn row(docker: &'static str, kiln: &'static str) -> Row {
    Row {
        docker,
        kiln: Some(kiln),
        note: "",
    }
}

const fn noted(docker: &'static str, kiln: &'static str, note: &'static str) -> Row {
    Row {
        docker,
        kiln: Some(kiln),
        note,
    }
}

const fn absent(docker: &'static str, note: &'static str) -> Row {
    Row {
        docker,
        kiln: None,
        note,
    }
}

/// docker's commands and flags, grouped as its reference groups them.
const ROWS: &[Row] = &[
    // docker build / docker buildx build
    row("docker build PATH", "build"),
    row("build -t, --tag", "build --tag"),
    row("build -f, --file", "build --file"),
    row("build --build-arg", "build --build-arg"),
    row("build --target", "build --target"),
    row("build --label", "build --label"),
    row("build --iidfile", "build --iidfile"),
    row("buildx build --metadata-file", "build --metadata-file"),
    row("buildx build -o, --output", "build --output"),
    noted(
        "buildx build --progress",
        "build --progress",
        "auto, tty, plain, json, quiet",
    ),
    row("build -q, --quiet", "build --quiet"),
    row("build --no-cache", "build --no-cache"),
    row("buildx build --no-cache-filter", "build --no-cache-filter"),
    row("build --pull", "build --pull"),
    row("buildx build --push", "build --push"),
    row("build --platform", "build --platform"),
    row("buildx build --cache-to", "build --cache-to"),
    row("build --cache-from", "build --cache-from"),
    row("buildx build --secret", "build --secret"),
    row("buildx build --ssh", "build --ssh"),
    row("buildx build --allow", "build --allow"),
    noted(
        "buildx build --load",
        "build",
        "every build is in the store already",
    ),
    noted(
        "build --network",
        "build --network",
        "default (the host's), none, host; RUN --network per step over it",
    ),
    noted(
        "build --add-host",
        "build --add-host",
        "host-gateway refused: no bridge network",
    ),
    row("build --shm-size", "build --shm-size"),
    row("build --ulimit", "build --ulimit"),
    noted(
        "buildx build --build-context",
        "build --build-context",
        "a directory or docker-image://REF",
    ),
    noted(
        "buildx build --call check, --check",
        "build --check",
        "BuildKit's checks that apply to kiln; --call check is the same",
    ),
    // docker run
    row("docker run IMAGE [CMD]", "run"),
    row("run --rm", "run --rm"),
    row("run --pull", "run --pull"),
    row("run -d, --detach", "run --detach"),
    row("run -i, --interactive", "run --interactive"),
    row("run -t, --tty", "run --tty"),
    row("run --name", "run --name"),
    row("run -e, --env", "run --env"),
    row("run --env-file", "run --env-file"),
    noted(
        "run -v, --volume",
        "run --volume",
        "HOST:PATH, NAME:PATH or PATH (anonymous), :ro",
    ),
    row("run -w, --workdir", "run --workdir"),
    row("run -u, --user", "run --user"),
    row("run --entrypoint", "run --entrypoint"),
    noted("run --network", "run --network", "host or none"),
    row("run --hostname", "run --hostname"),
    row("run --add-host", "run --add-host"),
    row("run --privileged", "run --privileged"),
    row("run --init", "run --init"),
    row("run --security-opt", "run --security-opt"),
    row("run -m, --memory", "run --memory"),
    row("run --cpus", "run --cpus"),
    row("run --pids-limit", "run --pids-limit"),
    absent(
        "run -p, --publish",
        "comes with the networks of the daemon issue",
    ),
    row("run --read-only", "run --read-only"),
    row("run --cap-add", "run --cap-add"),
    row("run --cap-drop", "run --cap-drop"),
    row("run --tmpfs", "run --tmpfs"),
    noted(
        "run --mount",
        "run --mount",
        "type=bind, type=volume and type=tmpfs",
    ),
    row("run --ulimit", "run --ulimit"),
    row("run --shm-size", "run --shm-size"),
    row("run --stop-signal", "run --stop-signal"),
    row("run --health-cmd", "run --health-cmd"),
    row("run --health-interval", "run --health-interval"),
    row("run --health-timeout", "run --health-timeout"),
    row("run --health-retries", "run --health-retries"),
    row("run --health-start-period", "run --health-start-period"),
    row("run --health-start-interval", "run --health-start-interval"),
    row("run --no-healthcheck", "run --no-healthcheck"),
    row("run --group-add", "run --group-add"),
    row("run --stop-timeout", "run --stop-timeout"),
    noted(
        "run --restart",
        "run --restart",
        "no, always, unless-stopped, on-failure[:N]; Docker's backoff; kiln serve brings always/unless-stopped back",
    ),
    row("run -l, --label", "run --label"),
    // containers
    row("docker ps", "ps"),
    row("ps -a, --all", "ps --all"),
    row("ps -q, --quiet", "ps --quiet"),
    row("ps --no-trunc", "ps --no-trunc"),
    row("ps --format", "ps --format"),
    noted(
        "ps -f, --filter",
        "ps --filter",
        "id, name, status, label, exited, ancestor, volume",
    ),
    row("docker start", "start"),
    row("start -a, --attach", "start --attach"),
    row("docker stop", "stop"),
    row("stop -t, --time", "stop --time"),
    row("docker rm", "rm"),
    row("rm -f, --force", "rm --force"),
    row("rm -v, --volumes", "rm --volumes"),
    row("docker logs", "logs"),
    row("logs -f, --follow", "logs --follow"),
    row("logs -n, --tail", "logs --tail"),
    row("logs -t, --timestamps", "logs --timestamps"),
    noted(
        "logs --since",
        "logs --since",
        "an RFC 3339 date, seconds since the epoch or a duration ago",
    ),
    row("logs --until", "logs --until"),
    row("docker commit", "commit"),
    row("docker exec", "exec"),
    row("exec -d, --detach", "exec --detach"),
    row("exec -i, --interactive", "exec --interactive"),
    row("exec -t, --tty", "exec --tty"),
    row("exec -e, --env", "exec --env"),
    row("exec --env-file", "exec --env-file"),
    row("exec -u, --user", "exec --user"),
    row("exec -w, --workdir", "exec --workdir"),
    row("exec --privileged", "exec --privileged"),
    row("docker kill", "kill"),
    row("kill -s, --signal", "kill --signal"),
    row("docker pause", "pause"),
    row("docker rename", "rename"),
    row("docker stats", "stats"),
    row("docker update", "update"),
    row("docker top", "top"),
    row("docker diff", "diff"),
    row("update -m, --memory", "update --memory"),
    row("update --cpus", "update --cpus"),
    row("update --pids-limit", "update --pids-limit"),
    row("update --restart", "update --restart"),
    row("stats --no-stream", "stats --no-stream"),
    row("stats --no-trunc", "stats --no-trunc"),
    row("docker export", "export"),
    row("export -o, --output", "export --output"),
    row("docker unpause", "unpause"),
    row("docker wait", "wait"),
    row("docker restart", "restart"),
    row("restart -t, --time", "restart --time"),
    noted(
        "docker cp",
        "cp",
        "running or stopped containers; - for a tar stream",
    ),
    row("cp -a, --archive", "cp --archive"),
    row("cp -L, --follow-link", "cp --follow-link"),
    absent(
        "docker attach, create, port, events",
        "not yet: each says so (no misleading suggestion)",
    ),
    absent(
        "docker network, compose",
        "with the daemon (kiln serve): each says so",
    ),
    row("docker volume create", "volume create"),
    row("volume create --label", "volume create --label"),
    row("docker volume ls", "volume ls"),
    row("volume ls -q, --quiet", "volume ls --quiet"),
    row("volume ls --format", "volume ls --format"),
    row("docker volume inspect", "volume inspect"),
    row("volume inspect -f, --format", "volume inspect --format"),
    row("docker volume rm", "volume rm"),
    row("volume rm -f, --force", "volume rm --force"),
    row("docker volume prune", "volume prune"),
    row("volume prune -a, --all", "volume prune --all"),
    row("volume prune -f, --force", "volume prune --force"),
    row("docker container ls", "container ls"),
    row("container ls -a", "container ls --all"),
    row("container ls -q", "container ls --quiet"),
    row("container ls --no-trunc", "container ls --no-trunc"),
    row("container ls --format", "container ls --format"),
    row("docker container run", "container run"),
    row("docker container rm", "container rm"),
    row("container rm -f", "container rm --force"),
    row("docker container stop", "container stop"),
    row("container stop -t", "container stop --time"),
    row("docker container start", "container start"),
    row("container start -a", "container start --attach"),
    row("docker container logs", "container logs"),
    row("container logs -f", "container logs --follow"),
    row("container logs -n, --tail", "container logs --tail"),
    row(
        "container logs -t, --timestamps",
        "container logs --timestamps",
    ),
    row("docker container exec", "container exec"),
    row("docker container cp", "container cp"),
    row("docker container kill", "container kill"),
    row("container kill -s", "container kill --signal"),
    row("docker container pause", "container pause"),
    row("docker container rename", "container rename"),
    row("docker container stats", "container stats"),
    row("docker container update", "container update"),
    row("docker container top", "container top"),
    row("docker container diff", "container diff"),
    row("docker container export", "container export"),
    row("docker container unpause", "container unpause"),
    row("docker container wait", "container wait"),
    row("docker container restart", "container restart"),
    row("container restart -t", "container restart --time"),
    row("docker container commit", "container commit"),
    row("docker container inspect", "container inspect"),
    row(
        "container inspect -f, --format",
        "container inspect --format",
    ),
    row("docker container prune", "container prune"),
    row("container prune -f, --force", "container prune --force"),
    // images
    row("docker images [REPOSITORY]", "images"),
    row("images -q, --quiet", "images --quiet"),
    noted(
        "images -a, --all",
        "images --all",
        "kiln keeps no intermediate images",
    ),
    row("images --no-trunc", "images --no-trunc"),
    noted(
        "images -f, --filter",
        "images --filter",
        "dangling=, reference=",
    ),
    noted(
        "images --format",
        "images --format",
        "{{.Field}}, {{json .}}, table",
    ),
    row("docker inspect", "inspect"),
    row("inspect -f, --format", "inspect --format"),
    row("inspect --type", "inspect --type"),
    row("docker history", "history"),
    row("history --no-trunc", "history --no-trunc"),
    row("docker tag", "tag"),
    row("docker rmi", "rmi"),
    row("rmi -f, --force", "rmi --force"),
    noted(
        "docker save",
        "save",
        "to standard output without -o, never to a terminal",
    ),
    row("save -o, --output", "save --output"),
    noted("docker load", "load", "from standard input without -i"),
    row("load -i, --input", "load --input"),
    row("docker import", "import"),
    row("docker pull", "pull"),
    row("pull -q, --quiet", "pull --quiet"),
    row("pull --platform", "pull --platform"),
    row("docker push", "push"),
    row("push -q, --quiet", "push --quiet"),
    row("docker login", "login"),
    row("login -u, --username", "login --username"),
    row("login -p, --password", "login --password"),
    row("login --password-stdin", "login --password-stdin"),
    row("docker logout", "logout"),
    row("docker image ls", "image ls"),
    row("image ls -q", "image ls --quiet"),
    row("image ls -a", "image ls --all"),
    row("image ls --no-trunc", "image ls --no-trunc"),
    row("image ls -f", "image ls --filter"),
    row("image ls --format", "image ls --format"),
    row("docker image rm", "image rm"),
    row("image rm -f", "image rm --force"),
    row("docker image inspect", "image inspect"),
    row("image inspect -f", "image inspect --format"),
    row("docker image prune", "image prune"),
    row("image prune -f, --force", "image prune --force"),
    row("image prune -a, --all", "image prune --all"),
    row("docker image history", "image history"),
    row("image history --no-trunc", "image history --no-trunc"),
    row("docker image tag", "image tag"),
    row("docker image save", "image save"),
    row("image save -o", "image save --output"),
    row("docker image load", "image load"),
    row("image load -i", "image load --input"),
    row("docker image import", "image import"),
    row("docker image pull", "image pull"),
    row("image pull -q", "image pull --quiet"),
    row("image pull --platform", "image pull --platform"),
    row("docker image push", "image push"),
    row("image push -q", "image push --quiet"),
    // system
    row("docker system df", "system df"),
    row("docker system prune", "system prune"),
    row("system prune -f, --force", "system prune --force"),
    row("docker system info, docker info", "info"),
    row("docker system info", "system info"),
    row("docker version", "version"),
    row("docker builder prune", "prune"),
    row("builder prune -a, --all", "prune --all"),
    row("builder prune --keep-storage", "prune --keep-storage"),
    row("builder prune --filter until=", "prune --filter"),
    row("buildx du", "cache du"),
    row("docker completion", "completion"),
];

/// A command of the clap tree by its path (names or aliases).
fn find<'a>(root: &'a clap::Command, path: &[&str]) -> Option<&'a clap::Command> {
    path.iter().try_fold(root, |command, name| {
        command
            .get_subcommands()
            .find(|c| c.get_name() == *name || c.get_all_aliases().any(|a| a == *name))
    })
}

/// A `kiln` spelling (`image ls --quiet`) split into its command path
/// and its flag, if any.
fn split(spelling: &str) -> (Vec<&str>, Option<&str>) {
    let words: Vec<&str> = spelling.split_whitespace().collect();
    match words.last() {
        Some(flag) if flag.starts_with("--") => (words[..words.len() - 1].to_vec(), Some(flag)),
        _ => (words, None),
    }
}

/// Whether `command` has the long flag `--name` (global ones count).
fn has_flag(root: &clap::Command, command: &clap::Command, flag: &str) -> bool {
    let long = flag.trim_start_matches("--");
    command
        .get_arguments()
        .chain(root.get_arguments().filter(|a| a.is_global_set()))
        .any(|a| a.get_long() == Some(long))
}

/// Every visible command path and its visible flags (help excluded).
fn kiln_surface(root: &clap::Command) -> BTreeMap<String, Vec<String>> {
    fn walk(command: &clap::Command, path: String, out: &mut BTreeMap<String, Vec<String>>) {
        for sub in command.get_subcommands().filter(|c| !c.is_hide_set()) {
            let path = format!("{path} {}", sub.get_name()).trim().to_owned();
            let flags = sub
                .get_arguments()
                .filter(|a| !a.is_hide_set() && !a.is_global_set())
                .filter_map(|a| a.get_long())
                .filter(|long| *long != "help")
                .map(|long| format!("--{long}"))
                .collect();
            // A group's commands take the flags of the ones they spell
            // otherwise (`image ls` is `images`): listed once, there.
            let grouped = ["image", "container", "system"]
                .iter()
                .any(|group| path.starts_with(&format!("{group} ")));
            out.insert(path.clone(), if grouped { Vec::new() } else { flags });
            walk(sub, path, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, String::new(), &mut out);
    out
}

/// Per test function of the integration tests: the string literals of
/// each `[...]` in its body (the argument lists it runs kiln with). A
/// test "tests" `cmd --flag` when one list has the command's words and
/// the flag (or its short form).
fn test_literals() -> BTreeMap<String, Vec<BTreeSet<String>>> {
    let mut tests = BTreeMap::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let stem = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for part in text.split("#[test]").skip(1) {
            let Some(name) = part
                .split_once("fn ")
                .and_then(|(_, rest)| rest.split_once('('))
                .map(|(name, _)| name.trim().to_owned())
            else {
                continue;
            };
            let lists = part
                .split('[')
                .skip(1)
                .filter_map(|list| list.split_once(']').map(|(inside, _)| inside))
                .map(|inside| {
                    inside
                        .split('"')
                        .skip(1)
                        .step_by(2)
                        .map(str::to_owned)
                        .collect::<BTreeSet<String>>()
                })
                .filter(|literals| !literals.is_empty())
                .collect();
            tests.insert(format!("{stem}::{name}"), lists);
        }
    }
    tests
}

fn tested_by(
    root: &clap::Command,
    spelling: &str,
    tests: &BTreeMap<String, Vec<BTreeSet<String>>>,
) -> Vec<String> {
    let (path, flag) = split(spelling);
    let short = flag.and_then(|flag| {
        let command = find(root, &path)?;
        let long = flag.trim_start_matches("--");
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long))?;
        arg.get_short().map(|c| format!("-{c}"))
    });
    tests
        .iter()
        .filter(|(_, lists)| {
            lists.iter().any(|literals| {
                path.iter().all(|word| literals.contains(*word))
                    && flag.is_none_or(|flag| {
                        literals.contains(flag)
                            || short.as_ref().is_some_and(|s| literals.contains(s))
                    })
            })
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// The first three tests, and how many more.
fn listed(tests: &[String]) -> String {
    let mut shown: Vec<String> = tests.iter().take(3).map(|t| format!("`{t}`")).collect();
    if tests.len() > 3 {
        shown.push(format!("and {} more", tests.len() - 3));
    }
    shown.join("<br>")
}

fn render() -> Result<String, String> {
    let root = crate::Cli::command();
    let tests = test_literals();
    let mut problems = Vec::new();
    let mut covered: BTreeSet<String> = BTreeSet::new();
    let mut out = String::from(
        "# CLI conformance\n\n\
         Generated from kiln's clap definitions by `cargo test -p kiln-cli conformance` \
         (`KILN_WRITE_DOCS=1` rewrites it); edit the table in \
         `crates/kiln-cli/src/conformance.rs`. \"Tested by\" lists the integration \
         tests (`crates/kiln-cli/tests/FILE.rs::TEST`) that run kiln with that command \
         and flag, found in their sources.\n\n\
         | docker / buildx | kiln | tested by | note |\n|---|---|---|---|\n",
    );
    for row in ROWS {
        let (kiln, tested) = match row.kiln {
            Some(spelling) => {
                let (path, flag) = split(spelling);
                match find(&root, &path) {
                    None => problems.push(format!("{spelling}: no such kiln command")),
                    Some(command) => {
                        if let Some(flag) = flag {
                            if !has_flag(&root, command, flag) {
                                problems.push(format!("{spelling}: no such flag"));
                            }
                        }
                    }
                }
                covered.insert(spelling.to_owned());
                let tested = tested_by(&root, spelling, &tests);
                (format!("`kiln {spelling}`"), tested)
            }
            None => ("—".to_owned(), Vec::new()),
        };
        let tested = if tested.is_empty() {
            "—".to_owned()
        } else {
            listed(&tested)
        };
        out.push_str(&format!(
            "| `{}` | {kiln} | {tested} | {} |\n",
            row.docker.replace('|', "\\|"),
            row.note.replace('|', "\\|")
        ));
    }
    out.push_str(
        "\n## kiln's own\n\nCommands and flags docker does not have (or spells \
         otherwise), each with the tests that run it.\n\n\
         | kiln | tested by |\n|---|---|\n",
    );
    for (path, flags) in kiln_surface(&root) {
        let mut spellings = vec![path.clone()];
        spellings.extend(flags.iter().map(|flag| format!("{path} {flag}")));
        for spelling in spellings {
            if covered.contains(&spelling) {
                continue;
            }
            let tested = tested_by(&root, &spelling, &tests);
            let tested = if tested.is_empty() {
                "—".to_owned()
            } else {
                listed(&tested)
            };
            out.push_str(&format!("| `kiln {spelling}` | {tested} |\n"));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join("\n"))
    }
}

#[test]
fn the_conformance_page_is_the_one_the_clap_definitions_give() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli-conformance.md");
    let rendered =
        render().unwrap_or_else(|problems| panic!("the table names what kiln lacks:\n{problems}"));
    if std::env::var_os("KILN_WRITE_DOCS").is_some() {
        std::fs::write(&page, &rendered).unwrap();
    }
    let written = std::fs::read_to_string(&page).unwrap_or_default();
    assert!(
        written == rendered,
        "docs/cli-conformance.md is out of date: run KILN_WRITE_DOCS=1 cargo test -p kiln-cli conformance"
    );
}

#[test]
fn a_spelling_kiln_lacks_is_caught() {
    let root = crate::Cli::command();
    let (path, flag) = split("build --no-such-flag");
    let command = find(&root, &path).unwrap();
    assert!(!has_flag(&root, command, flag.unwrap()));
    assert!(find(&root, &["no-such-command"]).is_none());
    assert!(has_flag(
        &root,
        find(&root, &["image", "ls"]).unwrap(),
        "--quiet"
    ));
    assert!(
        find(&root, &["container", "list"]).is_some(),
        "aliases count"
    );
}

/// Every `kiln ...` spelling in the README's command tables: the
/// command path it names (the longest prefix that is a command) and the
/// flags it shows.
fn readme_spellings(readme: &str) -> Vec<String> {
    let mut spellings = Vec::new();
    for line in readme.lines().filter(|l| l.starts_with("| `kiln ")) {
        let first_cell = line[1..].split(" | ").next().unwrap_or_default();
        for part in first_cell.split('`').skip(1).step_by(2) {
            if part.starts_with("kiln ") {
                spellings.push(part.to_owned());
            }
        }
    }
    spellings
}

#[test]
fn the_readme_tables_name_only_flags_kiln_has_and_every_command() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    assert!(readme_spellings(&readme).len() > 20);
    let problems = readme_problems(&readme);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // And it can fail: a flag kiln lacks, a command it lacks.
    let bad = "| `kiln build --no-such-flag CONTEXT`, `kiln frobnicate` | x |\n";
    let problems = readme_problems(bad);
    assert!(
        problems.iter().any(|p| p.contains("has no --no-such-flag"))
            && problems.iter().any(|p| p.contains("no command frobnicate"))
            && problems.iter().any(|p| p.contains("kiln run is not in")),
        "{problems:?}"
    );
}

/// What the README's tables name that kiln does not have, and the
/// commands they leave out.
fn readme_problems(readme: &str) -> Vec<String> {
    let root = crate::Cli::command();
    let spellings = readme_spellings(readme);
    let mut named = BTreeSet::new();
    let mut problems = Vec::new();
    for spelling in &spellings {
        // `kiln image ls\|rm` names several commands of a group.
        let words: Vec<&str> = spelling.split_whitespace().skip(1).collect();
        let Some(first) = words.first() else { continue };
        let heads: Vec<String> = first.split("\\|").map(str::to_owned).collect();
        for head in heads {
            named.insert(head.clone());
            let Some(mut command) = find(&root, &[head.as_str()]) else {
                problems.push(format!("{spelling}: no command {head}"));
                continue;
            };
            let mut rest = &words[1..];
            while let Some(word) = rest.first() {
                let subs: Vec<&str> = word.split("\\|").collect();
                match find(command, &subs[..1]) {
                    Some(sub) => {
                        for other in &subs[1..] {
                            if find(command, &[other]).is_none() {
                                problems.push(format!("{spelling}: no command {head} {other}"));
                            }
                        }
                        command = sub;
                        rest = &rest[1..];
                    }
                    None => break,
                }
            }
            // `[--check\|--call check]`: each alternative a flag of its own.
            for word in rest.iter().flat_map(|w| w.split("\\|")) {
                let flag = word
                    .trim_start_matches('[')
                    .split(['=', ']', ' '])
                    .next()
                    .unwrap_or("");
                let known = if let Some(long) = flag.strip_prefix("--") {
                    has_flag(&root, command, &format!("--{long}"))
                } else if let Some(short) = flag.strip_prefix('-').filter(|s| !s.is_empty()) {
                    // `-it`: each letter a short flag.
                    short
                        .chars()
                        .all(|c| command.get_arguments().any(|a| a.get_short() == Some(c)))
                } else {
                    true
                };
                if !known {
                    problems.push(format!("{spelling}: kiln {head} has no {flag}"));
                }
            }
        }
    }
    for command in root.get_subcommands().filter(|c| !c.is_hide_set()) {
        if !named.contains(command.get_name()) {
            problems.push(format!(
                "kiln {} is not in the README's tables",
                command.get_name()
            ));
        }
    }
    problems
}
