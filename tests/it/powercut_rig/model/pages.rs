//! File contents as copy-on-write pages.

use std::collections::BTreeMap;
use std::sync::Arc;

const PAGE: usize = 4096;

/// A file's bytes in pages, so the durable snapshot shares
/// every page not written since the last `fsync`.
#[derive(Clone, Default)]
pub(crate) struct Pages {
    size: u64,
    pages: BTreeMap<u64, Arc<[u8; PAGE]>>,
}

impl Pages {
    /// The length in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Up to `len` bytes from `offset`.
    pub(crate) fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; usize::try_from(end - offset).unwrap_or(0)];
        let step = PAGE as u64;
        for (&n, page) in self.pages.range(offset / step..=(end - 1) / step) {
            let (from, to) = ((n * step).max(offset), ((n + 1) * step).min(end));
            let at = (from - n * step) as usize;
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&page[at..at + (to - from) as usize]);
        }
        out
    }

    /// Writes `data` at `offset`, growing the file as needed.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) {
        let step = PAGE as u64;
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let (n, within) = (at / step, (at % step) as usize);
            let take = (PAGE - within).min(data.len() - done);
            let page = self.pages.entry(n).or_insert_with(|| Arc::new([0u8; PAGE]));
            Arc::make_mut(page)[within..within + take].copy_from_slice(&data[done..done + take]);
            done += take;
        }
        self.size = self.size.max(offset + data.len() as u64);
    }

    /// Sets the length; bytes past it are gone, a longer file reads zeros.
    pub(crate) fn resize(&mut self, size: u64) {
        let step = PAGE as u64;
        if size < self.size {
            self.pages.retain(|&n, _| n * step < size);
            if let Some(last) = self.pages.get_mut(&(size / step)) {
                Arc::make_mut(last)[(size % step) as usize..].fill(0);
            }
        }
        self.size = size;
    }
}
