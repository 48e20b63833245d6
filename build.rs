//! Records the commit drctl is built from, for `drctl --version` and the
//! `drctl_build_info` metric: `DRCTL_COMMIT` from the environment (a package
//! built from a tarball), else `git rev-parse`, else "unknown".

fn main() {
    println!("cargo:rerun-if-env-changed=DRCTL_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::env::var("DRCTL_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=DRCTL_COMMIT={commit}");
}
