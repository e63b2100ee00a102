//! The on-disk store: content-addressed blobs verified on write, image
//! manifests and tags in an OCI image layout that other tools can read,
//! crash-safe writes, a lock shared by concurrent kiln processes, and
//! garbage collection that keeps whatever a tag or cache entry reaches.
//! It knows nothing about Dockerfiles.

pub mod archive;
mod atomic;
pub mod blobs;
pub mod compression;
pub mod digest;
mod error;
pub mod image;
pub mod layer;
pub mod layout;
pub mod lock;
mod owner;
pub mod reference;
pub mod skeleton;
pub mod snapshot;
mod snapshot_check;
pub mod squash;
pub mod store;
mod stored_image;
pub mod tar_headers;

pub use archive::{load, save, ArchiveFormat};
pub use blobs::{BlobWriter, Blobs};
pub use compression::{compress_layer, decompress, Compression, LayerCompression};
pub use digest::Digest;
pub use error::{written_file, NamedWriter, StoreError};
pub use image::{descriptor, import_rootfs, write_image, ImageRecord, RootfsImport};
pub use layer::{contained_path, import_layer, open_layer, Layer};
pub use layout::Layout;
pub use lock::{LockMode, StoreLock};
pub use owner::Sweep;
pub use reference::Reference;
pub use snapshot::{layer_from_upper, Keep};
pub use squash::squash_layers;
pub use store::{GcReport, Problem, Reach, Store, Tag, REF_NAME};
pub use stored_image::StoredImage;
