//! `hamirrorctl generate-docs --out DIR`: the man pages and shell completions
//! the package installs, made from the same declaration as `--help`.

use super::args::Cli;
use clap::CommandFactory;
use clap_complete::Shell;
use std::io;
use std::path::Path;

/// Writes `out/man/hamirrorctl.1`, one `out/man/hamirrorctl-COMMAND.1` per
/// command, and `out/completions/` for bash, zsh and fish.
pub fn generate(out: &Path) -> io::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    clap_mangen::generate_to(Cli::command(), &man)?;
    let mut cmd = Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "hamirrorctl", &completions)?;
    }
    Ok(())
}
