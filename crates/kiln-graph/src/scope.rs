//! Variables in effect at one line: the stage's ENV (from its config) over
//! the ARGs declared so far, plus the build args and the predefined ones.
//! This is what shell-word expansion sees and what RUN gets as environment.

use std::collections::{BTreeMap, BTreeSet};

use kiln_dockerfile::shell::Env;

use crate::config::ImageConfig;
use crate::platform::Platform;

/// Args Docker passes to RUN without an ARG line, and keeps out of cache
/// keys and history.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Build args with a meaning of their own, never reported as unused.
const SPECIAL_ARGS: [&str; 1] = ["SOURCE_DATE_EPOCH"];

pub fn is_proxy_arg(name: &str) -> bool {
    PROXY_ARGS.contains(&name)
}

/// The automatic platform args, for the build's target and build platforms.
pub fn platform_args(target: &Platform, build: &Platform) -> Vec<(String, String)> {
    let mut args = Vec::with_capacity(8);
    for (prefix, p) in [("TARGET", target), ("BUILD", build)] {
        args.push((format!("{prefix}PLATFORM"), p.to_string()));
        args.push((format!("{prefix}OS"), p.os.clone()));
        args.push((format!("{prefix}ARCH"), p.architecture.clone()));
        args.push((
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        ));
    }
    args
}

/// Whether `name` is a build arg the user may pass without declaring it.
pub fn is_predefined(name: &str) -> bool {
    is_proxy_arg(name) || SPECIAL_ARGS.contains(&name)
}

/// One declared ARG: its name and value (`None` when it has no default and
/// no build arg sets it: then it is unset).
pub type DeclaredArg = (String, Option<String>);

/// The args declared in a stage so far, in declaration order.
#[derive(Clone, Debug, Default)]
pub struct ArgScope {
    declared: Vec<DeclaredArg>,
}

impl ArgScope {
    pub fn declare(&mut self, name: String, value: Option<String>) {
        match self.declared.iter_mut().find(|(n, _)| *n == name) {
            Some(existing) => existing.1 = value,
            None => self.declared.push((name, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&DeclaredArg> {
        self.declared.iter().find(|(n, _)| n == name)
    }

    /// Every declared arg, an unset one with the empty value (as BuildKit
    /// lists them in a RUN's history: `RUN |2 A=1 B= ...`).
    pub fn all_or_empty(&self) -> impl Iterator<Item = (&str, &str)> {
        self.declared
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_deref().unwrap_or("")))
    }

    /// Declared args that have a value.
    pub fn with_values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.declared
            .iter()
            .filter_map(|(n, v)| v.as_deref().map(|v| (n.as_str(), v)))
    }
}

/// Lookup for expansion: ENV wins over ARG, as in Docker.
pub struct Vars<'a> {
    pub config: &'a ImageConfig,
    pub args: &'a ArgScope,
}

impl Env for Vars<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.config
            .env_value(name)
            .or_else(|| self.args.get(name).and_then(|(_, v)| v.as_deref()))
    }
}

/// Lookup for FROM lines: the global (pre-FROM) args and the platform args.
pub struct GlobalVars<'a> {
    pub args: &'a ArgScope,
    pub platform_args: &'a [(String, String)],
}

impl Env for GlobalVars<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        match self.args.get(name) {
            Some((_, value)) => value.as_deref(),
            None => self
                .platform_args
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str()),
        }
    }
}

/// The names declared by ARG anywhere, to warn about build args no one uses.
#[derive(Default)]
pub struct Consumed(pub BTreeSet<String>);

impl Consumed {
    pub fn unused<'a>(
        &self,
        build_args: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a str> + use<'a, '_> {
        build_args
            .keys()
            .map(String::as_str)
            .filter(|name| !self.0.contains(*name) && !is_predefined(name))
    }
}
