//! `kiln volume create|ls|inspect|rm|prune`: flags into kiln-engine's
//! volume calls, output as `docker volume` prints it.

use std::path::Path;

use anyhow::Context;
use clap::{Args, Subcommand};
use kiln_engine::{Engine, Volume};

use super::dockerfile::print;
use super::images::open_store;
use crate::template::Template;

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Make a volume (a random name if none is given)
    Create(CreateArgs),
    /// List volumes
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Show volumes as JSON
    Inspect(InspectArgs),
    /// Remove volumes no container uses
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove the anonymous volumes no container uses (-a: every unused one)
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// A label (KEY=VALUE)
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    name: Option<String>,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only the names
    #[arg(short, long)]
    quiet: bool,
    /// Print with a Go template ({{.Name}}, {{.Driver}}, {{.Mountpoint}}, {{.Labels}}, {{json .}}); `table ...` adds a header
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Print with a Go template instead of JSON ({{.Mountpoint}})
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// A volume that is not there is no error
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Every volume no container uses, named ones too
    #[arg(short, long)]
    all: bool,
    /// Do not ask first
    #[arg(short, long)]
    force: bool,
}

pub fn run(root: Option<&Path>, command: VolumeCommand) -> anyhow::Result<()> {
    let engine = Engine::new(open_store(root)?);
    match command {
        VolumeCommand::Create(args) => {
            let labels = args
                .label
                .iter()
                .map(|l| match l.split_once('=') {
                    Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
                    _ => Err(anyhow::anyhow!("--label {l:?}: expected KEY=VALUE")),
                })
                .collect::<anyhow::Result<_>>()?;
            let volume = engine.create_volume(args.name.as_deref(), &labels)?;
            print(&format!("{}\n", volume.name))
        }
        VolumeCommand::Ls(args) => {
            let volumes = engine.volumes()?;
            if args.quiet {
                return print(
                    &volumes
                        .iter()
                        .map(|v| format!("{}\n", v.name))
                        .collect::<String>(),
                );
            }
            let format = args
                .format
                .as_deref()
                .unwrap_or("table {{.Driver}}\t{{.Name}}");
            let template = Template::parse(format).map_err(anyhow::Error::msg)?;
            let rows: Vec<serde_json::Value> = volumes.iter().map(list_row).collect();
            print(&template.render_all(&rows, &column))
        }
        VolumeCommand::Inspect(args) => {
            let volumes = args
                .names
                .iter()
                .map(|name| engine.volume(name))
                .collect::<Result<Vec<_>, _>>()?;
            let rows: Vec<serde_json::Value> =
                volumes.iter().map(kiln_engine::volume_json).collect();
            match args.format {
                Some(format) => {
                    let template = Template::parse(&format).map_err(anyhow::Error::msg)?;
                    print(&template.render_all(&rows, &column))
                }
                None => print(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&rows).context("encoding the volumes")?
                )),
            }
        }
        VolumeCommand::Rm(args) => {
            let mut out = String::new();
            for name in &args.names {
                engine.remove_volume(name, args.force)?;
                out.push_str(&format!("{name}\n"));
            }
            print(&out)
        }
        VolumeCommand::Prune(args) => {
            let warning = if args.all {
                "This will remove all local volumes not used by at least one container."
            } else {
                "This will remove anonymous local volumes not used by at least one container."
            };
            if !args.force && !crate::output::confirm(warning)? {
                return Ok(());
            }
            let mut out = String::from("Deleted Volumes:\n");
            for name in engine.prune_volumes(args.all)? {
                out.push_str(&format!("{name}\n"));
            }
            print(&out)
        }
    }
}

fn column(field: &str) -> Option<&'static str> {
    Some(match field {
        "Driver" => "DRIVER",
        "Name" => "VOLUME NAME",
        "Mountpoint" => "MOUNTPOINT",
        "Labels" => "LABELS",
        "Scope" => "SCOPE",
        _ => return None,
    })
}

/// A row of `volume ls` (docker's fields; labels as `k=v,...`).
fn list_row(volume: &Volume) -> serde_json::Value {
    let labels: Vec<String> = volume
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    serde_json::json!({
        "Driver": "local",
        "Name": volume.name,
        "Mountpoint": volume.mountpoint.display().to_string(),
        "Labels": labels.join(","),
        "Scope": "local",
    })
}
