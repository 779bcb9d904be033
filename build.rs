//! Generates Rust bindings for the part of tcmu-runner 1.5.4's handler API that
//! hamirror uses, from tcmu-runner's own headers (never copied into the repo).
//!
//! The headers are looked up in `$TCMU_RUNNER_SRC`, or in `.deps/tcmu-runner`,
//! where `scripts/setup-host.sh` unpacks Debian's source package. The output
//! lands in `$OUT_DIR/tcmu_sys.rs` and is `include!`d by `ffi/sys.rs`.
//!
//! Only symbols that tcmu-runner 1.5.4 or libtcmu.so.2 really export are bound
//! (see `LIO-VM.md` §6): a handler that references anything else fails to
//! `dlopen`. The harness's symbol check enforces this on the built `.so`.

use std::env;
use std::path::{Path, PathBuf};

/// The structs the handler touches, with whatever they contain.
const TYPES: &[&str] = &["tcmur_handler", "tcmur_cmd", "tcmulib_cmd", "tcmulib_cfg_info", "iovec"];

/// Exported by the tcmu-runner executable (`main-syms.txt`, minus the three
/// names it lists but does not export) or by libtcmu.so.2.
const FUNCTIONS: &[&str] = &[
    "tcmur_register_handler",
    "tcmur_cmd_complete",
    "tcmur_dev_set_private",
    "tcmur_dev_get_private",
    "tcmur_dev_update_size",
    "tcmu_dev_get_cfgstring",
    "tcmu_dev_get_num_lbas",
    "tcmu_dev_get_block_size",
    "tcmu_dev_set_write_cache_enabled",
    "tcmu_dev_set_unmap_enabled",
    "tcmu_dev_set_unmap_gran_align",
    "tcmu_sense_set_info",
    "tcmu_err_message",
    "tcmu_warn_message",
    "tcmu_info_message",
    "tcmu_dbg_message",
];

/// `TCMU_STS_*` status codes and the size of a command's sense buffer.
const VARS: &[&str] = &["TCMU_STS_.*", "SENSE_BUFFERSIZE"];

/// The headers that declare them: the handler API, libtcmu's, and the two
/// runner-internal headers that declare the private-data and resize calls.
const HEADERS: &str = "#include \"tcmu-runner.h\"\n\
                       #include \"libtcmu.h\"\n\
                       #include \"tcmur_device.h\"\n\
                       #include \"tcmur_cmd_handler.h\"\n";

/// Where Debian keeps libclang when clang-sys does not find it by itself.
const LIBCLANG_FALLBACK: &str = "/usr/lib/llvm-14/lib";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TCMU_RUNNER_SRC");
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");

    let src = tcmu_source_dir();
    for header in [
        "tcmu-runner.h",
        "libtcmu.h",
        "libtcmu_common.h",
        "libtcmu_log.h",
        "tcmur_device.h",
        "tcmur_cmd_handler.h",
    ] {
        println!("cargo:rerun-if-changed={}", src.join(header).display());
    }
    use_libclang_fallback();

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    generate(&src)
        .write_to_file(out.join("tcmu_sys.rs"))
        .unwrap_or_else(|e| panic!("cannot write the bindings to {}: {e}", out.display()));
}

/// The tcmu-runner source tree, or a build failure that says how to get it.
fn tcmu_source_dir() -> PathBuf {
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let src =
        env::var_os("TCMU_RUNNER_SRC").map(PathBuf::from).unwrap_or_else(|| root.join(".deps/tcmu-runner"));
    if !src.join("tcmu-runner.h").is_file() {
        panic!(
            "\n\ntcmu-runner 1.5.4's headers are not in {}.\n\
             Run `scripts/setup-host.sh` once (it fetches Debian's tcmu-runner source \
             package into .deps/), or point TCMU_RUNNER_SRC at a tcmu-runner 1.5.4 source tree.\n\n",
            src.display()
        );
    }
    src
}

/// Lets clang-sys find Debian's libclang when nothing else tells it where.
fn use_libclang_fallback() {
    if env::var_os("LIBCLANG_PATH").is_none() && Path::new(LIBCLANG_FALLBACK).join("libclang.so").exists() {
        // Build scripts are single-threaded; clang-sys reads this when bindgen loads libclang.
        env::set_var("LIBCLANG_PATH", LIBCLANG_FALLBACK);
    }
}

fn generate(src: &Path) -> bindgen::Bindings {
    let mut builder = bindgen::Builder::default()
        .header_contents("hamirror_tcmu.h", HEADERS)
        .clang_arg(format!("-I{}", src.display()))
        .clang_arg(format!("-I{}", src.join("ccan").display()))
        .default_enum_style(bindgen::EnumVariation::Consts)
        .translate_enum_integer_types(true)
        .layout_tests(true)
        .derive_default(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for t in TYPES {
        builder = builder.allowlist_type(t);
    }
    for f in FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    for v in VARS {
        builder = builder.allowlist_var(v);
    }
    builder.generate().unwrap_or_else(|e| {
        panic!(
            "bindgen failed on {}: {e}\n\
             If libclang is missing, run `scripts/setup-host.sh` or set LIBCLANG_PATH.",
            src.display()
        )
    })
}
