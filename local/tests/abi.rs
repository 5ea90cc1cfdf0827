//! `infra/abi/check.sh`, the gate every zip passes in `make build`: a bootstrap that
//! provided.al2023 (glibc 2.34, GCC 11's libstdc++) could not start is refused, naming why.
//! The binaries here are built for this machine (Debian 12: glibc 2.36, GCC 12), which is the
//! point: they ask for what Lambda's image does not have.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use quiver::testing::ScratchDir;

fn compile(
    dir: &Path,
    name: &str,
    compiler: &str,
    source: &str,
    ext: &str,
    args: &[&str],
) -> PathBuf {
    let src = dir.join(format!("{name}.{ext}"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(name);
    let status =
        Command::new(compiler).arg("-O1").arg(&src).arg("-o").arg(&out).args(args).status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "{compiler} could not build {name} (apt-get install build-essential)"
    );
    out
}

fn check(binaries: &[&Path]) -> (bool, String) {
    let out = Command::new("bash")
        .arg(common::repo_root().join("infra/abi/check.sh"))
        .args(binaries)
        .output()
        .unwrap();
    (out.status.success(), common::show(&out))
}

#[test]
fn a_binary_that_needs_a_newer_glibc_symbol_is_refused_by_name() {
    let dir = ScratchDir::new("abi");
    // arc4random is new in glibc 2.36.
    let bin = compile(&dir.0, "newer", "cc", "#include <stdlib.h>\n#include <stdio.h>\nint main(void) { printf(\"%u\\n\", arc4random()); return 0; }\n", "c", &[]);
    let (ok, text) = check(&[&bin]);
    assert!(!ok, "check.sh accepted a binary that asks for GLIBC_2.36:\n{text}");
    assert!(
        text.contains("REFUSED newer")
            && text.contains("GLIBC_2.36")
            && text.contains("arc4random"),
        "{text}"
    );
}

#[test]
fn a_dynamic_libstdcxx_is_refused_and_a_plain_c_binary_passes() {
    let dir = ScratchDir::new("abi");
    let cxx = compile(
        &dir.0,
        "cxx",
        "c++",
        "#include <iostream>\nint main() { std::cout << 1 << std::endl; }\n",
        "cpp",
        &[],
    );
    let (ok, text) = check(&[&cxx]);
    assert!(
        !ok && text.contains("libstdc++.so.6") && text.contains("link libstdc++ statically"),
        "{text}"
    );

    let plain = compile(
        &dir.0,
        "plain",
        "cc",
        "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n",
        "c",
        &[],
    );
    let (ok, text) = check(&[&plain]);
    assert!(ok, "a binary that needs only libc's old symbols was refused:\n{text}");
    assert!(text.contains("NEEDED libc.so.6") && text.contains("newest GLIBC_2."), "{text}");
}
