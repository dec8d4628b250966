use clap::Parser;

use super::*;

fn env_with<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

fn load(args: &[&str], toml_text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let mut argv = vec!["tokentap"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("flags parse");
    let file = FileConfig::parse(toml_text).map_err(|(line, message)| ConfigError::Parse {
        path: "test.toml".into(),
        line,
        message,
    })?;
    Settings::from_layers(&cli, file, &env_with(env))
}

#[test]
fn defaults_apply_when_nothing_is_given() {
    let s = load(&["--upstream", "http://127.0.0.1:9"], "", &[]).expect("valid");
    assert_eq!(s.listen.to_string(), "127.0.0.1:8787");
    assert_eq!(s.admin_listen.to_string(), "127.0.0.1:8788");
    assert_eq!(s.max_body, 32 << 20);
    assert_eq!(s.timeouts.connect, Duration::from_secs(10));
    assert_eq!(s.providers.len(), 1);
    assert_eq!(s.providers[0].name, "default");
    assert_eq!(s.providers[0].base_url, "http://127.0.0.1:9");
}

#[test]
fn flag_beats_file_beats_default() {
    let file = r#"
        listen = "127.0.0.1:7000"
        admin_listen = "127.0.0.1:7001"
        idle_timeout = "3s"
        upstream = "http://file.example"
    "#;
    let s = load(&["--listen", "127.0.0.1:6000"], file, &[]).expect("valid");
    assert_eq!(s.listen.to_string(), "127.0.0.1:6000");
    assert_eq!(s.admin_listen.to_string(), "127.0.0.1:7001");
    assert_eq!(s.timeouts.idle, Duration::from_secs(3));
    assert_eq!(s.providers[0].base_url, "http://file.example");
    let s = load(&["--upstream", "http://flag.example/"], file, &[]).expect("valid");
    assert_eq!(s.providers[0].base_url, "http://flag.example");
}

#[test]
fn providers_read_keys_from_the_injected_env() {
    let file = r#"
        [[providers]]
        name = "anthropic"
        base_url = "https://api.anthropic.com"
        models = ["claude-*"]
        api_key_env = "ANTHROPIC_KEY"
        auth_header = "x-api-key"
        headers = { "anthropic-version" = "2023-06-01" }

        [[providers]]
        name = "openai"
        base_url = "https://api.openai.com"
        models = ["gpt-*", "o[0-9]*"]
        include_usage = false
    "#;
    let s = load(&[], file, &[("ANTHROPIC_KEY", "sk-ant-123")]).expect("valid");
    let anthropic = &s.providers[0];
    let credential = anthropic.credential.as_ref().expect("key");
    assert_eq!(credential.header, AuthHeader::XApiKey);
    assert_eq!(credential.value, "sk-ant-123");
    assert!(
        !format!("{s:?}").contains("sk-ant-123"),
        "keys never reach Debug output"
    );
    assert!(anthropic.matches_model("claude-sonnet-4-5"));
    assert!(!anthropic.matches_model("gpt-4o"));
    assert!(s.providers[1].matches_model("o3-mini"));
    assert!(!s.providers[1].include_usage);
    assert_eq!(anthropic.headers[0].0, "anthropic-version");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let text = include_str!("../../config/tokentap.toml");
    let env = [
        ("OPENAI_API_KEY", "sk-test"),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
    ];
    let s = load(&[], text, &env).expect("config/tokentap.toml is valid");
    assert!(s.providers.len() >= 2);
}

fn error_of(args: &[&str], file: &str, env: &[(&str, &str)]) -> String {
    load(args, file, env)
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn bad_configs_name_the_field() {
    assert_eq!(
        error_of(&[], "", &[]),
        "providers: no provider configured: pass --upstream URL, --demo, or add [[providers]] to --config"
    );
    let e = error_of(&["--upstream", "ftp://x"], "", &[]);
    assert!(
        e.starts_with("upstream: `ftp://x` must start with http"),
        "{e}"
    );
    let e = error_of(
        &[],
        "[[providers]]\nname = \"a\"\nbase_url = \"http://x\"\napi_key_env = \"NOPE\"\n",
        &[],
    );
    assert_eq!(
        e,
        "providers[0].api_key_env: environment variable NOPE is not set"
    );
    let e = error_of(
        &[],
        "[[providers]]\nname = \"a\"\nbase_url = \"http://x\"\nmodels = [\"[\"]\n",
        &[],
    );
    assert!(e.starts_with("providers[0].models[0]: `[`"), "{e}");
    let e = error_of(&[], "[[providers]]\nname = \"a\"\n", &[]);
    assert_eq!(e, "providers[0].base_url: is required");
    let e = error_of(
        &["--upstream", "http://x", "--admin-listen", "0.0.0.0:8788"],
        "",
        &[],
    );
    assert!(
        e.starts_with("admin_listen: 0.0.0.0:8788 is not a loopback address"),
        "{e}"
    );
    assert!(
        load(
            &[
                "--upstream",
                "http://x",
                "--admin-listen",
                "0.0.0.0:8788",
                "--insecure-admin"
            ],
            "",
            &[]
        )
        .is_ok()
    );
    assert!(
        load(
            &[
                "--upstream",
                "http://x",
                "--admin-listen",
                "0.0.0.0:8788",
                "--admin-token",
                "t"
            ],
            "",
            &[]
        )
        .is_ok()
    );
}

#[test]
fn toml_errors_are_one_line_with_a_line_number() {
    let e = error_of(&[], "listen = \"127.0.0.1:1\"\nlisten_typo = 3\n", &[]);
    assert!(
        e.starts_with("config file test.toml, line 2: unknown field `listen_typo`"),
        "{e}"
    );
    assert!(!e.contains('\n'));
    let e = error_of(&[], "idle_timeout = \"soon\"\n", &[]);
    assert!(
        e.contains("line 1") && e.contains("is not a duration"),
        "{e}"
    );
}

#[test]
fn demo_points_the_default_provider_first() {
    let file = "[[providers]]\nname = \"openai\"\nbase_url = \"http://x\"\n";
    let mut s = load(&["--demo"], file, &[]).expect("valid");
    s.point_default_provider_at("http://127.0.0.1:5555")
        .expect("valid url");
    assert_eq!(s.providers[0].name, "default");
    assert_eq!(s.providers[0].base_url, "http://127.0.0.1:5555");
    assert_eq!(s.providers[1].name, "openai");
}
