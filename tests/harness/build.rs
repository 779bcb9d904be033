//! Links the C half of the fake runner (the variadic log functions) into every
//! test executable, and exports the executable's symbols dynamically so that
//! the `dlopen`ed handler resolves its tcmu-runner and libtcmu references
//! against this process, as it would against the real runner.

fn main() {
    println!("cargo:rerun-if-changed=c/tcmu_log.c");
    let objects = cc::Build::new().file("c/tcmu_log.c").warnings(true).compile_intermediates();
    for o in objects {
        // Passed as plain objects (not an archive) so nothing is dropped for
        // being unreferenced at link time: only the handler calls them.
        println!("cargo:rustc-link-arg={}", o.display());
    }
    println!("cargo:rustc-link-arg=-Wl,--export-dynamic");
}
