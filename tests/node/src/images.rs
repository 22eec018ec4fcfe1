//! Images are local executables: one table from image name (any tag or
//! digest) to a program and its default arguments (the image's entrypoint).
//! A container's `command` replaces the program, `args` the arguments, as in
//! Kubernetes; programs are looked up in the binaries directory, then PATH.

use std::path::{Path, PathBuf};

/// An image resolved to what runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// `repository` of `image` without registry-less tag or digest:
/// `outrigger/proxy:0.1.0` and `outrigger/proxy@sha256:…` → `outrigger/proxy`.
pub fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// The entrypoint of each known image: (repository, program, default args).
/// `outrigger-testnode` serves the test app and client itself.
const TABLE: &[(&str, &str, &[&str])] = &[
    ("outrigger/proxy", "outrigger-proxy", &[]),
    ("outrigger/operator", "outrigger-operator", &[]),
    ("outrigger/test-app", "outrigger-testnode", &["test-app"]),
    (
        "outrigger/test-client",
        "outrigger-testnode",
        &["test-client"],
    ),
    // A shell for init containers and exec probes written as scripts.
    ("outrigger/shell", "sh", &[]),
];

/// What runs for a container, or None for an image not in the table.
pub fn resolve(
    bin_dir: &Path,
    image: &str,
    command: Option<&[String]>,
    args: Option<&[String]>,
) -> Option<Image> {
    let (_, program, defaults) = TABLE.iter().find(|(r, _, _)| *r == repository(image))?;
    let mut argv: Vec<String> = match command {
        Some(c) if !c.is_empty() => c.to_vec(),
        _ => std::iter::once(program.to_string())
            .chain(defaults.iter().map(|s| s.to_string()))
            .collect(),
    };
    if let Some(args) = args {
        // `args` replaces the image's default arguments, not the command.
        if command.is_none_or(<[String]>::is_empty) {
            argv.truncate(1);
        }
        argv.extend(args.iter().cloned());
    }
    let first = argv.remove(0);
    let local = bin_dir.join(&first);
    let program = if !first.contains('/') && local.exists() {
        local
    } else {
        PathBuf::from(first)
    };
    Some(Image {
        program,
        args: argv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tags_digests_and_registry_ports_are_stripped() {
        assert_eq!(repository("outrigger/proxy:0.1.0"), "outrigger/proxy");
        assert_eq!(repository("outrigger/proxy@sha256:ab"), "outrigger/proxy");
        assert_eq!(repository("outrigger/proxy"), "outrigger/proxy");
        assert_eq!(
            repository("reg:5000/outrigger/proxy"),
            "reg:5000/outrigger/proxy"
        );
    }

    #[test]
    fn command_and_args_replace_entrypoint_and_defaults() {
        let dir = Path::new("/nonexistent");
        let app = resolve(dir, "outrigger/test-app:1", None, None).unwrap();
        assert_eq!(app.program, PathBuf::from("outrigger-testnode"));
        assert_eq!(app.args, s(&["test-app"]));
        let args = s(&["init", "--proxy-uid=2102"]);
        let init = resolve(dir, "outrigger/proxy:0.1.0", None, Some(&args)).unwrap();
        assert_eq!(init.args, args);
        let cmd = s(&["sh", "-c", "true"]);
        let sh = resolve(dir, "outrigger/shell", Some(&cmd), None).unwrap();
        assert_eq!(
            (sh.program, sh.args),
            (PathBuf::from("sh"), s(&["-c", "true"]))
        );
        assert!(resolve(dir, "nginx:1.27", None, None).is_none());
    }
}
