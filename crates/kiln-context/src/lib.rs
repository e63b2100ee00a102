//! The build context: which files a build may read (`.dockerignore` with
//! Docker's pattern semantics), walking them, and hashing their content.
//! It knows nothing of images.

pub mod dockerignore;
mod error;
pub mod hash;
pub mod root;

pub use dockerignore::{load as load_dockerignore, read_patterns, Ignore, IgnoreError};
pub use error::ContextError;
pub use hash::{hash_file, ContentDigest, HashStats, StatCache};
pub use root::{is_symlink_loop, Root};
