//! Shell completion scripts and the manual page, generated from the clap
//! definitions in [`crate::args`] (so they never drift from `--help`).

use std::io::Write;

use clap::CommandFactory;

use crate::args::{Cli, Shell};

/// The program name completions and the manual page are for.
const BIN: &str = "comptoir";

/// Write the completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut Cli::command(),
        BIN,
        out,
    );
}

/// Write the manual page (roff, section 1).
pub fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command().name(BIN)).render(out)
}
