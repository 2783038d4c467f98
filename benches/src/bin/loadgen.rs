//! `loadgen`: HTTP/1.1 load against one URL (see `netpop_benches::loadgen`). Prints a text
//! summary, or one JSON object with `--json`; a progress line while it runs when stdout is
//! a terminal.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use netpop_benches::loadgen::{Command, Snapshot, USAGE, parse_args, run};

fn main() -> ExitCode {
    let (config, json) = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run { config, json }) => (config, json),
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("loadgen: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let live = !json && std::io::stdout().is_terminal();
    let mut previous =
        Snapshot { elapsed: Default::default(), completed: 0, failed: 0, connections: 0 };
    let mut shown = false;
    let result = run(&config, |snapshot| {
        if live {
            let mut stdout = std::io::stdout().lock();
            // \r and "erase to end of line" redraw the one line in place.
            let _ = write!(stdout, "\r\x1b[K{}", snapshot.progress_line(&previous));
            let _ = stdout.flush();
            shown = true;
        }
        previous = *snapshot;
    });
    let mut stdout = std::io::stdout().lock();
    if shown {
        let _ = write!(stdout, "\r\x1b[K");
    }
    // A reader that went away (`loadgen ... | head`) is not an error of the run.
    let _ = match result {
        Ok(summary) if json => writeln!(stdout, "{}", summary.to_json()),
        Ok(summary) => write!(stdout, "{summary}"),
        Err(error) => {
            eprintln!("loadgen: {error}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::SUCCESS
}
