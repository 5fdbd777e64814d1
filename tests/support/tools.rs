//! External programs the tests cross-check herald against (`dig`, `named-checkzone`, `openssl`,
//! the dkimpy verifier). A test never skips because one is missing: it fails, naming the Debian
//! package that provides it — `tests/run` installs them all.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of program `name`, or a panic telling the reader which Debian `package` to install.
/// Looks on `PATH`, then in the sbin directories a non-root `PATH` often lacks.
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs =
        std::env::split_paths(&path).chain(["/usr/sbin", "/sbin"].into_iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    panic!(
        "`{name}` is not installed: install the Debian package {package} \
         (`apt-get install {package}`; tests/run does it for you)"
    );
}

/// The Debian packages whose modules the DKIM verifier (dkimpy) imports.
pub const VERIFIER_PACKAGES: &str = "python3-dkim python3-dnspython python3-nacl";

/// A Python interpreter that can `import dkim, dns, nacl`, for the independent DKIM verifier.
/// `HERALD_TEST_PYTHON` chooses it; otherwise Debian's `/usr/bin/python3` (where
/// `python3-dkim` installs), falling back to `python3` on `PATH`. Panics naming the Debian
/// packages when the modules are missing, so a verifier test can never pass without verifying.
pub fn verifier_python() -> PathBuf {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match CHECKED.get_or_init(check_verifier_python) {
        Ok(python) => python.clone(),
        Err(why) => panic!("{why}"),
    }
}

fn check_verifier_python() -> Result<PathBuf, String> {
    let python = match std::env::var_os("HERALD_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ if is_executable(Path::new("/usr/bin/python3")) => PathBuf::from("/usr/bin/python3"),
        _ => require_tool("python3", "python3"),
    };
    let out = Command::new(&python)
        .args(["-c", "import dkim, dns, nacl"])
        .output()
        .map_err(|e| {
            format!(
                "cannot run {} ({e}): install the Debian packages {VERIFIER_PACKAGES} \
                 (tests/run does), or set HERALD_TEST_PYTHON to a python3 that has them",
                python.display()
            )
        })?;
    if out.status.success() {
        Ok(python)
    } else {
        Err(format!(
            "{} cannot import the DKIM verifier's modules (dkim, dns, nacl): {} — install the \
             Debian packages {VERIFIER_PACKAGES} (tests/run does; never pip into the system \
             Python), or set HERALD_TEST_PYTHON to a python3 that has them",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
