//! `meshlite backup FILE` and `meshlite restore FILE`: the CLI side of
//! [`meshlite_core::store::backup`] (how the copy stays consistent while `meshlite run` owns the
//! directory, and which replica id a restored store gets, are documented there).
//!
//! Both print their report as one JSON object; a progress bar goes to stderr when it is a
//! terminal. A restore under the backed-up replica id prints a warning on stderr first.

use std::io::IsTerminal as _;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use meshlite_core::store::backup::{self, OriginChoice, Progress};

use super::output::{CliError, print_json};

/// Warning printed before a restore that keeps the backed-up replica id.
const SAME_ORIGIN_WARNING: &str = "warning: --same-origin restores under the backed-up replica id. \
Only do this when the device the backup came from is gone for good and nothing it wrote after \
the backup reached another node: two replicas writing under one id reuse sequence numbers, and \
peers silently drop the second replica's writes. Without --same-origin the restored node gets a \
new id and keeps all data.";

/// `meshlite backup FILE`.
pub fn backup(data: &Path, file: &Path) -> Result<(), CliError> {
    let bar = progress_bar("backup");
    let report = backup::backup(data, file, &mut |p| show(&bar, p))?;
    bar.finish_and_clear();
    print_json(&report)
}

/// `meshlite restore FILE [--same-origin]`.
pub fn restore(data: &Path, file: &Path, same_origin: bool) -> Result<(), CliError> {
    let origin = if same_origin {
        eprintln!("{SAME_ORIGIN_WARNING}");
        OriginChoice::Same
    } else {
        OriginChoice::New
    };
    let bar = progress_bar("restore");
    let report = backup::restore(file, data, origin, &mut |p| show(&bar, p))?;
    bar.finish_and_clear();
    print_json(&report)
}

/// A page-count bar on stderr, hidden when stderr is not a terminal.
fn progress_bar(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{msg:>8} [{bar:30}] {pos}/{len} pages {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

fn show(bar: &ProgressBar, p: Progress) {
    bar.set_length(p.total);
    bar.set_position(p.done);
}
