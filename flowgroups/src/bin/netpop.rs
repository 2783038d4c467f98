//! The `netpop` command. Only `help` exists today; `up`, `down`, `stat`, `capture` and
//! `run` come with the flowgroups and shim work (see README).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("help" | "-h" | "--help") => {
            println!("netpop — a userspace TCP/IP stack for multicore machines\n");
            println!("usage: netpop <command>\n");
            println!("commands (not built yet): up, down, stat, capture, run");
            ExitCode::SUCCESS
        }
        Some(cmd) => {
            eprintln!("netpop: '{cmd}' is not built yet; see README.md for what exists today");
            ExitCode::from(2)
        }
    }
}
