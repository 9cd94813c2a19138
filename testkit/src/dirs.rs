//! Directories for tests: a fresh temp dir, and a size-capped tmpfs to fill up.

use std::path::Path;
use std::process::Command;

/// A fresh temporary directory for a broker's data.
pub fn temp_data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("weir-test-")
        .tempdir()
        .expect("creating a temp dir")
}

/// A size-capped tmpfs mounted on a fresh temp dir, unmounted when dropped: a small file system
/// to fill up. `None` (with a SKIPPED line on stderr naming `test`) where mounting is not
/// permitted (not root, no mount namespace).
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str, test: &str) -> Option<Tmpfs> {
        let dir = temp_data_dir();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED {test}: cannot mount a tmpfs here ({}).",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
