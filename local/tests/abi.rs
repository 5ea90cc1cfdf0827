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

/// libstdc++ comes from the image (GCC 11's), so a C++ binary passes while it asks for nothing
/// newer than GLIBCXX_3.4.29; Debian's GCC 12 binds `condition_variable::wait` to GLIBCXX_3.4.30.
#[test]
fn libstdcxx_newer_than_gcc_11s_is_refused_and_older_passes() {
    let dir = ScratchDir::new("abi");
    let newer = compile(
        &dir.0,
        "newer_cxx",
        "c++",
        "#include <condition_variable>\n#include <mutex>\nstd::mutex m; std::condition_variable cv; bool ready = true;\nint main() { std::unique_lock<std::mutex> l(m); cv.wait(l, [] { return ready; }); }\n",
        "cpp",
        &[],
    );
    let (ok, text) = check(&[&newer]);
    assert!(!ok && text.contains("GLIBCXX_3.4.30") && text.contains("GCC 11"), "{text}");

    let cxx = compile(
        &dir.0,
        "cxx",
        "c++",
        "#include <iostream>\nint main() { std::cout << 1 << std::endl; }\n",
        "cpp",
        &[],
    );
    let (ok, text) = check(&[&cxx]);
    assert!(ok && text.contains("libstdc++.so.6"), "{text}");

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

/// A zip is checked whole: a library its bootstrap needs passes only when the zip ships it in lib/,
/// and the shipped library is held to the same limits.
#[test]
fn a_zip_may_ship_the_libraries_its_bootstrap_needs() {
    let dir = ScratchDir::new("abi");
    let lib = dir.0.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let so = compile(
        &dir.0,
        "libhello.so",
        "cc",
        "int hello(void) { return 1; }\n",
        "c",
        &["-shared", "-fPIC"],
    );
    std::fs::rename(&so, lib.join("libhello.so")).unwrap();
    let bin = compile(
        &dir.0,
        "bootstrap",
        "cc",
        "int hello(void);\nint main(void) { return hello() - 1; }\n",
        "c",
        &["-L", lib.to_str().unwrap(), "-lhello"],
    );
    let (ok, text) = check(&[&bin]);
    assert!(!ok && text.contains("needs libhello.so"), "alone, its library is unknown:\n{text}");

    let zip = |entries: &[&str]| {
        let out = dir.0.join("f").join("bootstrap.zip");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&out);
        let status =
            Command::new("zip").arg("-q").arg(&out).args(entries).current_dir(&dir.0).status();
        assert!(status.is_ok_and(|s| s.success()), "zip failed (apt-get install zip)");
        out
    };
    let (ok, text) = check(&[&zip(&["bootstrap", "lib/libhello.so"])]);
    assert!(ok && text.contains("f:lib/libhello.so"), "{text}");
    let (ok, text) = check(&[&zip(&["bootstrap"])]);
    assert!(!ok && text.contains("needs libhello.so"), "{text}");
}
