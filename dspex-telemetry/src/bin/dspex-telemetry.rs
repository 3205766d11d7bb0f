//! `dspex-telemetry config [--config FILE]`: prints the configuration the stack would run
//! with (every default filled in, `${VAR}` expanded from the environment), with tokens,
//! passwords and URL paths redacted as `Debug` shows them. Without `--config`, the defaults.

use std::process::ExitCode;

use dspex_telemetry::Config;

const USAGE: &str = "usage: dspex-telemetry config [--config FILE]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match (command, rest) {
        ("config", []) => print(Ok(Config::default())),
        ("config", [flag, path]) if flag == "--config" => print(Config::load(path)),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn print(config: Result<Config, dspex_telemetry::ConfigError>) -> ExitCode {
    match config {
        Ok(config) => {
            println!("{config:#?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dspex-telemetry: {e}");
            ExitCode::FAILURE
        }
    }
}
