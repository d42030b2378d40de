//! Shell completion scripts and the manual page, generated from the clap
//! definitions in [`crate::args`] (so they never drift from `--help`).

use std::io::Write;

use clap::CommandFactory;

use crate::args::{Cli, Shell};

/// The program name completions and the manual page are for.
const BIN: &str = "comptoir";

/// Write the completion script for `shell`. It is made in memory first:
/// `clap_complete` panics when its writer fails (a closed pipe), and a
/// failed write here is an error like any other.
pub fn completions(shell: Shell, out: &mut dyn Write) -> std::io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut Cli::command(),
        BIN,
        &mut script,
    );
    out.write_all(&script)
}

/// Write the manual page (roff, section 1).
pub fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command().name(BIN)).render(out)
}
