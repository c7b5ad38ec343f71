//! A simulated disk for tests: in memory, seeded, and able to lose power.
//!
//! Fault model (what [`SimDisk::power_loss`] and the fault plan can do):
//! - Each file keeps the bytes made durable by its last successful `fdatasync`
//!   apart from the writes issued since. At a power loss every unsynced write
//!   independently survives whole, is lost, or is torn at a random 512-byte
//!   boundary (its first part survives); surviving writes land in any order, so
//!   a later write does not imply an earlier one.
//! - Names (create, rename, remove) are durable only after `sync_dir` of their
//!   directory; at a power loss a directory reverts to its last synced listing.
//!   File *contents* are tied to the file, not the name: a synced file renamed
//!   but not dir-synced comes back under its old name.
//! - The fault plan fails the n-th operation of a kind (read, write, fdatasync)
//!   with EIO, or a write with ENOSPC, or an fallocate with EOPNOTSUPP (a file
//!   system without fallocate), once or for every later operation too;
//!   a failed write may still have reached the disk partially (it is recorded
//!   as an unsynced write torn at a 512-byte boundary).
//! - After [`SimDisk::crash`] every operation fails, as if the process died:
//!   nothing more reaches the disk.
//!
//! Everything is deterministic for a given seed. It must never: make a write
//! durable without an fdatasync of its file, or a name durable without a
//! `sync_dir` of its directory.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rand::{Rng, SeedableRng};

use super::disk::{Disk, DiskFile, IoBuf, IoResult, OpenMode};
use super::error::{IoError, IoOp};

const TEAR_UNIT: usize = 512;
const ALIGN: usize = crate::core::limits::SECTOR_BYTES;

/// Which operations a fault applies to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    ReadEio,
    WriteEio,
    WriteEnospc,
    SyncEio,
    /// fallocate answers EOPNOTSUPP (FUSE, some network file systems).
    AllocateUnsupported,
}

impl FaultKind {
    /// Which operation counter the fault counts.
    fn slot(self) -> usize {
        match self {
            FaultKind::ReadEio => 0,
            FaultKind::WriteEio | FaultKind::WriteEnospc => 1,
            FaultKind::SyncEio => 2,
            FaultKind::AllocateUnsupported => 3,
        }
    }
}

/// Fail the `nth` (1-based) operation of `kind`; `sticky`: and every later one.
#[derive(Copy, Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    pub nth: u64,
    pub sticky: bool,
}

#[derive(Default, Clone)]
struct Inode {
    durable: Vec<u8>,
    /// Writes since the last fdatasync, in issue order.
    unsynced: Vec<(u64, Vec<u8>)>,
}

impl Inode {
    fn visible(&self) -> Vec<u8> {
        let mut v = self.durable.clone();
        for (off, bytes) in &self.unsynced {
            apply(&mut v, *off, bytes);
        }
        v
    }
}

fn apply(v: &mut Vec<u8>, off: u64, bytes: &[u8]) {
    let end = off as usize + bytes.len();
    if v.len() < end {
        v.resize(end, 0);
    }
    v[off as usize..end].copy_from_slice(bytes);
}

struct State {
    rng: rand::rngs::StdRng,
    inodes: Vec<Inode>,
    names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    dirs: std::collections::BTreeSet<PathBuf>,
    crashed: bool,
    faults: Vec<Fault>,
    counts: [u64; 4],
    /// Operations performed (every kind), for crash-point sweeps.
    ops: u64,
    /// The process dies when this many operations have been performed.
    crash_at: Option<u64>,
    /// Every operation first yields once to the executor, so that a
    /// deterministic scheduler can complete concurrent operations in any order.
    interleave: bool,
}

/// The simulated disk. Clones share one state.
#[derive(Clone)]
pub struct SimDisk {
    st: Rc<RefCell<State>>,
}

fn eio(op: IoOp, path: &Path, errno: i32) -> IoError {
    IoError::new(op, path, None, std::io::Error::from_raw_os_error(errno))
}

impl SimDisk {
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            st: Rc::new(RefCell::new(State {
                rng: rand::rngs::StdRng::seed_from_u64(seed),
                inodes: Vec::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: Default::default(),
                crashed: false,
                faults: Vec::new(),
                counts: [0; 4],
                ops: 0,
                crash_at: None,
                interleave: false,
            })),
        }
    }

    /// Make every operation yield to the executor once before it takes effect
    /// (for the deterministic shard simulation: I/O completes in the order the
    /// scheduler picks).
    pub fn set_interleave(&self, on: bool) {
        self.st.borrow_mut().interleave = on;
    }

    async fn turn(&self) {
        let interleave = self.st.borrow().interleave;
        if interleave {
            futures_lite::future::yield_now().await;
        }
    }

    pub fn add_fault(&self, f: Fault) {
        self.st.borrow_mut().faults.push(f);
    }

    /// Operations performed so far.
    pub fn ops(&self) -> u64 {
        self.st.borrow().ops
    }

    /// Operations of `kind` performed so far (to aim a fault at a later one).
    pub fn op_count(&self, kind: FaultKind) -> u64 {
        self.st.borrow().counts[kind.slot()]
    }

    /// Reads performed so far (to aim a read fault at a later read).
    pub fn reads(&self) -> u64 {
        self.st.borrow().counts[0]
    }

    /// The process died but the machine did not lose power: everything
    /// written so far stays (the OS still holds it), names too. Clears faults.
    pub fn power_loss_keeping_writes(&self) {
        let mut st = self.st.borrow_mut();
        for inode in st.inodes.iter_mut() {
            for (off, bytes) in std::mem::take(&mut inode.unsynced) {
                apply(&mut inode.durable, off, &bytes);
            }
        }
        st.durable_names = st.names.clone();
        st.crashed = false;
        st.crash_at = None;
        st.faults.clear();
    }

    /// The process dies: every later operation fails.
    pub fn crash(&self) {
        self.st.borrow_mut().crashed = true;
    }

    /// The process dies just before operation number `n + 1` (every operation
    /// from then on fails), wherever that falls.
    pub fn crash_after(&self, n: u64) {
        self.st.borrow_mut().crash_at = Some(n);
    }

    /// Power is cut and restored: unsynced writes survive, vanish or tear at
    /// random (seeded), names revert to their last synced state, faults and
    /// the crash flag are cleared.
    pub fn power_loss(&self) {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        for inode in st.inodes.iter_mut() {
            let mut writes = std::mem::take(&mut inode.unsynced);
            // Any order: shuffle, then each survives, tears or is lost.
            for i in (1..writes.len()).rev() {
                let j = st.rng.gen_range(0..=i);
                writes.swap(i, j);
            }
            for (off, bytes) in writes {
                match st.rng.gen_range(0..3) {
                    0 => apply(&mut inode.durable, off, &bytes),
                    1 => {
                        let units = bytes.len() / TEAR_UNIT;
                        let keep = st.rng.gen_range(0..=units) * TEAR_UNIT;
                        apply(&mut inode.durable, off, &bytes[..keep.min(bytes.len())]);
                    }
                    _ => {}
                }
            }
        }
        st.names = st.durable_names.clone();
        st.crashed = false;
        st.crash_at = None;
        st.faults.clear();
    }

    /// Current visible bytes of a file (tests).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.st.borrow();
        st.names.get(path).map(|&i| st.inodes[i].visible())
    }

    /// Overwrite bytes of a file as if the medium changed them (bit rot,
    /// misdirected writes), durably.
    pub fn corrupt(&self, path: &Path, offset: u64, bytes: &[u8]) {
        let mut st = self.st.borrow_mut();
        if let Some(&i) = st.names.get(path) {
            let inode = &mut st.inodes[i];
            apply(&mut inode.durable, offset, bytes);
            for (off, w) in inode.unsynced.iter_mut() {
                // Keep the corruption visible over pending writes too.
                let (a, b) = (*off, *off + w.len() as u64);
                let (c, d) = (offset, offset + bytes.len() as u64);
                if a < d && c < b {
                    let lo = a.max(c);
                    let hi = b.min(d);
                    w[(lo - a) as usize..(hi - a) as usize]
                        .copy_from_slice(&bytes[(lo - c) as usize..(hi - c) as usize]);
                }
            }
        }
    }

    /// Count an operation and decide whether it fails.
    fn check(&self, op: IoOp, path: &Path) -> IoResult<()> {
        let mut st = self.st.borrow_mut();
        st.ops += 1;
        if st.crash_at.is_some_and(|n| st.ops > n) {
            st.crashed = true;
        }
        if st.crashed {
            return Err(eio(op, path, libc::EIO));
        }
        let slot = match op {
            IoOp::Read => Some(0),
            IoOp::Write => Some(1),
            IoOp::Sync => Some(2),
            IoOp::Allocate => Some(3),
            _ => None,
        };
        let Some(slot) = slot else { return Ok(()) };
        st.counts[slot] += 1;
        let n = st.counts[slot];
        for f in &st.faults {
            if f.kind.slot() == slot && (n == f.nth || (f.sticky && n > f.nth)) {
                let errno = match f.kind {
                    FaultKind::WriteEnospc => libc::ENOSPC,
                    FaultKind::AllocateUnsupported => libc::EOPNOTSUPP,
                    _ => libc::EIO,
                };
                return Err(eio(op, path, errno));
            }
        }
        Ok(())
    }

    fn parent(path: &Path) -> PathBuf {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

/// A buffer for [`SimFile`]: plain memory; alignment is checked on use.
pub struct SimBuf(Vec<u8>);

impl AsRef<[u8]> for SimBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for SimBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl IoBuf for SimBuf {}

pub struct SimFile {
    disk: SimDisk,
    path: PathBuf,
    inode: usize,
    writable: bool,
}

impl Disk for SimDisk {
    type File = SimFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> IoResult<SimFile> {
        self.turn().await;
        self.check(IoOp::Open, path)?;
        let mut st = self.st.borrow_mut();
        let inode = match (mode, st.names.get(path).copied()) {
            (OpenMode::CreateNew, Some(_)) => return Err(eio(IoOp::Open, path, libc::EEXIST)),
            (OpenMode::CreateNew, None) => {
                if !st.dirs.contains(&Self::parent(path)) {
                    return Err(eio(IoOp::Open, path, libc::ENOENT));
                }
                st.inodes.push(Inode::default());
                let i = st.inodes.len() - 1;
                st.names.insert(path.to_path_buf(), i);
                i
            }
            (_, Some(i)) => i,
            (_, None) => return Err(eio(IoOp::Open, path, libc::ENOENT)),
        };
        Ok(SimFile {
            disk: self.clone(),
            path: path.to_path_buf(),
            inode,
            writable: mode != OpenMode::ReadOnly,
        })
    }

    async fn remove(&self, path: &Path) -> IoResult<()> {
        self.turn().await;
        self.check(IoOp::Remove, path)?;
        match self.st.borrow_mut().names.remove(path) {
            Some(_) => Ok(()),
            None => Err(eio(IoOp::Remove, path, libc::ENOENT)),
        }
    }

    async fn rename(&self, from: &Path, to: &Path) -> IoResult<()> {
        self.turn().await;
        self.check(IoOp::Rename, from)?;
        let mut st = self.st.borrow_mut();
        match st.names.remove(from) {
            Some(i) => {
                st.names.insert(to.to_path_buf(), i);
                Ok(())
            }
            None => Err(eio(IoOp::Rename, from, libc::ENOENT)),
        }
    }

    async fn sync_dir(&self, dir: &Path) -> IoResult<()> {
        self.turn().await;
        self.check(IoOp::SyncDir, dir)?;
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        st.durable_names.retain(|p, _| Self::parent(p) != dir);
        for (p, i) in &st.names {
            if Self::parent(p) == dir {
                st.durable_names.insert(p.clone(), *i);
            }
        }
        Ok(())
    }

    async fn create_dir_all(&self, dir: &Path) -> IoResult<()> {
        self.turn().await;
        self.check(IoOp::CreateDir, dir)?;
        // Directories themselves are assumed durable (created at setup).
        let mut st = self.st.borrow_mut();
        let mut d = Some(dir);
        while let Some(p) = d {
            st.dirs.insert(p.to_path_buf());
            d = p.parent();
        }
        Ok(())
    }

    async fn list_dir(&self, dir: &Path) -> IoResult<Vec<String>> {
        self.turn().await;
        self.check(IoOp::ListDir, dir)?;
        let st = self.st.borrow();
        if !st.dirs.contains(dir) {
            return Err(eio(IoOp::ListDir, dir, libc::ENOENT));
        }
        Ok(st
            .names
            .keys()
            .filter(|p| Self::parent(p) == dir)
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    async fn hard_link(&self, src: &Path, dst: &Path) -> IoResult<()> {
        self.turn().await;
        self.check(IoOp::Link, dst)?;
        let mut st = self.st.borrow_mut();
        let Some(&inode) = st.names.get(src) else {
            return Err(eio(IoOp::Link, src, libc::ENOENT));
        };
        if st.names.contains_key(dst) {
            return Err(eio(IoOp::Link, dst, libc::EEXIST));
        }
        if !st.dirs.contains(&Self::parent(dst)) {
            return Err(eio(IoOp::Link, dst, libc::ENOENT));
        }
        // The new name shares the inode: contents, synced or not, are one.
        st.names.insert(dst.to_path_buf(), inode);
        Ok(())
    }
}

impl DiskFile for SimFile {
    type Buf = SimBuf;
    type ReadBuf = Vec<u8>;

    fn path(&self) -> &Path {
        &self.path
    }

    fn alignment(&self) -> usize {
        ALIGN
    }

    fn alloc_buf(&self, len: usize) -> SimBuf {
        SimBuf(vec![0; len])
    }

    async fn write_at(&self, buf: SimBuf, offset: u64) -> IoResult<()> {
        self.disk.turn().await;
        assert!(self.writable, "write to a read-only file");
        assert!(
            offset % ALIGN as u64 == 0 && buf.0.len() % ALIGN == 0,
            "unaligned O_DIRECT write at {offset} of {} bytes",
            buf.0.len()
        );
        if let Err(e) = self.disk.check(IoOp::Write, &self.path) {
            // A failed write may still have put a prefix on the medium.
            let mut st = self.disk.st.borrow_mut();
            if !st.crashed {
                let units = buf.0.len() / TEAR_UNIT;
                let keep = st.rng.gen_range(0..=units) * TEAR_UNIT;
                st.inodes[self.inode]
                    .unsynced
                    .push((offset, buf.0[..keep].to_vec()));
            }
            return Err(IoError::new(
                IoOp::Write,
                &self.path,
                Some(offset),
                e.source,
            ));
        }
        self.disk.st.borrow_mut().inodes[self.inode]
            .unsynced
            .push((offset, buf.0));
        Ok(())
    }

    async fn read_at(&self, offset: u64, len: usize) -> IoResult<Vec<u8>> {
        self.disk.turn().await;
        assert!(
            offset % ALIGN as u64 == 0 && len % ALIGN == 0,
            "unaligned O_DIRECT read"
        );
        self.disk
            .check(IoOp::Read, &self.path)
            .map_err(|e| IoError::new(IoOp::Read, &self.path, Some(offset), e.source))?;
        let v = self.disk.st.borrow().inodes[self.inode].visible();
        let start = (offset as usize).min(v.len());
        let end = (offset as usize + len).min(v.len());
        Ok(v[start..end].to_vec())
    }

    async fn fdatasync(&self) -> IoResult<()> {
        self.disk.turn().await;
        self.disk.check(IoOp::Sync, &self.path)?;
        let mut st = self.disk.st.borrow_mut();
        let inode = &mut st.inodes[self.inode];
        for (off, bytes) in std::mem::take(&mut inode.unsynced) {
            apply(&mut inode.durable, off, &bytes);
        }
        Ok(())
    }

    async fn allocate(&self, len: u64) -> IoResult<()> {
        self.disk.turn().await;
        self.disk.check(IoOp::Allocate, &self.path)?;
        let mut st = self.disk.st.borrow_mut();
        let inode = &mut st.inodes[self.inode];
        // Allocation extends with zeros, and is metadata: durable with the file.
        if (inode.durable.len() as u64) < len {
            inode.durable.resize(len as usize, 0);
        }
        Ok(())
    }

    async fn size(&self) -> IoResult<u64> {
        self.disk.turn().await;
        self.disk.check(IoOp::Stat, &self.path)?;
        Ok(self.disk.st.borrow().inodes[self.inode].visible().len() as u64)
    }

    async fn truncate(&self, len: u64) -> IoResult<()> {
        self.disk.turn().await;
        self.disk.check(IoOp::Truncate, &self.path)?;
        let mut st = self.disk.st.borrow_mut();
        let inode = &mut st.inodes[self.inode];
        // Treated as synchronous metadata (ext4 journals it). Like
        // ftruncate, a longer length extends the file with zeros.
        let mut v = inode.visible();
        v.resize(len as usize, 0);
        inode.durable = v;
        inode.unsynced.clear();
        Ok(())
    }

    async fn close(self) -> IoResult<()> {
        self.disk.turn().await;
        Ok(())
    }
}
