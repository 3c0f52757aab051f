//! The power-cut file system without FUSE: an in-memory tree that keeps,
//! next to what every process sees, what a power cut would leave.
//!
//! The durability model, in two strengths ([`Rules`]):
//! - `fsync` and `fdatasync` of a file make its content durable. Nothing
//!   else does: `sync_file_range`, `close` and `msync` never reach this
//!   file system.
//! - With [`Rules::Ext4`] they also make every current name of the file
//!   durable (a new file, a rename to it, the removal of the name it was
//!   renamed from), as ext4 does. With [`Rules::Posix`] they do not: only
//!   a `fsync` of the directory does, which is all POSIX promises.
//! - `fsync` of a directory makes its whole entry table durable: names
//!   created, removed and renamed in or out of it.
//! - A directory's own name becomes durable only by a `fsync` of its parent
//!   (fsyncing a new directory persists what it holds, not that it exists).
//! - A write through a descriptor opened `O_SYNC`/`O_DSYNC` is a write plus
//!   a `fsync`.
//! - A cut sets every file and directory back to its durable state and
//!   drops whatever is no longer reachable from the root. Permissions and
//!   times are not modelled (they keep their latest value).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

/// Which `fsync` makes a file's names durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Rules {
    /// A `fsync` of the file or of its directory (ext4's behaviour).
    #[default]
    Ext4,
    /// Only a `fsync` of the directory (POSIX's promise).
    Posix,
}

mod pages;
mod power;

pub(crate) use pages::Pages;
pub(crate) use power::{Op, Trigger};

/// An inode number.
pub(crate) type Ino = u64;
/// The mount point's inode.
pub(crate) const ROOT: Ino = 1;

/// Why an operation failed (the FUSE adapter maps these to errno values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Error {
    /// ENOENT.
    NotFound,
    /// EEXIST.
    Exists,
    /// ENOTDIR.
    NotDir,
    /// EISDIR.
    IsDir,
    /// ENOTEMPTY.
    NotEmpty,
    /// EINVAL.
    Invalid,
    /// EIO: the power is off (between a cut's freeze and its revert).
    PoweredOff,
}

/// What a node holds now and what a cut would leave of it.
#[derive(Clone)]
enum Body {
    File { now: Pages, durable: Pages },
    Dir { now: Entries, durable: Entries },
}

type Entries = BTreeMap<OsString, Ino>;

#[derive(Clone)]
struct Node {
    body: Body,
    perm: u16,
    mtime: SystemTime,
}

/// A node's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// What `stat` shows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// File or directory.
    pub kind: Kind,
    /// Length in bytes (entries for a directory).
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    /// Names pointing at it.
    pub nlink: u32,
    /// Last change.
    pub mtime: SystemTime,
}

/// An open file.
struct Handle {
    ino: Ino,
    sync: bool,
}

/// The whole file system.
pub(crate) struct Model {
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    frozen: bool,
    trigger: Option<Trigger>,
    /// Set when the trigger fired (the file system froze itself).
    pub tripped: bool,
    /// Cuts so far.
    pub cuts: u64,
    /// Changing operations so far (what [`Trigger`]s count).
    pub ops: u64,
    /// What makes names durable.
    pub rules: Rules,
}

impl Default for Model {
    fn default() -> Self {
        let root = Node {
            body: Body::Dir {
                now: Entries::new(),
                durable: Entries::new(),
            },
            perm: 0o755,
            mtime: SystemTime::now(),
        };
        Model {
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_fh: 1,
            frozen: false,
            trigger: None,
            tripped: false,
            cuts: 0,
            ops: 0,
            rules: Rules::default(),
        }
    }
}

impl Model {
    fn node(&self, ino: Ino) -> Result<&Node, Error> {
        self.nodes.get(&ino).ok_or(Error::NotFound)
    }

    fn entries(&self, dir: Ino) -> Result<&Entries, Error> {
        match &self.node(dir)?.body {
            Body::Dir { now, .. } => Ok(now),
            Body::File { .. } => Err(Error::NotDir),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> Result<&mut Entries, Error> {
        match &mut self.nodes.get_mut(&dir).ok_or(Error::NotFound)?.body {
            Body::Dir { now, .. } => Ok(now),
            Body::File { .. } => Err(Error::NotDir),
        }
    }

    /// `stat` of `ino`.
    pub(crate) fn getattr(&mut self, ino: Ino) -> Result<Attr, Error> {
        self.gate(None)?;
        self.attr(ino)
    }

    fn attr(&self, ino: Ino) -> Result<Attr, Error> {
        let node = self.node(ino)?;
        let (kind, size, nlink) = match &node.body {
            Body::File { now, .. } => (Kind::File, now.size(), self.links(ino)),
            Body::Dir { now, .. } => (Kind::Dir, now.len() as u64, 2),
        };
        Ok(Attr {
            ino,
            kind,
            size,
            perm: node.perm,
            nlink,
            mtime: node.mtime,
        })
    }

    fn links(&self, ino: Ino) -> u32 {
        let n = self
            .nodes
            .values()
            .filter_map(|n| match &n.body {
                Body::Dir { now, .. } => Some(now.values().filter(|&&i| i == ino).count()),
                Body::File { .. } => None,
            })
            .sum::<usize>();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The node `name` in `parent`.
    pub(crate) fn lookup(&mut self, parent: Ino, name: &OsStr) -> Result<Attr, Error> {
        self.gate(None)?;
        let ino = *self.entries(parent)?.get(name).ok_or(Error::NotFound)?;
        self.attr(ino)
    }

    /// Entries of `dir` (without `.` and `..`).
    pub(crate) fn readdir(&mut self, dir: Ino) -> Result<Vec<(Ino, Kind, OsString)>, Error> {
        self.gate(None)?;
        let entries = self.entries(dir)?;
        Ok(entries
            .iter()
            .filter_map(|(name, &ino)| Some((ino, self.attr(ino).ok()?.kind, name.clone())))
            .collect())
    }

    fn add(&mut self, parent: Ino, name: &OsStr, body: Body, perm: u16) -> Result<Attr, Error> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Error::Exists);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let mtime = SystemTime::now();
        self.nodes.insert(ino, Node { body, perm, mtime });
        self.entries_mut(parent)?.insert(name.to_os_string(), ino);
        self.attr(ino)
    }

    /// A new empty file, opened (`sync` for `O_SYNC`/`O_DSYNC`).
    pub(crate) fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        perm: u16,
        sync: bool,
    ) -> Result<(Attr, u64), Error> {
        self.gate(Some((Op::Create, name)))?;
        let body = Body::File {
            now: Pages::default(),
            durable: Pages::default(),
        };
        let attr = self.add(parent, name, body, perm)?;
        Ok((attr, self.open_handle(attr.ino, sync)))
    }

    /// A new empty directory.
    pub(crate) fn mkdir(&mut self, parent: Ino, name: &OsStr, perm: u16) -> Result<Attr, Error> {
        self.gate(Some((Op::Mkdir, name)))?;
        let body = Body::Dir {
            now: Entries::new(),
            durable: Entries::new(),
        };
        self.add(parent, name, body, perm)
    }

    /// Removes the name `name` (`dir` says which kind it must be).
    pub(crate) fn remove(&mut self, parent: Ino, name: &OsStr, dir: bool) -> Result<(), Error> {
        self.gate(Some((Op::Remove, name)))?;
        let ino = *self.entries(parent)?.get(name).ok_or(Error::NotFound)?;
        match (&self.node(ino)?.body, dir) {
            (Body::Dir { now, .. }, true) if !now.is_empty() => return Err(Error::NotEmpty),
            (Body::Dir { .. }, false) => return Err(Error::IsDir),
            (Body::File { .. }, true) => return Err(Error::NotDir),
            _ => {}
        }
        self.entries_mut(parent)?.remove(name);
        Ok(())
    }

    /// `rename(2)`; `noreplace` for `RENAME_NOREPLACE`.
    pub(crate) fn rename(
        &mut self,
        from: (Ino, &OsStr),
        to: (Ino, &OsStr),
        noreplace: bool,
    ) -> Result<(), Error> {
        self.gate(Some((Op::Rename, from.1)))?;
        let ino = *self.entries(from.0)?.get(from.1).ok_or(Error::NotFound)?;
        if let Some(&target) = self.entries(to.0)?.get(to.1) {
            if noreplace {
                return Err(Error::Exists);
            }
            match (&self.node(ino)?.body, &self.node(target)?.body) {
                (Body::Dir { .. }, Body::Dir { now, .. }) if !now.is_empty() => {
                    return Err(Error::NotEmpty)
                }
                (Body::Dir { .. }, Body::File { .. }) => return Err(Error::NotDir),
                (Body::File { .. }, Body::Dir { .. }) => return Err(Error::IsDir),
                _ => {}
            }
        }
        if ino == to.0 {
            return Err(Error::Invalid);
        }
        self.entries_mut(from.0)?.remove(from.1);
        self.entries_mut(to.0)?.insert(to.1.to_os_string(), ino);
        Ok(())
    }

    fn open_handle(&mut self, ino: Ino, sync: bool) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { ino, sync });
        fh
    }

    /// Opens `ino`; returns the handle.
    pub(crate) fn open(&mut self, ino: Ino, sync: bool) -> Result<u64, Error> {
        self.gate(None)?;
        self.node(ino)?;
        Ok(self.open_handle(ino, sync))
    }

    /// Closes a handle (unknown ones, from before a cut, are fine).
    pub(crate) fn release(&mut self, fh: u64) {
        self.handles.remove(&fh);
    }

    fn pages_mut(&mut self, ino: Ino) -> Result<&mut Pages, Error> {
        match &mut self.nodes.get_mut(&ino).ok_or(Error::NotFound)?.body {
            Body::File { now, .. } => Ok(now),
            Body::Dir { .. } => Err(Error::IsDir),
        }
    }

    /// `pread`.
    pub(crate) fn read(&mut self, ino: Ino, offset: u64, len: u32) -> Result<Vec<u8>, Error> {
        self.gate(None)?;
        match &self.node(ino)?.body {
            Body::File { now, .. } => Ok(now.read(offset, u64::from(len))),
            Body::Dir { .. } => Err(Error::IsDir),
        }
    }

    /// `pwrite` through handle `fh`.
    pub(crate) fn write(
        &mut self,
        ino: Ino,
        fh: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Error> {
        self.gate_ino(Op::Write, ino)?;
        self.pages_mut(ino)?.write(offset, data);
        self.touch(ino);
        if self
            .handles
            .get(&fh)
            .is_some_and(|h| h.sync && h.ino == ino)
        {
            self.sync_file(ino)?;
        }
        Ok(())
    }

    /// `ftruncate`, or `fallocate` growing the file to `size` (`grow_only`).
    pub(crate) fn resize(&mut self, ino: Ino, size: u64, grow_only: bool) -> Result<Attr, Error> {
        self.gate_ino(Op::Resize, ino)?;
        let pages = self.pages_mut(ino)?;
        if !grow_only || size > pages.size() {
            pages.resize(size);
        }
        self.touch(ino);
        self.attr(ino)
    }

    /// `chmod`.
    pub(crate) fn chmod(&mut self, ino: Ino, perm: u16) -> Result<Attr, Error> {
        self.gate(None)?;
        self.nodes.get_mut(&ino).ok_or(Error::NotFound)?.perm = perm;
        self.attr(ino)
    }

    fn touch(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.mtime = SystemTime::now();
        }
    }
}
