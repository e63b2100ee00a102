//! The commands that manage images in the store: `import`, `images`,
//! `inspect`, `history`, `tag`, `rmi`, `save`, `load`, `check`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use kiln_engine::ImageFilter;
use kiln_store::{import_rootfs, RootfsImport, Store};

use super::dockerfile::print;
use kiln_engine::human_size;
use kiln_engine::OutputFile;

/// Opens the store at `--root`, else `KILN_ROOT`, else the default.
pub fn open_store(root: Option<&Path>) -> anyhow::Result<Store> {
    let root = root.map_or_else(Store::default_root, Path::to_path_buf);
    // Absolute, so that what is derived from it (overlay dirs, a detached
    // monitor's --root) means the same from anywhere.
    let root = std::path::absolute(&root)
        .with_context(|| format!("opening the store at {}", root.display()))?;
    Store::open(&root).with_context(|| format!("opening the store at {}", root.display()))
}

#[derive(Args)]
pub struct ImportArgs {
    /// A root filesystem as a tar file (plain or gzip); `-` reads standard input
    file: PathBuf,
    /// The name to give the image
    name: String,
}

pub fn import(root: Option<&Path>, args: ImportArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let source = args.file.display().to_string();
    let reader: Box<dyn Read> = if source == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&args.file).with_context(|| format!("opening {source}"))?)
    };
    let platform = kiln_graph::Platform::host();
    let created = creation_time()?;
    let record = import_rootfs(
        &store,
        reader,
        &RootfsImport {
            source: &source,
            os: &platform.os,
            architecture: &platform.architecture,
            variant: platform.variant.as_deref(),
            created: &created,
        },
    )?;
    store.tag(&args.name, &record.manifest)?;
    print(&format!("{}\n", record.manifest.digest()))
}

/// `SOURCE_DATE_EPOCH` when set (reproducible images), else now.
pub fn creation_time() -> anyhow::Result<String> {
    Ok(kiln_engine::creation_time(source_date_epoch()?))
}

/// `SOURCE_DATE_EPOCH`, if set (an empty value is unset).
pub fn source_date_epoch() -> anyhow::Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) if !text.is_empty() => {
            Ok(Some(text.parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds")
            })?))
        }
        _ => Ok(None),
    }
}

/// `kiln images`: one row per name, and one per untagged image.
#[derive(Args)]
pub struct ImagesArgs {
    /// Print only the image ids, one per row
    #[arg(short, long)]
    quiet: bool,
    /// Show all images (kiln keeps no intermediate images: the same as without)
    #[arg(short, long)]
    all: bool,
    /// Show whole image ids
    #[arg(long)]
    no_trunc: bool,
    /// Only images that match: dangling=true|false, reference=PATTERN (repeatable)
    #[arg(short, long, value_name = "FILTER")]
    filter: Vec<String>,
    /// Print with a Go template ({{.ID}}, {{.Repository}}, {{.Tag}}, {{.Digest}}, {{.CreatedSince}}, {{.CreatedAt}}, {{.Size}}, {{json .}}); `table ...` adds a header
    #[arg(long)]
    format: Option<String>,
    /// Only images of this repository (and tag)
    repository: Option<String>,
}

/// The column titles of `kiln images` (and its `--format table`).
fn image_column(field: &str) -> Option<&'static str> {
    Some(match field {
        "ID" => "IMAGE ID",
        "CreatedSince" => "CREATED",
        "CreatedAt" => "CREATED AT",
        _ => return None,
    })
}

pub fn list(root: Option<&Path>, args: ImagesArgs) -> anyhow::Result<()> {
    let engine = kiln_engine::Engine::new(open_store(root)?);
    let mut filters = args
        .filter
        .iter()
        .map(|f| {
            let (key, value) = f.split_once('=').unwrap_or((f, ""));
            ImageFilter::parse(key, value).with_context(|| format!("--filter {f:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(repository) = &args.repository {
        filters.push(ImageFilter::parse("reference", repository)?);
    }
    let _ = args.all;
    let template = match (&args.format, args.quiet) {
        (_, true) => "{{.ID}}".to_owned(),
        (Some(format), false) => format.clone(),
        (None, false) => {
            "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}\\t{{.CreatedSince}}\\t{{.Size}}".to_owned()
        }
    };
    let template = crate::template::Template::parse(&template).map_err(anyhow::Error::msg)?;
    let rows: Vec<serde_json::Value> = engine
        .images()?
        .iter()
        .filter(|image| filters.iter().all(|f| f.matches(image)))
        .map(|image| image_row(image, args.no_trunc))
        .collect();
    print(&template.render_all(&rows, &image_column))
}

/// One image as `{{json .}}` shows it (docker's field names).
fn image_row(image: &kiln_engine::ImageSummary, no_trunc: bool) -> serde_json::Value {
    let (repository, tag) = image.repository_and_tag();
    let id = if no_trunc {
        image.id.to_string()
    } else {
        image.id.hex()[..12].to_owned()
    };
    let created = image.created.as_deref().unwrap_or("");
    serde_json::json!({
        "ID": id,
        "Repository": repository,
        "Tag": tag,
        "Digest": image.id.to_string(),
        "CreatedAt": docker_time(created),
        "CreatedSince": if created.is_empty() { "N/A".to_owned() } else { time_ago(created) },
        "Size": human_size(image.size),
    })
}

/// An RFC 3339 time as docker's tables print one:
/// `2023-11-14 22:13:20 +0000 UTC`.
fn docker_time(rfc3339: &str) -> String {
    match humantime::parse_rfc3339_weak(rfc3339) {
        Ok(time) => {
            let text = humantime::format_rfc3339_seconds(time).to_string();
            format!("{} +0000 UTC", text.trim_end_matches('Z').replace('T', " "))
        }
        Err(_) => rfc3339.to_owned(),
    }
}

#[derive(Args)]
pub struct InspectArgs {
    /// Images or containers (names or ids)
    #[arg(required = true)]
    names: Vec<String>,
    /// Print each with a Go template ({{.Id}}, {{.RepoTags}}, {{.Config.Env}}, {{json .Config}}...)
    #[arg(short, long)]
    format: Option<String>,
    /// Only look for this kind of object
    #[arg(long = "type", value_enum)]
    pub kind: Option<InspectType>,
}

/// `--type` of `kiln inspect`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InspectType {
    Image,
    Container,
}

#[derive(Args)]
pub struct HistoryArgs {
    /// An image name, digest or id
    name: String,
    /// Show whole commands and RFC 3339 times
    #[arg(long)]
    no_trunc: bool,
}

/// `kiln history NAME`: the config's history, newest first, with the size
/// of the layer each entry made (as `docker history` shows it).
pub fn history(root: Option<&Path>, args: HistoryArgs) -> anyhow::Result<()> {
    let engine = kiln_engine::Engine::new(open_store(root)?);
    let digest = engine.stored_image(&args.name)?.digest;
    let rows: Vec<[String; 4]> = engine
        .image_history(&args.name)?
        .into_iter()
        .map(|entry| {
            let created = if args.no_trunc {
                entry.created
            } else {
                time_ago(&entry.created)
            };
            [
                created,
                shorten(&entry.created_by, 45, args.no_trunc),
                human_size(entry.size),
                entry.comment,
            ]
        })
        .collect();
    // Only the newest entry is the image itself; the others have no image
    // of their own, as with BuildKit-built images in Docker.
    let mut lines = vec!["IMAGE\tCREATED\tCREATED BY\tSIZE\tCOMMENT".to_owned()];
    for (index, [created, by, size, comment]) in rows.iter().rev().enumerate() {
        let image = if index == 0 {
            digest.hex()[..12].to_string()
        } else {
            "<missing>".to_string()
        };
        // A tab or newline in a command would break the columns.
        let by = by.replace(['\t', '\n'], " ");
        lines.push(format!("{image}\t{created}\t{by}\t{size}\t{comment}"));
    }
    let out = crate::template::align_columns(&lines);
    print(&out)
}

/// Cuts `text` to `width` characters with a trailing `…`, unless `keep`.
fn shorten(text: &str, width: usize, keep: bool) -> String {
    if keep || text.chars().count() <= width {
        return text.to_string();
    }
    let mut short: String = text.chars().take(width - 1).collect();
    short.push('…');
    short
}

/// An RFC 3339 time as `docker history` shows it: "3 minutes ago".
fn time_ago(rfc3339: &str) -> String {
    let Ok(then) = humantime::parse_rfc3339_weak(rfc3339) else {
        return rfc3339.to_string();
    };
    let Ok(elapsed) = std::time::SystemTime::now().duration_since(then) else {
        return "in the future".to_string();
    };
    format!("{} ago", kiln_engine::human_duration(elapsed))
}

/// `kiln inspect NAME...`: each image (or container) as JSON in docker's
/// field names, in an array as docker prints them; `-f` renders each with
/// a template instead.
pub fn inspect(root: Option<&Path>, args: InspectArgs) -> anyhow::Result<()> {
    let engine = kiln_engine::Engine::new(open_store(root)?);
    let template = args
        .format
        .as_deref()
        .map(crate::template::Template::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let mut all = Vec::new();
    for name in &args.names {
        all.push(inspect_one(&engine, name, args.kind)?);
    }
    match template {
        Some(template) => print(&template.render_all(&all, &|_| None)),
        None => print(&(serde_json::to_string_pretty(&all)? + "\n")),
    }
}

/// The image `name` names (unless `--type container`), else the container.
fn inspect_one(
    engine: &kiln_engine::Engine,
    name: &str,
    kind: Option<InspectType>,
) -> anyhow::Result<serde_json::Value> {
    if kind != Some(InspectType::Container) {
        match engine.image_json(name) {
            Ok(image) => return Ok(image),
            Err(error) if kind == Some(InspectType::Image) => return Err(error.into()),
            Err(_) => {}
        }
    }
    match engine.find_container(name) {
        Ok(record) => Ok(kiln_engine::container_json(&record)),
        Err(_) if kind.is_none() => anyhow::bail!("no image or container named {name:?}"),
        Err(error) => Err(error.into()),
    }
}

#[derive(Args)]
pub struct TagArgs {
    /// The image to tag (name, digest or id)
    source: String,
    /// The new name
    target: String,
}

pub fn tag(root: Option<&Path>, args: TagArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let descriptor = store.resolve(&args.source)?;
    store.tag(&args.target, &descriptor)?;
    Ok(())
}

#[derive(Args)]
pub struct RmiArgs {
    /// Image names or ids
    #[arg(required = true)]
    names: Vec<String>,
    /// Remove every name of an image given by id
    #[arg(short, long)]
    force: bool,
}

/// `kiln rmi NAME...`: removes the names (an id: its image), then
/// whatever nothing reaches any more. Each is removed or reported; a
/// failure fails the command after the others are done, as `docker rmi`.
pub fn remove(root: Option<&Path>, args: RmiArgs) -> anyhow::Result<()> {
    let engine = kiln_engine::Engine::new(open_store(root)?);
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    for name in &args.names {
        match engine.remove_image(name, args.force) {
            Ok(done) => removed.extend(done),
            Err(error) => failed.push(format!(
                "{name}: {}",
                crate::output::render_error(&error.into())
            )),
        }
    }
    let report = engine.gc()?;
    let mut out = String::new();
    for done in &removed {
        match done {
            kiln_engine::Removed::Untagged { name, id } => {
                out.push_str(&format!("Untagged: {name} ({id})\n"));
            }
            kiln_engine::Removed::Deleted { id } => out.push_str(&format!("Deleted: {id}\n")),
        }
    }
    out.push_str(&freed(&report));
    print(&out)?;
    if !failed.is_empty() {
        anyhow::bail!("{}", failed.join("; "));
    }
    Ok(())
}

/// What GC freed, said as such: data no image uses any more, not an
/// image's (the images still there keep theirs).
fn freed(report: &kiln_store::GcReport) -> String {
    if report.removed.is_empty() {
        return String::new();
    }
    let blobs = if report.removed.len() == 1 {
        "blob"
    } else {
        "blobs"
    };
    format!(
        "Freed {} in {} {blobs} no image uses\n",
        human_size(report.freed_bytes),
        report.removed.len()
    )
}

#[derive(Args)]
pub struct ImagePruneArgs {
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
    /// Every image no container uses, not only the untagged ones
    #[arg(short, long)]
    all: bool,
}

/// `kiln image prune`: removes the untagged images, then what nothing
/// reaches.
pub fn prune_images(root: Option<&Path>, args: ImagePruneArgs) -> anyhow::Result<()> {
    let warning = if args.all {
        "This will remove all images without at least one container associated to them."
    } else {
        "This will remove all dangling images."
    };
    if !args.force && !crate::output::confirm(warning)? {
        return Ok(());
    }
    let engine = kiln_engine::Engine::new(open_store(root)?);
    let (removed, report) = engine.prune_images(args.all)?;
    let mut out = String::new();
    for id in &removed {
        out.push_str(&format!("Deleted: {id}\n"));
    }
    out.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size(report.freed_bytes)
    ));
    print(&out)
}

#[derive(Args)]
pub struct SaveArgs {
    /// The archive to write (default: standard output, unless it is a terminal)
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// oci: an OCI image layout in a tar (layers gzip compressed);
    /// docker: what `docker load` reads
    #[arg(long, value_enum, default_value_t = SaveFormat::Oci)]
    format: SaveFormat,
    /// How layers are compressed in an OCI archive
    #[arg(long, value_enum, default_value_t = SaveCompression::Gzip)]
    compression: SaveCompression,
    /// The images to save
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SaveFormat {
    Oci,
    Docker,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SaveCompression {
    Gzip,
    Zstd,
}

/// `kiln save`: writes through an [`OutputFile`], so a failed save never
/// leaves half an archive under the wanted name and a link planted beside
/// it is never written through.
pub fn save(root: Option<&Path>, args: SaveArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let format = match args.format {
        SaveFormat::Oci => kiln_store::ArchiveFormat::Oci,
        SaveFormat::Docker => kiln_store::ArchiveFormat::Docker,
    };
    let compression = match args.compression {
        SaveCompression::Gzip => kiln_store::LayerCompression::Gzip,
        SaveCompression::Zstd => kiln_store::LayerCompression::Zstd,
    };
    let Some(path) = &args.output else {
        // As docker save: an archive on a terminal is noise, never wanted.
        let stdout = std::io::stdout();
        if std::io::IsTerminal::is_terminal(&stdout) {
            anyhow::bail!(
                "refusing to write an archive to a terminal: use -o FILE or redirect standard output"
            );
        }
        let mut out = std::io::BufWriter::new(stdout.lock());
        kiln_store::save(
            &store,
            &args.names,
            format,
            compression,
            kiln_store::NamedWriter::new("standard output", &mut out),
        )?;
        return std::io::Write::flush(&mut out).context("writing standard output");
    };
    let mut output = OutputFile::create(path)?;
    kiln_store::save(
        &store,
        &args.names,
        format,
        compression,
        kiln_store::NamedWriter::new(path, std::io::BufWriter::new(output.file())),
    )?;
    Ok(output.commit()?)
}

#[derive(Args)]
pub struct LoadArgs {
    /// An OCI archive or docker-archive (default, or `-`: standard input)
    #[arg(short = 'i', long = "input", default_value = "-")]
    input: PathBuf,
}

pub fn load(root: Option<&Path>, args: LoadArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let what = args.input.display().to_string();
    let reader: Box<dyn Read> = if what == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&args.input).with_context(|| format!("opening {what}"))?)
    };
    let names = kiln_store::load(&store, std::io::BufReader::new(reader), &what)?;
    let mut out = String::new();
    for name in names {
        out.push_str(&format!("Loaded image: {name}\n"));
    }
    print(&out)
}

/// `kiln check`: verifies every blob against its digest, that every
/// tagged image has all its blobs, and every snapshot against its layer
/// (a damaged one is discarded: the next RUN or `kiln run` unpacks the
/// layer again). Exit 1 when anything was wrong.
pub fn check(root: Option<&Path>) -> anyhow::Result<bool> {
    let store = open_store(root)?;
    let problems = store.check()?;
    let mut out = String::new();
    for problem in &problems {
        out.push_str(&format!("{}: {}\n", problem.what, problem.error));
    }
    if problems.is_empty() {
        let (blobs, _) = store.blobs().list()?;
        out.push_str(&format!(
            "ok: {} blobs, {} names, {} snapshots\n",
            blobs.len(),
            store.tags()?.len(),
            store.snapshot_count()
        ));
    }
    print(&out)?;
    Ok(problems.is_empty())
}
