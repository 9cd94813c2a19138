//! The storage engine's one seam to the file system: every syscall the engine makes on its
//! files and directories goes through a function here, and nowhere else (`grep` the crate for
//! `std::fs`, `OpenOptions`, `rustix::` or `MmapOptions` outside this file to check).
//!
//! Each function is the plain syscall (same arguments, same `io::Result` as `std` or `rustix`
//! give, no context added: callers wrap errors in [`StorageError::io`](crate::StorageError::io)
//! with what they were doing) behind a named failpoint of the `fail` crate. The failpoints are
//! compiled in only with the crate feature `failpoints` (`cargo test -p weir-storage --features
//! failpoints`); without it they expand to nothing and `fail` is not a dependency, so a release
//! build pays nothing for them.
//!
//! | failpoint | syscall | what `return(arg)` injects |
//! |---|---|---|
//! | `storage::open` | `open(2)` of a file or directory (every open, create and lock-file open) | an errno (below) |
//! | `storage::pwrite` | `pwrite(2)` / `pwritev(2)` (segment appends, atomic file writes, zero-fill preallocation, truncated copies) | an errno, or `short`: writes the first half of the bytes and returns that count (configure e.g. `1*return(short)->return(eio)` for "a short write, then the rest fails") |
//! | `storage::pread` | `pread(2)` (recovery's check of a segment's tail) | an errno |
//! | `storage::read` | whole-file `read(2)` (index files at a clean open, checkpoints, derived-state snapshots, leader-epoch files) | an errno |
//! | `storage::fdatasync` | `fdatasync(2)` (the active segment's group commit, atomic file writes, truncated copies) | an errno |
//! | `storage::fsync` | `fsync(2)` of a file (sealed segments, new preallocated files, recovered segments) | an errno |
//! | `storage::fsync_dir` | `fsync(2)` of a directory (after creating, renaming or unlinking in it) | an errno |
//! | `storage::syncfs` | `syncfs(2)` (a clean close of the data dir) | an errno |
//! | `storage::fallocate` | `fallocate(2)` (reserving a segment's blocks: creation, roll, growth) | an errno; `enospc` is what a full disk looks like |
//! | `storage::ftruncate` | `ftruncate(2)` (trimming a sealed or closed segment, recovery's cut) | an errno |
//! | `storage::rename` | `rename(2)` (atomic file replacement, truncation, partition deletion) | an errno |
//! | `storage::unlink` | `unlink(2)` (segments, tmp files, markers, snapshots) | an errno |
//! | `storage::remove_dir_all` | recursive removal of a deleted partition's directory | an errno |
//! | `storage::mkdir` | `mkdir(2)` of the data dir or a partition dir | an errno |
//! | `storage::readdir` | `opendir(3)` of the data dir or a partition dir | an errno |
//! | `storage::stat` | `stat(2)`/`fstat(2)` (file sizes, existence checks) | an errno (an existence check then answers "absent") |
//! | `storage::mmap` | `mmap(2)` of a segment or index, read-only | an errno |
//! | `storage::flock` | `flock(2)` of the data dir's lock file | an errno |
//!
//! An errno arg is `eio` (also the default, for a bare `return`), `enospc`, `edquot`, `erofs`,
//! `enoent`, `eacces`, or a raw number; anything else is a mistake in the test and panics. The
//! usual `fail` actions combine with these: `off`, `N*return(...)`, `pct%return(...)`, `->`
//! chains, `panic`, `sleep(ms)`, `pause`. Failpoints are process-global: tests that configure
//! them hold a `fail::FailScenario` for their whole run, which serializes them.
//!
//! The same feature compiles in a journal of writes and syncs (`journal`, switched on by
//! `WEIR_SYNC_JOURNAL_DIR`), from which a test can drop what a power loss would.

use std::fs::{self, File, OpenOptions, ReadDir};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::Path;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::FallocateFlags;

/// The error a failpoint's `return(arg)` stands for (see the module docs).
#[cfg(feature = "failpoints")]
fn injected(name: &str, arg: Option<String>) -> io::Error {
    use rustix::io::Errno;
    let errno = match arg.as_deref().unwrap_or("eio") {
        "eio" => Errno::IO,
        "enospc" => Errno::NOSPC,
        "edquot" => Errno::DQUOT,
        "erofs" => Errno::ROFS,
        "enoent" => Errno::NOENT,
        "eacces" => Errno::ACCESS,
        other => match other.parse::<i32>() {
            Ok(raw) => Errno::from_raw_os_error(raw),
            Err(_) => panic!("failpoint {name}: unknown arg {other:?} (see weir_storage::sys)"),
        },
    };
    io::Error::from(errno)
}

/// `fail::fail_point!` when the `failpoints` feature is on; nothing at all otherwise (the
/// `fail` crate is then not even a dependency).
macro_rules! failpoint {
    ($name:literal, $on_return:expr) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, $on_return);
    };
}

/// Declares the failpoint `$name` for an `io::Result` function: `return(errno)` makes it fail.
macro_rules! errno_point {
    ($name:literal) => {
        failpoint!($name, |arg| Err(injected($name, arg)));
    };
}

/// A journal of writes and syncs for the fault suite's power-loss simulation, compiled in
/// only with `failpoints` and active only when `WEIR_SYNC_JOURNAL_DIR` names a directory: the
/// process then appends to `DIR/PID.journal`, one line per event, each numbered:
/// `W SEQ DEV INO OFFSET LEN` before every `pwrite`/`pwritev` (so a write the process died in
/// is counted as not synced), `S SEQ DEV INO` after every `fdatasync`/`fsync` of a file
/// returned (SEQ is the number taken when it began: it covers the writes numbered below it),
/// and `A SEQ` after a `syncfs`. Dropping, per file, the writes no sync covers is what a power
/// loss can do to that file's data (`broker/tests/replication_faults.rs`).
#[cfg(feature = "failpoints")]
mod journal {
    use std::fs::File;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};

    static JOURNAL: OnceLock<Option<Mutex<File>>> = OnceLock::new();
    static SEQ: AtomicU64 = AtomicU64::new(0);

    fn journal() -> Option<&'static Mutex<File>> {
        JOURNAL
            .get_or_init(|| {
                let dir = std::env::var_os("WEIR_SYNC_JOURNAL_DIR")?;
                let path =
                    std::path::Path::new(&dir).join(format!("{}.journal", std::process::id()));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .unwrap_or_else(|e| panic!("sync journal {}: {e}", path.display()));
                Some(Mutex::new(file))
            })
            .as_ref()
    }

    fn id(file: &File) -> Option<(u64, u64)> {
        file.metadata().ok().map(|m| (m.dev(), m.ino()))
    }

    /// One line, in one `write(2)` (a SIGKILL leaves whole lines, at most one cut short).
    fn line(journal: &Mutex<File>, text: String) {
        let mut file = journal.lock().unwrap_or_else(|e| e.into_inner());
        let _ = file.write_all(text.as_bytes());
    }

    /// Before a write of `len` bytes at `at`.
    pub(super) fn write(file: &File, at: u64, len: usize) {
        if let Some(journal) = journal()
            && let Some((dev, ino)) = id(file)
        {
            // Numbered under the lock, so the lines are in number order.
            let mut f = journal.lock().unwrap_or_else(|e| e.into_inner());
            let seq = SEQ.fetch_add(1, Ordering::SeqCst);
            let _ = f.write_all(format!("W {seq} {dev} {ino} {at} {len}\n").as_bytes());
        }
    }

    /// Before a sync: the number it will cover up to.
    pub(super) fn sync_begins() -> u64 {
        let _guard = journal().map(|j| j.lock().unwrap_or_else(|e| e.into_inner()));
        SEQ.fetch_add(1, Ordering::SeqCst)
    }

    /// After a sync of `file` that began at `seq` returned.
    pub(super) fn synced(file: &File, seq: u64) {
        if let Some(journal) = journal()
            && let Some((dev, ino)) = id(file)
        {
            line(journal, format!("S {seq} {dev} {ino}\n"));
        }
    }

    /// After a `syncfs` that began at `seq` returned.
    pub(super) fn synced_all(seq: u64) {
        if let Some(journal) = journal() {
            line(journal, format!("A {seq}\n"));
        }
    }
}

/// [`journal::write`] with `failpoints`; nothing otherwise.
macro_rules! journal_write {
    ($file:expr, $at:expr, $len:expr) => {
        #[cfg(feature = "failpoints")]
        journal::write($file, $at, $len);
    };
}

/// Runs `sync` of `file`, journaled (see [`journal`]).
#[cfg(feature = "failpoints")]
fn journaled_sync(file: &File, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let seq = journal::sync_begins();
    sync()?;
    journal::synced(file, seq);
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
fn journaled_sync(_: &File, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    sync()
}

/// `open(2)` with `options`.
pub(crate) fn open(path: &Path, options: &OpenOptions) -> io::Result<File> {
    errno_point!("storage::open");
    options.open(path)
}

/// `open(2)` read-only (a file to read or sync, or a directory).
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    open(path, OpenOptions::new().read(true))
}

/// One `pwrite(2)` of `buf` at `at`; may write fewer bytes than asked.
pub(crate) fn pwrite(file: &File, buf: &[u8], at: u64) -> io::Result<usize> {
    journal_write!(file, at, buf.len());
    failpoint!("storage::pwrite", |arg| short_or_error(file, buf, at, arg));
    rustix::io::pwrite(file, buf, at).map_err(io::Error::from)
}

/// One `pwritev(2)` of `bufs` at `at`; may write fewer bytes than asked.
pub(crate) fn pwritev(file: &File, bufs: &[IoSlice<'_>], at: u64) -> io::Result<usize> {
    journal_write!(file, at, bufs.iter().map(|b| b.len()).sum());
    failpoint!("storage::pwrite", |arg| {
        let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        short_or_error(file, &joined, at, arg)
    });
    rustix::io::pwritev(file, bufs, at).map_err(io::Error::from)
}

/// The `storage::pwrite` failpoint's effect: `short` really writes the first half of `buf`
/// (so what a torn write leaves on disk is there to recover from) and returns its length.
#[cfg(feature = "failpoints")]
fn short_or_error(file: &File, buf: &[u8], at: u64, arg: Option<String>) -> io::Result<usize> {
    if arg.as_deref() == Some("short") {
        let half = buf.len() / 2;
        return rustix::io::pwrite(file, &buf[..half], at).map_err(io::Error::from);
    }
    Err(injected("storage::pwrite", arg))
}

/// All of `buf` at `at`, in as many [`pwrite`] calls as it takes.
pub(crate) fn pwrite_all(file: &File, mut buf: &[u8], mut at: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match pwrite(file, buf, at) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "pwrite wrote nothing",
                ));
            }
            Ok(n) => {
                buf = &buf[n..];
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Fills `buf` from `at` (`pread(2)` until done; a file ending first is `UnexpectedEof`).
pub(crate) fn pread_exact(file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    errno_point!("storage::pread");
    file.read_exact_at(buf, at)
}

/// The whole file at `path`.
pub(crate) fn read(path: &Path) -> io::Result<Vec<u8>> {
    errno_point!("storage::read");
    fs::read(path)
}

/// The whole file at `path`, as UTF-8.
pub(crate) fn read_to_string(path: &Path) -> io::Result<String> {
    errno_point!("storage::read");
    fs::read_to_string(path)
}

/// `fdatasync(2)`: the file's data, and the metadata needed to read it back.
pub(crate) fn fdatasync(file: &File) -> io::Result<()> {
    errno_point!("storage::fdatasync");
    journaled_sync(file, || file.sync_data())
}

/// `fsync(2)`: the file's data and all its metadata (a changed length included).
pub(crate) fn fsync(file: &File) -> io::Result<()> {
    errno_point!("storage::fsync");
    journaled_sync(file, || file.sync_all())
}

/// `fsync(2)` of a directory, making creations, renames and unlinks in it durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    let d = open_read(dir)?;
    errno_point!("storage::fsync_dir");
    d.sync_all()
}

/// `syncfs(2)`: every dirty page and metadata change of the file system holding `dir`.
pub(crate) fn syncfs(dir: &File) -> io::Result<()> {
    errno_point!("storage::syncfs");
    #[cfg(feature = "failpoints")]
    let seq = journal::sync_begins();
    rustix::fs::syncfs(dir).map_err(io::Error::from)?;
    #[cfg(feature = "failpoints")]
    journal::synced_all(seq);
    Ok(())
}

/// `fallocate(2)` (mode 0) of `[offset, offset + len)`, extending the file. A file system
/// without it answers `EOPNOTSUPP` or `ENOSYS`, which the caller handles.
pub(crate) fn fallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    errno_point!("storage::fallocate");
    rustix::fs::fallocate(file, FallocateFlags::empty(), offset, len).map_err(io::Error::from)
}

/// `ftruncate(2)` to `len`.
pub(crate) fn set_len(file: &File, len: u64) -> io::Result<()> {
    errno_point!("storage::ftruncate");
    file.set_len(len)
}

/// `rename(2)`: atomically replaces `to` with `from`.
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    errno_point!("storage::rename");
    fs::rename(from, to)
}

/// `unlink(2)`.
pub(crate) fn unlink(path: &Path) -> io::Result<()> {
    errno_point!("storage::unlink");
    fs::remove_file(path)
}

/// Removes a directory and everything in it.
pub(crate) fn remove_dir_all(path: &Path) -> io::Result<()> {
    errno_point!("storage::remove_dir_all");
    fs::remove_dir_all(path)
}

/// Creates `path` and any missing parents.
pub(crate) fn create_dir_all(path: &Path) -> io::Result<()> {
    errno_point!("storage::mkdir");
    fs::create_dir_all(path)
}

/// Opens a directory for listing.
pub(crate) fn read_dir(path: &Path) -> io::Result<ReadDir> {
    errno_point!("storage::readdir");
    fs::read_dir(path)
}

/// The length of the file at `path` (`stat(2)`).
pub(crate) fn path_len(path: &Path) -> io::Result<u64> {
    errno_point!("storage::stat");
    fs::metadata(path).map(|m| m.len())
}

/// The length of an open file (`fstat(2)`).
pub(crate) fn file_len(file: &File) -> io::Result<u64> {
    errno_point!("storage::stat");
    file.metadata().map(|m| m.len())
}

/// Whether anything exists at `path` (as `Path::exists`: a failed `stat` answers no).
pub(crate) fn exists(path: &Path) -> bool {
    fn stat(path: &Path) -> io::Result<()> {
        errno_point!("storage::stat");
        fs::metadata(path).map(|_| ())
    }
    stat(path).is_ok()
}

/// `mmap(2)` of the first `len` bytes of `file`, read-only and shared. `len` may exceed the
/// file's length (the active segment is mapped at its full capacity); touching a page past
/// end-of-file would SIGBUS, which the callers' published-length invariant rules out.
pub(crate) fn mmap_read_only(file: &File, len: usize) -> io::Result<MmapRaw> {
    errno_point!("storage::mmap");
    MmapOptions::new().len(len).map_raw_read_only(file)
}

/// `flock(2)`: an exclusive lock on `file`, failing at once (`EWOULDBLOCK`) if another open
/// file description holds one.
pub(crate) fn flock_exclusive(file: &File) -> io::Result<()> {
    errno_point!("storage::flock");
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(io::Error::from)
}
