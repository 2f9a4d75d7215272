//! `fba_server <port>`: one node of the replicated wallet store. See `--help`.

use clap::Parser;
use fba::config::ServerArgs;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = ServerArgs::parse();
    if args.verify {
        return match fba::server::verify(&args.data_dir, args.port) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fba_server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("fba_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    }) {
        eprintln!("fba_server: cannot install the Ctrl-C handler: {e}");
        return ExitCode::FAILURE;
    }
    match fba::server::run(config, stop_rx) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fba_server: {e}");
            ExitCode::FAILURE
        }
    }
}
