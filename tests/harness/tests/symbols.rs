//! The production handler `.so` references only symbols that will be there
//! when tcmu-runner 1.5.4 `dlopen`s it: glibc/libgcc (versioned), the
//! runner's own exports, and libtcmu.so.2's. Anything else fails the load.

use hamirror_harness::load::{build_fault_injection_handler, cargo_build_handler, target_dirs, Profile};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `nm -D` of `path` with `flag`: (kind letter, name without @version, name as printed).
fn nm(path: &Path, flag: &str) -> Option<Vec<(char, String, String)>> {
    let out = Command::new("nm").args(["-D", flag]).arg(path).output().ok()?;
    assert!(out.status.success(), "nm {flag} {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace().rev();
                let (name, kind) = (f.next()?, f.next()?.chars().next()?);
                Some((kind, name.split('@').next().unwrap().to_owned(), name.to_owned()))
            })
            .collect(),
    )
}

/// Names exported by the real tcmu-runner and libtcmu.so.2, or `None` to skip.
fn runner_exports() -> Option<BTreeSet<String>> {
    let bin = workspace_root().join(".deps/tcmu-bin");
    let files = [bin.join("usr/bin/tcmu-runner"), bin.join("usr/lib/x86_64-linux-gnu/libtcmu.so.2")];
    let mut names = BTreeSet::new();
    for f in &files {
        if !f.is_file() {
            eprintln!(
                "\n*** SKIPPED symbol check: {} is missing; run scripts/setup-host.sh ***\n",
                f.display()
            );
            return None;
        }
        names.extend(nm(f, "--defined-only")?.into_iter().map(|(_, name, _)| name));
    }
    Some(names)
}

/// Undefined symbols of `so` that nothing will provide at load time.
fn unresolvable(so: &Path, exports: &BTreeSet<String>) -> Vec<String> {
    let undefined = nm(so, "--undefined-only").expect("nm is installed");
    undefined
        .into_iter()
        .filter(|(kind, name, full)| {
            let system = full.contains("@GLIBC_") || full.contains("@GCC_");
            let weak = *kind == 'w' || *kind == 'v';
            !(system || weak || exports.contains(name))
        })
        .map(|(_, _, full)| full)
        .collect()
}

fn check(so: &Path, exports: &BTreeSet<String>) {
    assert!(so.is_file(), "{} was not built", so.display());
    let bad = unresolvable(so, exports);
    assert!(bad.is_empty(), "{} needs symbols tcmu-runner 1.5.4 does not provide: {bad:?}", so.display());
    let defined = nm(so, "--defined-only").unwrap();
    assert!(defined.iter().any(|(k, n, _)| *k == 'T' && n == "handler_init"), "handler_init is not exported");
}

#[test]
fn the_production_handler_needs_only_what_tcmu_runner_provides() {
    let Some(exports) = runner_exports() else { return };
    for not_exported in ["tcmur_handle_caw", "tcmur_handle_writesame", "tcmu_event_name"] {
        assert!(!exports.contains(not_exported), "{not_exported} is exported after all; update LIO-VM.md");
    }
    let so = cargo_build_handler(&target_dirs().0, &[], Profile::of_this_test());
    check(&so, &exports);
}

#[test]
fn the_fault_injection_build_needs_only_what_tcmu_runner_provides() {
    let Some(exports) = runner_exports() else { return };
    let so = build_fault_injection_handler();
    check(&so, &exports);
}

/// Every symbol of `so`, demangled (`nm -C`).
fn all_symbols(so: &Path) -> String {
    let out = Command::new("nm").arg("-C").arg(so).output().expect("nm is installed");
    assert!(out.status.success(), "nm -C {}", so.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Test machinery compiles away: the production handler exports no test
/// hook and holds no fault-injection code, while the fault-injection build
/// has both (so this test can tell them apart).
#[test]
fn the_production_handler_carries_no_test_machinery() {
    let production = all_symbols(&cargo_build_handler(&target_dirs().0, &[], Profile::of_this_test()));
    let testing = all_symbols(&build_fault_injection_handler());
    for name in ["hamirror_test_control", "FaultInjector", "FaultyBackend"] {
        assert!(testing.contains(name), "the fault-injection build lacks {name}: is this check still right?");
        assert!(!production.contains(name), "the production handler contains {name}");
    }
}
