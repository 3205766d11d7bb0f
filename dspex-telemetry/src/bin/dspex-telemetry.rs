//! `dspex-telemetry`, for a service's operators and its build:
//!
//! - `config [--config FILE]`: prints the configuration the stack would run with (every
//!   default filled in, `${VAR}` expanded from the environment), with tokens, passwords and URL
//!   paths redacted as `Debug` shows them.
//! - `dashboard [--config FILE]`: prints the Grafana dashboard (JSON) of the DSPex metric
//!   catalog, with the file's alert thresholds drawn on its panels.
//! - `alert-rules [--config FILE]`: prints the Prometheus alert rules (YAML) of the file's
//!   thresholds over its window.
//!
//! Without `--config`, the defaults. A service with metrics of its own generates both from
//! its own xtask with `dspex_telemetry::generate`.

use std::process::ExitCode;

use dspex_telemetry::{Config, generate};

const USAGE: &str = "usage: dspex-telemetry config|dashboard|alert-rules [--config FILE]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        return usage();
    };
    let config = match rest {
        [] => Ok(Config::default()),
        [flag, path] if flag == "--config" => Config::load(path),
        _ => return usage(),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("dspex-telemetry: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command.as_str() {
        "config" => println!("{config:#?}"),
        "dashboard" => match serde_json::to_string_pretty(&generate::dashboard(&config, &[])) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("dspex-telemetry: {e}");
                return ExitCode::FAILURE;
            }
        },
        "alert-rules" => print!("{}", generate::alert_rules(&config, &[])),
        _ => return usage(),
    }
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}
