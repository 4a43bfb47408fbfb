//! Finds libtenantcache and tells rustc how to link it.
//!
//! - `TENANTCACHE_LIB_DIR=DIR`: link the library in DIR (a build tree's
//!   output directory, or an install's libdir). It wins over pkg-config, so
//!   that a build tree under test is never silently replaced by an installed
//!   (possibly older) library. Binaries of this package get an rpath to DIR.
//! - otherwise the `pkg-config` command (or `$PKG_CONFIG`): `pkg-config --libs
//!   tenantcache`, as the installed `tenantcache.pc` describes it.
//! - `TENANTCACHE_STATIC=1`: link `libtenantcache.a` (which the CMake build
//!   and the .deb install beside the shared library) and the C++ runtime it
//!   needs, so that the program does not load libtenantcache.so at run time.
//!
//! Anything else is a build error that says what to set.
use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    for var in [
        "TENANTCACHE_LIB_DIR",
        "TENANTCACHE_STATIC",
        "PKG_CONFIG",
        "PKG_CONFIG_PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let link_static = match env::var("TENANTCACHE_STATIC").as_deref() {
        Err(_) | Ok("") | Ok("0") => false,
        Ok("1") => true,
        Ok(other) => fail(&format!(
            "TENANTCACHE_STATIC={other:?}: set it to 1 (link libtenantcache.a) or 0 / unset (link the shared library)"
        )),
    };

    if let Some(dir) = env::var_os("TENANTCACHE_LIB_DIR") {
        from_lib_dir(Path::new(&dir), link_static);
    } else {
        from_pkg_config(link_static);
    }
}

fn from_lib_dir(dir: &Path, link_static: bool) {
    let file = if link_static {
        "libtenantcache.a"
    } else {
        "libtenantcache.so"
    };
    if !dir.join(file).exists() {
        fail(&format!(
            "TENANTCACHE_LIB_DIR={}: there is no {file} there (build the CMake target {} or point it at the directory that holds it)",
            dir.display(),
            if link_static { "tenantcache_static" } else { "tenantcache" }
        ));
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    if link_static {
        link_static_runtime();
    } else {
        println!("cargo:rustc-link-lib=dylib=tenantcache");
        // Tests, examples and binaries of this package run without
        // LD_LIBRARY_PATH; dependents of the crate link it as usual.
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}

fn from_pkg_config(link_static: bool) {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let mut cmd = Command::new(&pkg_config);
    cmd.arg("--libs");
    if link_static {
        cmd.arg("--static");
    }
    cmd.arg("tenantcache");
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => fail(&format!(
            "cannot run {pkg_config} ({e}) and TENANTCACHE_LIB_DIR is not set: install pkg-config and libtenantcache \
             (the tenantcache .deb), or set TENANTCACHE_LIB_DIR to the directory holding libtenantcache.so"
        )),
    };
    if !out.status.success() {
        fail(&format!(
            "{pkg_config} --libs tenantcache failed: {}; install libtenantcache (the tenantcache .deb), add the \
             directory of its tenantcache.pc to PKG_CONFIG_PATH, or set TENANTCACHE_LIB_DIR",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let libs = String::from_utf8_lossy(&out.stdout).into_owned();
    for token in libs.split_whitespace() {
        if let Some(dir) = token.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = token.strip_prefix("-l") {
            if lib == "tenantcache" {
                let kind = if link_static { "static" } else { "dylib" };
                println!("cargo:rustc-link-lib={kind}=tenantcache");
            } else {
                println!("cargo:rustc-link-lib=dylib={lib}");
            }
        } else {
            println!("cargo:rustc-link-arg={token}");
        }
    }
}

// What libtenantcache.a needs besides itself (tenantcache.pc's Libs.private).
fn link_static_runtime() {
    println!("cargo:rustc-link-lib=static=tenantcache");
    println!("cargo:rustc-link-lib=dylib=stdc++");
    println!("cargo:rustc-link-lib=dylib=pthread");
}

fn fail(message: &str) -> ! {
    eprintln!("tenantcache build.rs: {message}");
    std::process::exit(1);
}
