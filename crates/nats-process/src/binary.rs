//! Finding the nats-server binary: an explicit path, else the repository's pinned copy in
//! `tools/bin`, else `nats-server` on `PATH`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Name of the binary, both under `tools/bin` and on `PATH`.
pub const BINARY_NAME: &str = "nats-server";

/// No executable nats-server was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound {
    /// The explicitly requested path, if that is what was missing.
    pub explicit: Option<PathBuf>,
}

/// Picks the nats-server binary: `explicit` if given (it must be an executable file; it is made
/// absolute), else the first executable `<root>/tools/bin/nats-server` of `roots`, else the first
/// executable `nats-server` in the `path` directories (a `PATH` value).
///
/// The environment comes in as arguments, so that each caller decides where it is read from and
/// tests need not change the process environment.
pub fn find_binary(
    explicit: Option<&Path>,
    roots: impl IntoIterator<Item = PathBuf>,
    path: Option<&OsStr>,
) -> Result<PathBuf, NotFound> {
    if let Some(explicit) = explicit {
        return if is_executable_file(explicit) {
            Ok(std::path::absolute(explicit).unwrap_or_else(|_| explicit.to_path_buf()))
        } else {
            Err(NotFound {
                explicit: Some(explicit.to_path_buf()),
            })
        };
    }
    let in_tools = Path::new("tools").join("bin").join(BINARY_NAME);
    let pinned = roots.into_iter().map(|root| root.join(&in_tools));
    let on_path = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(BINARY_NAME));
    pinned
        .chain(on_path)
        .find(|candidate| is_executable_file(candidate))
        .ok_or(NotFound { explicit: None })
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn executable(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn lookup_order() {
        let root = tempfile::tempdir().unwrap();
        let path_dir = tempfile::tempdir().unwrap();
        let explicit = root.path().join("my-nats");
        let pinned = root.path().join("tools/bin/nats-server");
        let on_path = path_dir.path().join("nats-server");
        let path = std::env::join_paths([Path::new("/nonexistent"), path_dir.path()]).unwrap();
        let find = |explicit: Option<&Path>| {
            find_binary(explicit, [root.path().to_path_buf()], Some(&path))
        };

        assert_eq!(find(None), Err(NotFound { explicit: None }));
        fs::write(&on_path, "").unwrap();
        assert_eq!(
            find(None),
            Err(NotFound { explicit: None }),
            "not executable"
        );
        executable(&on_path);
        assert_eq!(find(None), Ok(on_path));
        executable(&pinned);
        assert_eq!(find(None), Ok(pinned));

        assert_eq!(
            find(Some(&explicit)),
            Err(NotFound {
                explicit: Some(explicit.clone())
            })
        );
        executable(&explicit);
        assert_eq!(find(Some(&explicit)), Ok(explicit));
    }

    #[test]
    fn roots_are_searched_in_order() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let in_second = second.path().join("tools/bin/nats-server");
        executable(&in_second);
        let roots = [first.path().to_path_buf(), second.path().to_path_buf()];
        assert_eq!(find_binary(None, roots, None), Ok(in_second));
    }
}
