//! Config loader: any UTF-8 text through `FileConfig::parse`, then `Settings::from_layers`
//! with default flags and an empty environment, must never panic (errors are fine).
//!
//! `api_key_file` is pointed at a path that does not exist, so the fuzzer never reads the
//! machine's files (a `/dev/zero` would hang it); its error path is still exercised.
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use tokentap::cli::Cli;
use tokentap::config::{FileConfig, Settings};

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let Ok(mut file) = FileConfig::parse(text) else {
        return;
    };
    for provider in &mut file.providers {
        if provider.api_key_file.is_some() {
            provider.api_key_file = Some("/nonexistent/tokentap-fuzz/api-key".to_owned());
        }
    }
    let Ok(cli) = Cli::try_parse_from(["tokentap"]) else {
        return;
    };
    let _ = Settings::from_layers(&cli, file, &|_| None);
});
