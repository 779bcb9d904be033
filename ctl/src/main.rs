//! `hamirrorctl`: administer hamirror volumes (see `hamirrorctl --help`).

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::ExitCode::from(hamirror_ctl::cli::run(&args))
}
