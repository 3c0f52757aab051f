//! What a power cut keeps: the gate every operation passes (frozen, or a
//! trigger firing), `fsync`, the revert and the cleanup after it.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};

use super::{Body, Error, Ino, Model, Node, Rules, ROOT};

/// Operations that change something; a [`Trigger`] sees each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `write`.
    Write,
    /// `truncate`/`ftruncate`, `fallocate`.
    Resize,
    /// A new file.
    Create,
    /// `mkdir`.
    Mkdir,
    /// `unlink`, `rmdir`.
    Remove,
    /// `rename`.
    Rename,
    /// `fsync`/`fdatasync` of a file.
    Fsync,
    /// `fsync` of a directory.
    FsyncDir,
}

/// Decides, for each changing operation and the name it concerns, whether
/// the power fails just before it.
pub(crate) type Trigger = Box<dyn FnMut(Op, &OsStr) -> bool + Send>;

impl Model {
    /// Fails every operation from now on until [`Model::revert`].
    pub(crate) fn freeze(&mut self) {
        self.frozen = true;
    }

    /// Arms `trigger`: the first operation it accepts is not applied; the
    /// file system freezes instead and sets [`Model::tripped`].
    pub(crate) fn arm(&mut self, trigger: Trigger) {
        self.trigger = Some(trigger);
        self.tripped = false;
    }

    /// Drops an armed trigger that did not fire.
    pub(crate) fn disarm(&mut self) {
        self.trigger = None;
    }

    /// The power cut: every node back at its durable state, the
    /// unreachable ones gone, no open files; then the power is back.
    pub(crate) fn revert(&mut self) {
        for node in self.nodes.values_mut() {
            match &mut node.body {
                Body::File { now, durable } => *now = durable.clone(),
                Body::Dir { now, durable } => *now = durable.clone(),
            }
        }
        self.handles.clear();
        self.collect();
        self.trigger = None;
        self.tripped = false;
        self.frozen = false;
        self.cuts += 1;
    }

    /// Makes everything durable, as if every file and directory had been
    /// fsynced (for what a test prepares before starting tether).
    pub(crate) fn settle(&mut self) {
        for node in self.nodes.values_mut() {
            match &mut node.body {
                Body::File { now, durable } => *durable = now.clone(),
                Body::Dir { now, durable } => *durable = now.clone(),
            }
        }
        self.collect();
    }

    /// Lets an operation through, or fails it while the power is off or
    /// when the trigger fires on it.
    pub(super) fn gate(&mut self, op: Option<(Op, &OsStr)>) -> Result<(), Error> {
        if self.frozen {
            return Err(Error::PoweredOff);
        }
        self.ops += u64::from(op.is_some());
        if let (Some((op, name)), Some(trigger)) = (op, self.trigger.as_mut()) {
            if trigger(op, name) {
                self.trigger = None;
                self.frozen = true;
                self.tripped = true;
                return Err(Error::PoweredOff);
            }
        }
        Ok(())
    }

    /// Gate for an operation on `ino`, named by one of its current names.
    pub(super) fn gate_ino(&mut self, op: Op, ino: Ino) -> Result<(), Error> {
        let name = if self.trigger.is_none() {
            OsString::new()
        } else {
            self.name_of(ino).unwrap_or_default()
        };
        self.gate(Some((op, &name)))
    }

    fn name_of(&self, ino: Ino) -> Option<OsString> {
        self.nodes.values().find_map(|n| match &n.body {
            Body::Dir { now, .. } => now
                .iter()
                .find(|(_, &i)| i == ino)
                .map(|(name, _)| name.clone()),
            Body::File { .. } => None,
        })
    }

    /// `fsync`/`fdatasync` of a file, or `fsync` of a directory.
    pub(crate) fn fsync(&mut self, ino: Ino) -> Result<(), Error> {
        let is_dir = matches!(self.node(ino)?.body, Body::Dir { .. });
        if is_dir {
            self.gate_ino(Op::FsyncDir, ino)?;
            if let Some(Node {
                body: Body::Dir { now, durable },
                ..
            }) = self.nodes.get_mut(&ino)
            {
                *durable = now.clone();
            }
            return Ok(());
        }
        self.gate_ino(Op::Fsync, ino)?;
        self.sync_file(ino)
    }

    /// The file's content becomes durable; with [`Rules::Ext4`] also its
    /// current names, and names it no longer has stop being durable.
    pub(super) fn sync_file(&mut self, ino: Ino) -> Result<(), Error> {
        if let Body::File { now, durable } =
            &mut self.nodes.get_mut(&ino).ok_or(Error::NotFound)?.body
        {
            *durable = now.clone();
        }
        if self.rules == Rules::Posix {
            return Ok(());
        }
        for node in self.nodes.values_mut() {
            if let Body::Dir { now, durable } = &mut node.body {
                durable.retain(|name, i| *i != ino || now.get(name) == Some(&ino));
                for (name, _) in now.iter().filter(|(_, &i)| i == ino) {
                    durable.insert(name.clone(), ino);
                }
            }
        }
        Ok(())
    }

    /// Drops nodes no name (current or durable) and no open file reaches.
    fn collect(&mut self) {
        let mut seen: HashSet<Ino> = self.handles.values().map(|h| h.ino).collect();
        let mut todo = vec![ROOT];
        todo.extend(seen.iter().copied());
        while let Some(ino) = todo.pop() {
            seen.insert(ino);
            if let Some(Node {
                body: Body::Dir { now, durable },
                ..
            }) = self.nodes.get(&ino)
            {
                todo.extend(
                    now.values()
                        .chain(durable.values())
                        .filter(|i| !seen.contains(i)),
                );
            }
        }
        self.nodes.retain(|ino, _| seen.contains(ino));
    }
}
