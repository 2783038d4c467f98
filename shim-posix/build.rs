//! Compiles `csrc/varargs.c`: the C-variadic libc entry points (`fcntl`, `ioctl`, `execl`
//! ...) that stable Rust cannot define. The C code only unpacks the `...` arguments and calls
//! non-variadic Rust functions; the exported symbols themselves are Rust trampolines (see
//! `src/ffi/varargs.rs`) so that the cdylib's export list contains them.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cc = env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let src = "csrc/varargs.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CC");
    let obj = out.join("varargs.o");
    let status = Command::new(&cc)
        .args(["-c", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"])
        .arg(src)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(status.success(), "compiling {src} failed");
    let lib = out.join("libnetpop_varargs.a");
    let _ = std::fs::remove_file(&lib);
    let status = Command::new("ar")
        .arg("crs")
        .arg(&lib)
        .arg(&obj)
        .status()
        .unwrap_or_else(|e| panic!("cannot run `ar`: {e}"));
    assert!(status.success(), "archiving {src} failed");
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static:+whole-archive=netpop_varargs");
}
