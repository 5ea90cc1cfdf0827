use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tantivy::directory::error::{DeleteError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    AntiCallToken, FileHandle, MmapDirectory, TerminatingWrite, WatchCallback, WatchHandle,
    WritePtr,
};
use tantivy::indexer::{IndexWriterOptions, NoMergePolicy};
use tantivy::{Directory, Index, IndexWriter};

use super::{schema, Doc};
use crate::error::{Error, Result, ResultExt};

/// Tantivy's smallest arena per indexing thread (its `MEMORY_BUDGET_NUM_BYTES_MIN`, not exported).
const MIN_HEAP_PER_THREAD: usize = 15_000_000;

/// Writer sizing. Tantivy gives each indexing thread its own segment and memory arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BuildOptions {
    /// Memory arena per indexing thread; a segment is flushed when it fills.
    pub heap_per_thread: usize,
    pub threads: usize,
}

impl BuildOptions {
    /// Half the function's memory for the writer (Tantivy's arena grows page by page up to it),
    /// 1 GiB when not on Lambda, split over one indexing thread per core (Lambda gives a second
    /// vCPU from 1,769 MB). Each thread writes its own segment, so a build ends with about one
    /// segment per thread: few enough to search without merging them.
    pub fn for_memory(memory_mb: Option<u32>) -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let total = memory_mb.map(|mb| mb as usize * (1 << 20) / 2).unwrap_or(1 << 30);
        let threads = cpus.clamp(1, 8).min((total / MIN_HEAP_PER_THREAD).max(1));
        let heap_per_thread = (total / threads).clamp(MIN_HEAP_PER_THREAD, 4000 << 20);
        BuildOptions { heap_per_thread, threads }
    }
}

/// A build that ends with more segments than this (the heap filled up) is merged into one.
/// Up to it, merging costs more than it saves: BM25 statistics are index-wide either way, and a
/// search visits a handful of segments in microseconds.
pub const MAX_SEGMENTS: usize = 4;

/// What [`build`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Built {
    pub docs: u64,
    /// Segments after the commit (before any merge).
    pub segments: usize,
    /// Adding every document and committing (the reference's "index N documents" figure).
    pub index_ms: f64,
    pub merge_ms: f64,
    pub docs_per_s: f64,
}

/// Indexes `docs` into a new index at `dir` (created, must not hold an index), commits, and
/// merges to one segment when there are more than [`MAX_SEGMENTS`]. A document error (bad JSONL)
/// aborts the build and is returned as is.
/// CPU-heavy: call from a blocking thread.
pub fn build<I>(dir: &Path, docs: I, opts: &BuildOptions) -> Result<Built>
where
    I: IntoIterator<Item = Result<Doc>>,
{
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Internal(format!("create {}: {e}", dir.display())))?;
    let started = Instant::now();
    let index = Index::create(ScratchDirectory::open(dir)?, schema(), Default::default())
        .internal("creating the index")?;
    let options = IndexWriterOptions::builder()
        .memory_budget_per_thread(opts.heap_per_thread)
        .num_worker_threads(opts.threads)
        .num_merge_threads(1)
        .build();
    let mut writer: IndexWriter<Doc> =
        index.writer_with_options(options).internal("opening the index writer")?;
    writer.set_merge_policy(Box::new(NoMergePolicy));
    let mut count = 0u64;
    for doc in docs {
        writer.add_document(doc?).internal("adding a document")?;
        count += 1;
    }
    writer.commit().internal("committing the index")?;
    let index_ms = started.elapsed().as_secs_f64() * 1e3;
    let merge_started = Instant::now();
    let ids = index.searchable_segment_ids().internal("listing segments")?;
    if ids.len() > MAX_SEGMENTS {
        writer.merge(&ids).wait().internal("merging segments")?;
    }
    writer.wait_merging_threads().internal("finishing the merge")?;
    let merge_ms = merge_started.elapsed().as_secs_f64() * 1e3;
    Ok(Built {
        docs: count,
        segments: ids.len(),
        index_ms,
        merge_ms,
        docs_per_s: count as f64 / (index_ms / 1e3).max(1e-9),
    })
}

/// A directory for building an index that is packed and uploaded, never served in place: files
/// go to disk (memory stays bounded by the writer heap) but nothing is fsynced, which on a real
/// disk costs more than indexing a small corpus.
#[derive(Debug, Clone)]
struct ScratchDirectory {
    root: PathBuf,
    mmap: MmapDirectory,
}

impl ScratchDirectory {
    fn open(root: &Path) -> Result<Self> {
        let mmap = MmapDirectory::open(root)
            .map_err(|e| Error::Internal(format!("open {}: {e}", root.display())))?;
        Ok(ScratchDirectory { root: root.to_path_buf(), mmap })
    }
}

struct UnsyncedFile(File);

impl Write for UnsyncedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl TerminatingWrite for UnsyncedFile {
    fn terminate_ref(&mut self, _: AntiCallToken) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Directory for ScratchDirectory {
    fn get_file_handle(
        &self,
        path: &Path,
    ) -> std::result::Result<Arc<dyn FileHandle>, OpenReadError> {
        self.mmap.get_file_handle(path)
    }
    fn delete(&self, path: &Path) -> std::result::Result<(), DeleteError> {
        self.mmap.delete(path)
    }
    fn exists(&self, path: &Path) -> std::result::Result<bool, OpenReadError> {
        self.mmap.exists(path)
    }
    fn open_write(&self, path: &Path) -> std::result::Result<WritePtr, OpenWriteError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.root.join(path))
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    OpenWriteError::FileAlreadyExists(path.to_path_buf())
                } else {
                    OpenWriteError::wrap_io_error(e, path.to_path_buf())
                }
            })?;
        Ok(BufWriter::new(Box::new(UnsyncedFile(file))))
    }
    fn atomic_read(&self, path: &Path) -> std::result::Result<Vec<u8>, OpenReadError> {
        self.mmap.atomic_read(path)
    }
    fn atomic_write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        let target = self.root.join(path);
        let tmp = target.with_extension("tmp-write");
        std::fs::write(&tmp, data)?;
        std::fs::rename(tmp, target)
    }
    fn sync_directory(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn acquire_lock(
        &self,
        lock: &tantivy::directory::Lock,
    ) -> std::result::Result<tantivy::directory::DirectoryLock, tantivy::directory::error::LockError>
    {
        self.mmap.acquire_lock(lock)
    }
    fn watch(&self, cb: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.mmap.watch(cb)
    }
}

// ---------------------------------------------------------------------------------------------
// Bundles
