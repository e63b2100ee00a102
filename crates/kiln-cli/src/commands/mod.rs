//! One module per subcommand, plus the Dockerfile loading they share.

pub mod bench;
pub mod build;
pub mod cache;
pub mod containers;
pub mod dockerfile;
pub mod images;
pub mod parse;
pub mod plan;
pub mod progress;
pub mod registry;
pub mod serve;
pub mod system;
pub mod volumes;
