//! Every byte corekv reads from or writes to disk goes through this module.
//!
//! It owns: the [`Disk`] seam (the narrow interface the engine is generic over),
//! its production implementation on glommio O_DIRECT files ([`DmaDisk`]), a
//! blocking one for backups' helper threads and the CLI ([`std_disk::StdDisk`]),
//! the simulated one ([`sim_disk::SimDisk`]), the WAL
//! writer and reader, and the data-directory metadata file.
//!
//! It must never: know about shards' state machines, the network, or keys'
//! meaning; retry a failed write or fdatasync (a failure is reported once and the
//! caller latches it); or hand back bytes whose checksum failed.

pub mod backup_files;
pub mod data_dir;
pub mod disk;
pub mod disk_space;
pub mod dma_disk;
pub mod error;
pub mod manifest;
pub mod sim_disk;
pub mod std_disk;
pub mod table_file;
pub mod tls_files;
pub mod users_file;
pub mod wal_reader;
pub mod wal_writer;

pub use disk::{Disk, DiskFile, IoBuf, OpenMode};
pub use dma_disk::DmaDisk;
pub use error::{IoError, IoOp};
