//! A build through the library face alone (no binary): a Dockerfile with
//! RUN and COPY, built twice and once after an edit, with the report's
//! per-step outcomes, totals and events checked. Needs root (RUN runs in
//! namespaces) and Debian's busybox-static (scripts/install-test-deps.sh).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use kiln_engine::{
    BuildEvent, BuildRequest, CacheOutcome, Cancel, Engine, EngineError, EventKind, Miss,
};
use kiln_store::{import_rootfs, RootfsImport, Store};

fn busybox_store(dir: &Path) -> Store {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs.sh");
    let tar = dir.join("busybox-rootfs.tar");
    let out = Command::new("sh").arg(&script).arg(&tar).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(&dir.join("store")).unwrap();
    let record = import_rootfs(
        &store,
        fs::File::open(&tar).unwrap(),
        &RootfsImport {
            source: "busybox-rootfs.tar",
            os: "linux",
            architecture: "amd64",
            variant: None,
            created: "1970-01-01T00:00:00Z",
        },
    )
    .unwrap();
    store.tag("busybox", &record.manifest).unwrap();
    store
}

/// Builds and returns the report with the events it sent.
fn build(engine: &Engine, request: &BuildRequest) -> (kiln_engine::BuildReport, Vec<BuildEvent>) {
    let events = Mutex::new(Vec::new());
    let report = engine
        .build(request, &Cancel::default(), &|event| {
            events.lock().unwrap().push(event)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    (report, events.into_inner().unwrap())
}

fn outcomes(report: &kiln_engine::BuildReport) -> Vec<(String, CacheOutcome)> {
    report
        .steps
        .iter()
        .map(|step| (step.title.clone(), step.cache.clone()))
        .collect()
}

#[test]
fn a_build_with_run_and_copy_reports_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(busybox_store(dir.path()));
    let context = dir.path().join("context");
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("greeting"), "hello\n").unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nCOPY greeting /greeting\nRUN cat /greeting > /copied\nENV A=1\n",
    )
    .unwrap();
    let request = BuildRequest::new(&context).tag("greeter");

    let (first, events) = build(&engine, &request);
    let titles: Vec<&str> = first.steps.iter().map(|s| s.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "[stage-0 1/4] FROM busybox",
            "[stage-0 2/4] COPY greeting /greeting",
            "[stage-0 3/4] RUN cat /greeting > /copied",
            "[stage-0 4/4] ENV A=1",
        ]
    );
    assert_eq!(first.steps[0].cache, CacheOutcome::NotApplicable);
    for step in &first.steps[1..] {
        assert_eq!(
            step.cache,
            CacheOutcome::Miss(Miss::FirstBuild),
            "{}",
            step.title
        );
        assert!(step.key.is_some());
    }
    assert!(first.steps[1].bytes_written > 0 && first.steps[2].bytes_written > 0);
    assert_eq!(first.steps[3].bytes_written, 0);
    assert_eq!(first.totals.outcome, "built");
    assert_eq!((first.totals.steps_run, first.totals.steps_cached), (3, 0));
    assert_eq!(
        first.totals.bytes_written,
        first.steps.iter().map(|s| s.bytes_written).sum::<u64>()
    );
    // The image is tagged, and is what the report names.
    let tagged = engine.store().resolve("greeter").unwrap();
    assert_eq!(tagged.digest().to_string(), first.manifest.to_string());
    // Events: each step starts and finishes once, and the summary is last.
    let started = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Started { .. }))
        .count();
    assert_eq!(started, 4);
    match &events.last().unwrap().kind {
        EventKind::Summary(summary) => assert_eq!(summary, &first.totals),
        other => panic!("last event {other:?}"),
    }

    let (again, _) = build(&engine, &request);
    assert_eq!(again.manifest, first.manifest);
    assert!(again.steps[1..]
        .iter()
        .all(|step| step.cache == CacheOutcome::Hit));
    assert_eq!((again.totals.steps_run, again.totals.steps_cached), (0, 3));
    assert_eq!(again.totals.cache_hit_rate, 1.0);
    assert_eq!(again.totals.bytes_written, 0);

    fs::write(context.join("greeting"), "hi\n").unwrap();
    let (edited, _) = build(&engine, &request);
    let outcomes = outcomes(&edited);
    assert!(
        matches!(&outcomes[1].1, CacheOutcome::Miss(Miss::Files { first, how: "changed", .. }) if first == "greeting"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2].1, CacheOutcome::Miss(Miss::ParentChanged));
    assert_eq!(edited.totals.steps_run, 3);
}

#[test]
fn a_broken_step_is_an_error_at_its_line_after_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(busybox_store(dir.path()));
    let context = dir.path().join("context");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN echo ok\nRUN exit 3\n",
    )
    .unwrap();
    let events = Mutex::new(Vec::new());
    let result = engine.build(&BuildRequest::new(&context), &Cancel::default(), &|event| {
        events.lock().unwrap().push(event)
    });
    match result {
        Err(EngineError::Step { line: 3, .. }) => {}
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("built"),
    }
    let events = events.into_inner().unwrap();
    match &events.last().unwrap().kind {
        EventKind::Summary(summary) => {
            assert_eq!(summary.outcome, "failed");
            assert_eq!((summary.steps_run, summary.steps_failed), (2, 1));
        }
        other => panic!("last event {other:?}"),
    }
}

/// What a container printed, collected.
#[derive(Default)]
struct Collected(Vec<u8>);

impl kiln_runtime::OutputSink for Collected {
    fn stdout(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
    }
    fn stderr(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
    }
}

#[test]
fn a_container_is_made_from_an_image_run_and_committed_through_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(busybox_store(dir.path()));
    let request = kiln_engine::ContainerRequest {
        image: "busybox".into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo $HOME $HOSTNAME $GREETING $$ $(pwd); echo made > /made; exit 7".into(),
        ],
        env: vec!["GREETING=hello".into()],
        workdir: Some("/tmp".into()),
        hostname: Some("box".into()),
        network: kiln_engine::NetworkMode::None,
        ..Default::default()
    };
    let record = engine.create_container(&request).unwrap();
    let mut output = Collected::default();
    let mut pids = Vec::new();
    let code = engine
        .run_container(
            &record.id,
            kiln_engine::Attach {
                stdin: false,
                window: None,
                output: Some(&mut output),
            },
            &mut |running| {
                pids.push(running.pid);
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(code, 7);
    assert_eq!(pids.len(), 1);
    // HOME from root's passwd entry, the hostname asked for, the command
    // as pid 1, the working directory.
    assert_eq!(
        String::from_utf8_lossy(&output.0),
        "/root box hello 1 /tmp\n"
    );
    let record = engine.find_container(&record.id[..12]).unwrap();
    assert_eq!(record.status(), "Exited (7)");
    let log = fs::read(engine.containers().log_path(&record.id)).unwrap();
    assert_eq!(log, output.0);
    let image = engine
        .commit_container(&record, Some("made"), "1970-01-01T00:00:00Z")
        .unwrap();
    assert_eq!(
        engine.store().resolve("made").unwrap().digest().to_string(),
        image.manifest.digest().to_string()
    );
    engine.remove_container(&record, false).unwrap();
    assert!(engine.find_container(&record.id).is_err());
}
