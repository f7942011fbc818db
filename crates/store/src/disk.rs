//! Small file-system helpers: free space, directory fsync, and positioned
//! reads and writes with the path in every error.

use crate::StoreError;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

/// Free bytes (for an unprivileged user) on the file system holding `path`;
/// 0 if it cannot be told.
pub fn free_disk(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid C string.
    #[allow(unsafe_code)]
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) == 0 {
            s.f_bavail as u64 * s.f_frsize as u64
        } else {
            0
        }
    }
}

/// Makes every byte and name written to the file system holding `dir`
/// durable in one call (syncfs(2)). Far cheaper than an fsync per file when
/// thousands of small files were written; it also waits for other writers
/// on that file system, so it is for batches that touched many files.
pub fn sync_fs(dir: &Path) -> Result<(), StoreError> {
    use std::os::fd::AsRawFd as _;
    let f = File::open(dir).map_err(StoreError::io(dir))?;
    // SAFETY: syncfs only reads the descriptor, which `f` keeps open for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(StoreError::io(dir)(io::Error::last_os_error()))
    }
}

/// Fsyncs a directory, so the names created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(dir))
}

pub fn read_at(path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Writes `data` at `offset` of an existing file.
pub fn write_at(path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
    let file = fs::OpenOptions::new().write(true).open(path)?;
    file.write_all_at(data, offset)
}

/// Removes a file or directory tree if it exists.
pub fn remove_all(path: &Path) -> Result<(), StoreError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(StoreError::io(path))
}
