//! `hamirrorctl`: administer hamirror volumes (see `hamirrorctl --help`).

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(hamirror_ctl::cli::run(std::env::args_os().skip(1)))
}
