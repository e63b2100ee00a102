//! The `kiln` binary: argument parsing (clap) and rendering of results and
//! errors. Logic lives in the library crates; each subcommand here reads its
//! inputs, calls them, and prints.

mod commands;
#[cfg(test)]
mod conformance;
mod output;
mod template;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build container images from Dockerfiles"
)]
struct Cli {
    /// The store directory (default: $KILN_ROOT, /var/lib/kiln for root, else ~/.local/share/kiln)
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile
    Build(commands::build::BuildArgs),
    /// Run a command in a new container from an image
    Run(commands::containers::RunArgs),
    /// List containers
    Ps(commands::containers::PsArgs),
    /// Start a stopped container again
    Start(commands::containers::StartArgs),
    /// Stop running containers (SIGTERM, then SIGKILL)
    Stop(commands::containers::StopArgs),
    /// Remove containers
    Rm(commands::containers::RmArgs),
    /// Print a container's output
    Logs(commands::containers::LogsArgs),
    /// Run a command in a running container
    Exec(commands::containers::ExecArgs),
    /// Copy files between a container and the host
    Cp(commands::containers::CpArgs),
    /// Make an image of a container's changes
    Commit(commands::containers::CommitArgs),
    /// Send a signal to running containers (SIGKILL unless -s)
    Kill(commands::containers::KillArgs),
    /// Give a container a new name
    Rename(commands::containers::RenameArgs),
    /// Show what running containers use (CPU, memory, network, disk, pids)
    Stats(commands::containers::StatsArgs),
    /// Change containers' limits and restart policy
    Update(commands::containers::UpdateArgs),
    /// Show a running container's processes
    Top(commands::containers::ContainerArg),
    /// Show what a container changed over its image
    Diff(commands::containers::ContainerArg),
    /// Freeze every process of running containers
    Pause(commands::containers::NamesArgs),
    /// Write a container's files as a tar
    Export(commands::containers::ExportArgs),
    /// Thaw paused containers
    Unpause(commands::containers::NamesArgs),
    /// Wait until containers stop; print their exit codes
    Wait(commands::containers::NamesArgs),
    /// Stop containers, then start them again
    Restart(commands::containers::StopArgs),
    /// Runs a container in the background (for run -d and start)
    #[command(name = "__monitor", hide = true)]
    Monitor(commands::containers::MonitorArgs),
    /// Parse a Dockerfile and print its syntax tree
    Parse(commands::parse::ParseArgs),
    /// Plan a build without running it: stages, steps and dependencies
    Plan(commands::plan::PlanArgs),
    /// Make a base image from a root filesystem tarball
    Import(commands::images::ImportArgs),
    /// List the images in the store
    Images(commands::images::ImagesArgs),
    /// Show images or containers as JSON
    Inspect(commands::images::InspectArgs),
    /// Show the steps that made an image
    History(commands::images::HistoryArgs),
    /// Pull an image from a registry into the store
    Pull(commands::registry::PullArgs),
    /// Push an image of the store to a registry
    Push(commands::registry::PushArgs),
    /// Log in to a registry (the login is shared with docker)
    Login(commands::registry::LoginArgs),
    /// Log out from a registry
    Logout(commands::registry::LogoutArgs),
    /// Give an image another name
    Tag(commands::images::TagArgs),
    /// Remove image names, and the data no other name uses
    Rmi(commands::images::RmiArgs),
    /// Write images to an OCI archive or docker-archive
    Save(commands::images::SaveArgs),
    /// Read images from an OCI archive or docker-archive
    Load(commands::images::LoadArgs),
    /// Delete data no image uses and leftovers of interrupted builds
    Prune(commands::cache::PruneArgs),
    /// Look into the build cache
    #[command(subcommand)]
    Cache(commands::cache::CacheCommand),
    /// Verify every blob and that every image is complete
    Check,
    /// Measure the build cache over a project's history
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Writes kiln's man pages (kiln.1, kiln-build.1, ...) into DIR (for
    /// scripts/install.sh)
    #[command(name = "__man-pages", hide = true)]
    ManPages { dir: std::path::PathBuf },
    /// Print kiln's version
    Version,
    /// Show the store, what it holds, and what this machine supports
    Info,
    /// Manage images (as `docker image`)
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage containers (as `docker container`)
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Serve the Docker Engine API, for the docker CLI and SDKs (DOCKER_HOST=unix:///run/kiln.sock)
    Serve(commands::serve::ServeArgs),
    /// Manage named volumes (as `docker volume`)
    #[command(subcommand)]
    Volume(commands::volumes::VolumeCommand),
    /// The store as a whole: disk use, pruning, information (as `docker system`)
    #[command(subcommand)]
    System(SystemCommand),
    /// Commands a Docker user will type that kiln does not have (yet):
    /// they say so, rather than clap suggesting a similar one (`ps` for
    /// `top`, `completion` for `compose`).
    #[command(name = "attach", hide = true)]
    Attach(Planned),
    #[command(name = "port", hide = true)]
    Port(Planned),
    #[command(name = "create", hide = true)]
    Create(Planned),
    #[command(name = "events", hide = true)]
    Events(Planned),
    #[command(name = "network", hide = true)]
    Network(Planned),
    #[command(name = "compose", hide = true)]
    Compose(Planned),
    #[command(name = "search", hide = true)]
    Search(Planned),
    #[command(name = "manifest", hide = true)]
    Manifest(Planned),
    #[command(name = "buildx", hide = true)]
    Buildx(Planned),
    #[command(name = "builder", hide = true)]
    Builder(Planned),
    // What only a group spells (`image prune`, `container inspect`,
    // `system df`): reached through [`Command::ungrouped`].
    #[command(skip)]
    ImagePrune(commands::images::ImagePruneArgs),
    #[command(skip)]
    ContainerPrune(commands::containers::ContainerPruneArgs),
    #[command(skip)]
    SystemDf,
    #[command(skip)]
    SystemPrune(commands::containers::ContainerPruneArgs),
}

/// `kiln image ...`: the image commands under docker's group names.
#[derive(Subcommand)]
enum ImageCommand {
    /// List images
    #[command(visible_alias = "list")]
    Ls(commands::images::ImagesArgs),
    /// Remove images
    #[command(visible_alias = "remove")]
    Rm(commands::images::RmiArgs),
    /// Show images or containers as JSON
    Inspect(commands::images::InspectArgs),
    /// Remove untagged images, then the data nothing uses
    Prune(commands::images::ImagePruneArgs),
    /// Show the steps that made an image
    History(commands::images::HistoryArgs),
    /// Give an image another name
    Tag(commands::images::TagArgs),
    /// Write images to an OCI archive or docker-archive
    Save(commands::images::SaveArgs),
    /// Read images from an OCI archive or docker-archive
    Load(commands::images::LoadArgs),
    /// Make a base image from a root filesystem tarball
    Import(commands::images::ImportArgs),
    /// Pull an image from a registry into the store
    Pull(commands::registry::PullArgs),
    /// Push an image of the store to a registry
    Push(commands::registry::PushArgs),
}

/// `kiln container ...`: the container commands under docker's group names.
// Made once per process and moved into the command it names: the size of
// `run`'s flags costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum ContainerCommand {
    /// List containers
    #[command(visible_aliases = ["list", "ps"])]
    Ls(commands::containers::PsArgs),
    /// Run a command in a new container from an image
    Run(commands::containers::RunArgs),
    /// Remove containers
    #[command(visible_alias = "remove")]
    Rm(commands::containers::RmArgs),
    /// Stop running containers (SIGTERM, then SIGKILL)
    Stop(commands::containers::StopArgs),
    /// Start a stopped container again
    Start(commands::containers::StartArgs),
    /// Print a container's output
    Logs(commands::containers::LogsArgs),
    /// Run a command in a running container
    Exec(commands::containers::ExecArgs),
    /// Copy files between a container and the host
    Cp(commands::containers::CpArgs),
    /// Make an image of a container's changes
    Commit(commands::containers::CommitArgs),
    /// Send a signal to running containers (SIGKILL unless -s)
    Kill(commands::containers::KillArgs),
    /// Give a container a new name
    Rename(commands::containers::RenameArgs),
    /// Show what running containers use (CPU, memory, network, disk, pids)
    Stats(commands::containers::StatsArgs),
    /// Change containers' limits and restart policy
    Update(commands::containers::UpdateArgs),
    /// Show a running container's processes
    Top(commands::containers::ContainerArg),
    /// Show what a container changed over its image
    Diff(commands::containers::ContainerArg),
    /// Freeze every process of running containers
    Pause(commands::containers::NamesArgs),
    /// Write a container's files as a tar
    Export(commands::containers::ExportArgs),
    /// Thaw paused containers
    Unpause(commands::containers::NamesArgs),
    /// Wait until containers stop; print their exit codes
    Wait(commands::containers::NamesArgs),
    /// Stop containers, then start them again
    Restart(commands::containers::StopArgs),
    /// Show containers as JSON
    Inspect(commands::images::InspectArgs),
    /// Remove every stopped container
    Prune(commands::containers::ContainerPruneArgs),
}

/// `kiln system ...`.
#[derive(Subcommand)]
enum SystemCommand {
    /// Show how much disk images, containers and the build cache use
    Df,
    /// Remove stopped containers, untagged images and the data nothing uses
    Prune(commands::containers::ContainerPruneArgs),
    /// Show the store, what it holds, and what this machine supports
    Info,
}

impl Command {
    /// A grouped command (`image ls`) as the top-level one it spells
    /// differently (`images`), so each has one implementation.
    fn ungrouped(self) -> Command {
        match self {
            Command::Image(command) => match command {
                ImageCommand::Ls(args) => Command::Images(args),
                ImageCommand::Rm(args) => Command::Rmi(args),
                ImageCommand::Inspect(mut args) => {
                    args.kind = Some(commands::images::InspectType::Image);
                    Command::Inspect(args)
                }
                ImageCommand::Prune(args) => Command::ImagePrune(args),
                ImageCommand::History(args) => Command::History(args),
                ImageCommand::Tag(args) => Command::Tag(args),
                ImageCommand::Save(args) => Command::Save(args),
                ImageCommand::Load(args) => Command::Load(args),
                ImageCommand::Import(args) => Command::Import(args),
                ImageCommand::Pull(args) => Command::Pull(args),
                ImageCommand::Push(args) => Command::Push(args),
            },
            Command::Container(command) => match command {
                ContainerCommand::Ls(args) => Command::Ps(args),
                ContainerCommand::Run(args) => Command::Run(args),
                ContainerCommand::Rm(args) => Command::Rm(args),
                ContainerCommand::Stop(args) => Command::Stop(args),
                ContainerCommand::Start(args) => Command::Start(args),
                ContainerCommand::Logs(args) => Command::Logs(args),
                ContainerCommand::Exec(args) => Command::Exec(args),
                ContainerCommand::Cp(args) => Command::Cp(args),
                ContainerCommand::Commit(args) => Command::Commit(args),
                ContainerCommand::Kill(args) => Command::Kill(args),
                ContainerCommand::Pause(args) => Command::Pause(args),
                ContainerCommand::Rename(args) => Command::Rename(args),
                ContainerCommand::Stats(args) => Command::Stats(args),
                ContainerCommand::Update(args) => Command::Update(args),
                ContainerCommand::Top(args) => Command::Top(args),
                ContainerCommand::Diff(args) => Command::Diff(args),
                ContainerCommand::Export(args) => Command::Export(args),
                ContainerCommand::Unpause(args) => Command::Unpause(args),
                ContainerCommand::Wait(args) => Command::Wait(args),
                ContainerCommand::Restart(args) => Command::Restart(args),
                ContainerCommand::Inspect(mut args) => {
                    args.kind = Some(commands::images::InspectType::Container);
                    Command::Inspect(args)
                }
                ContainerCommand::Prune(args) => Command::ContainerPrune(args),
            },
            Command::System(command) => match command {
                SystemCommand::Df => Command::SystemDf,
                SystemCommand::Prune(args) => Command::SystemPrune(args),
                SystemCommand::Info => Command::Info,
            },
            other => other,
        }
    }
}

/// kiln's commands as a user sees them: hidden ones (internal, or planned
/// and absent) are not offered by completions or man pages.
fn visible_command() -> clap::Command {
    let full = <Cli as clap::CommandFactory>::command();
    clap::Command::new("kiln")
        .about(full.get_about().cloned().unwrap_or_default())
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned())
}

/// Whatever a planned command was given.
#[derive(clap::Args)]
struct Planned {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

/// What a planned command will come with.
fn not_yet(command: &str, with: &str) -> anyhow::Result<ExitCode> {
    match with.strip_prefix("nothing") {
        Some(instead) => anyhow::bail!("kiln has no {command} command{instead}"),
        None => anyhow::bail!("kiln {command} is not implemented yet ({with})"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = cli.root.as_deref();
    match dispatch(root, cli.command) {
        Ok(code) => code,
        Err(error) => {
            output::report!("error: {}", output::render_error(&error));
            ExitCode::FAILURE
        }
    }
}

fn dispatch(root: Option<&std::path::Path>, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        grouped @ (Command::Image(_) | Command::Container(_) | Command::System(_)) => {
            dispatch(root, grouped.ungrouped())
        }
        Command::Build(args) => commands::build::run(root, args),
        Command::Run(args) => commands::containers::run(root, args),
        Command::Ps(args) => commands::containers::ps(root, args).map(|()| ExitCode::SUCCESS),
        Command::Start(args) => commands::containers::start(root, args),
        Command::Stop(args) => commands::containers::stop(root, args).map(|()| ExitCode::SUCCESS),
        Command::Rm(args) => commands::containers::rm(root, args).map(|()| ExitCode::SUCCESS),
        Command::Logs(args) => commands::containers::logs(root, args).map(|()| ExitCode::SUCCESS),
        Command::Exec(args) => commands::containers::exec(root, args),
        Command::Cp(args) => commands::containers::cp(root, args).map(|()| ExitCode::SUCCESS),
        Command::Commit(args) => {
            commands::containers::commit(root, args).map(|()| ExitCode::SUCCESS)
        }
        Command::Kill(args) => commands::containers::kill(root, args).map(|()| ExitCode::SUCCESS),
        Command::Export(args) => {
            commands::containers::export(root, args).map(|()| ExitCode::SUCCESS)
        }
        Command::Stats(args) => commands::containers::stats(root, args).map(|()| ExitCode::SUCCESS),
        Command::Update(args) => {
            commands::containers::update(root, args).map(|()| ExitCode::SUCCESS)
        }
        Command::Top(args) => commands::containers::top(root, args).map(|()| ExitCode::SUCCESS),
        Command::Diff(args) => commands::containers::diff(root, args).map(|()| ExitCode::SUCCESS),
        Command::Rename(args) => {
            commands::containers::rename(root, args).map(|()| ExitCode::SUCCESS)
        }
        Command::Pause(args) => {
            commands::containers::pause(root, args, true).map(|()| ExitCode::SUCCESS)
        }
        Command::Unpause(args) => {
            commands::containers::pause(root, args, false).map(|()| ExitCode::SUCCESS)
        }
        Command::Wait(args) => commands::containers::wait(root, args).map(|()| ExitCode::SUCCESS),
        Command::Restart(args) => {
            commands::containers::restart(root, args).map(|()| ExitCode::SUCCESS)
        }
        Command::Monitor(args) => commands::containers::monitor_command(root, args),
        Command::Parse(args) => commands::parse::run(args),
        Command::Plan(args) => commands::plan::run(args),
        Command::Import(args) => commands::images::import(root, args).map(|()| ExitCode::SUCCESS),
        Command::Images(args) => commands::images::list(root, args).map(|()| ExitCode::SUCCESS),
        Command::Inspect(args) => commands::images::inspect(root, args).map(|()| ExitCode::SUCCESS),
        Command::History(args) => commands::images::history(root, args).map(|()| ExitCode::SUCCESS),
        Command::Tag(args) => commands::images::tag(root, args).map(|()| ExitCode::SUCCESS),
        Command::Rmi(args) => commands::images::remove(root, args).map(|()| ExitCode::SUCCESS),
        Command::Save(args) => commands::images::save(root, args).map(|()| ExitCode::SUCCESS),
        Command::Load(args) => commands::images::load(root, args).map(|()| ExitCode::SUCCESS),
        Command::Prune(args) => commands::cache::prune(root, args).map(|()| ExitCode::SUCCESS),
        Command::Cache(command) => commands::cache::run(root, command).map(|()| ExitCode::SUCCESS),
        Command::Completion { shell } => {
            // Written to memory first, as clap_complete panics on a closed
            // stdout.
            let mut command = visible_command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "kiln", &mut script);
            commands::dockerfile::print(&String::from_utf8_lossy(&script))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::ManPages { dir } => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_mangen::generate_to(visible_command(), &dir))
            .map_err(|e| anyhow::anyhow!("writing man pages into {}: {e}", dir.display()))
            .map(|()| ExitCode::SUCCESS),
        Command::Version => {
            commands::dockerfile::print(&format!("kiln version {}\n", env!("CARGO_PKG_VERSION")))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Pull(args) => commands::registry::pull(root, args).map(|()| ExitCode::SUCCESS),
        Command::Push(args) => commands::registry::push(root, args).map(|()| ExitCode::SUCCESS),
        Command::Login(args) => commands::registry::login(args).map(|()| ExitCode::SUCCESS),
        Command::Logout(args) => commands::registry::logout(args).map(|()| ExitCode::SUCCESS),
        Command::Info => commands::system::info(root).map(|()| ExitCode::SUCCESS),
        Command::ImagePrune(args) => {
            commands::images::prune_images(root, args).map(|()| ExitCode::SUCCESS)
        }
        Command::ContainerPrune(args) => {
            commands::containers::prune(root, args).map(|()| ExitCode::SUCCESS)
        }
        Command::SystemDf => commands::system::df(root).map(|()| ExitCode::SUCCESS),
        Command::Volume(command) => {
            commands::volumes::run(root, command).map(|()| ExitCode::SUCCESS)
        }
        Command::SystemPrune(args) => {
            commands::system::prune(root, args).map(|()| ExitCode::SUCCESS)
        }
        Command::Serve(args) => commands::serve::run(root, args).map(|()| ExitCode::SUCCESS),
        Command::Attach(_) => not_yet("attach", "docker attach: a detached container's terminal"),
        Command::Port(_) => not_yet("port", "published ports come with the daemon's networks"),
        Command::Create(_) => not_yet("create", "docker create: a container made but not started"),
        Command::Events(_) => not_yet("events", "the daemon's event stream"),
        Command::Network(_) => not_yet("network", "the daemon's networks"),
        Command::Compose(_) => not_yet(
            "compose",
            "docker compose will drive kiln serve, the daemon",
        ),
        Command::Search(_) => not_yet(
            "search",
            "nothing: kiln talks to registries by name (kiln pull), not to Docker Hub's search",
        ),
        Command::Manifest(_) => not_yet("manifest", "multi-platform images"),
        Command::Buildx(_) => not_yet(
            "buildx",
            "nothing: kiln build takes buildx's build flags itself",
        ),
        Command::Builder(_) => not_yet(
            "builder",
            "nothing: kiln prune is docker builder prune, kiln cache du is buildx du",
        ),
        Command::Bench(command) => commands::bench::run(root, command),
        Command::Check => commands::images::check(root).map(|clean| {
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
    }
}
