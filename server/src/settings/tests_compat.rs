//! The walk over every setting of the reference (`server/tests/fixtures/reference-settings.txt`):
//! each is honoured, refused or noted, as the fixture and [`super::compat::REFERENCE`] both say.

use std::collections::HashMap;

use clap::Parser;

use super::compat::{REFERENCE, Treatment};
use super::*;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

const FIXTURE: &str = include_str!("../../tests/fixtures/reference-settings.txt");

/// Resolves with no flags and `env` over a base that names the rules the reference's way.
fn resolve(env: &[(String, String)]) -> Result<Settings, SettingsError> {
    let cli = Cli::try_parse_from(["sluice"]).expect("no flags");
    let mut all: HashMap<String, String> = HashMap::from([("RUNTIME_ROOT".into(), "/base".into())]);
    all.extend(env.iter().cloned());
    Settings::resolve(cli.serve, |k| all.get(k).cloned())
}

struct Entry {
    name: String,
    treatment: String,
    sample: String,
    companions: Vec<(String, String)>,
}

fn entries(files: &HashMap<&str, String>) -> Vec<Entry> {
    let fill = |s: &str| {
        files
            .iter()
            .fold(s.to_owned(), |s, (k, v)| s.replace(&format!("{{{k}}}"), v))
    };
    FIXTURE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next().expect("a name").to_owned();
            let treatment = words.next().expect("a treatment").to_owned();
            let sample = fill(words.next().expect("a sample"));
            let companions = words
                .map(|w| {
                    let (k, v) = w.split_once('=').expect("COMPANION=VALUE");
                    (k.to_owned(), fill(v))
                })
                .collect();
            Entry {
                name,
                treatment,
                sample,
                companions,
            }
        })
        .collect()
}

#[test]
fn every_reference_setting_is_honoured_refused_or_noted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = sluice_tests::tls::TestCa::new(dir.path(), "");
    let (cert, key) = ca.leaf(&["localhost"], "server", false);
    let path = |p: &std::path::Path| p.to_str().expect("UTF-8 path").to_owned();
    let files = HashMap::from([
        ("cert", path(&cert)),
        ("key", path(&key)),
        ("ca", path(&ca.cert)),
    ]);
    let entries = entries(&files);

    // The table and the fixture list the same names, in the same order, the same way.
    let table: Vec<&str> = REFERENCE.iter().map(|(n, _)| *n).collect();
    let fixture: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(table, fixture);
    assert_eq!(
        fixture.len(),
        114,
        "settings.go at f2fb157 has 114 settings"
    );

    for (entry, (_, treatment)) in entries.iter().zip(REFERENCE) {
        let name = &entry.name;
        let without = resolve(&entry.companions);
        let mut env = entry.companions.clone();
        env.push((name.clone(), entry.sample.clone()));
        let with = resolve(&env);
        match (entry.treatment.as_str(), treatment) {
            ("honoured", Treatment::Honoured) => {
                let settings = with.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(
                    settings.reference_notes.is_empty(),
                    "{name}: {:?}",
                    settings.reference_notes
                );
                assert_ne!(
                    format!("{:?}", Ok::<_, SettingsError>(settings)),
                    format!("{without:?}"),
                    "{name}={} changed nothing",
                    entry.sample
                );
            }
            ("refused", Treatment::Limited { accepts, .. }) => {
                assert!(
                    !accepts(&entry.sample),
                    "{name}: the sample is an accepted value"
                );
                let error = with.expect_err(name).to_string();
                assert!(error.starts_with(&format!("{name}=")), "{error}");
                assert!(without.is_ok(), "{name}: {without:?}");
            }
            ("noted", Treatment::Noted(_)) => {
                let mut settings = with.unwrap_or_else(|e| panic!("{name}: {e}"));
                let notes = std::mem::take(&mut settings.reference_notes);
                assert_eq!(notes.len(), 1, "{name}: {notes:?}");
                assert!(notes[0].starts_with(&format!("{name} is set")), "{notes:?}");
                assert_eq!(Ok(settings), without, "{name} changed a setting");
            }
            (fixture, table) => panic!("{name}: the fixture says {fixture}, the table {table:?}"),
        }
    }
}

#[test]
fn tracing_enabled_needs_an_endpoint_and_an_accepted_value_of_a_limited_setting_passes() {
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let error = resolve(&env(&[("TRACING_ENABLED", "true")])).expect_err("no endpoint");
    assert!(
        error.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{error}"
    );
    let traced = resolve(&env(&[
        ("TRACING_ENABLED", "true"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
        ("TRACING_EXPORTER_PROTOCOL", "grpc"),
    ]))
    .expect("valid");
    assert_eq!(
        traced.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4317")
    );
    for (name, value) in [
        ("USE_STATSD", "false"),
        ("CONFIG_TYPE", "FILE"),
        ("REDIS_SOCKET_TYPE", "tcp"),
        ("REDIS_PERSECOND", "false"),
    ] {
        resolve(&env(&[(name, value)])).unwrap_or_else(|e| panic!("{name}={value}: {e}"));
    }
}

#[test]
fn go_durations_parse_as_the_reference_reads_them() {
    use super::reference::parse_go_duration;
    use std::time::Duration;
    assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
    assert_eq!(parse_go_duration("2us"), Ok(Duration::from_micros(2)));
    for bad in ["", "10", "1d", "-1s", "h", "1..5s", "1e99999h"] {
        assert!(parse_go_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_settings_doc_lists_every_reference_setting_as_the_code_treats_it() {
    let doc = include_str!("../../../docs/settings.md");
    for (name, treatment) in REFERENCE {
        let kind = match treatment {
            Treatment::Honoured => "honoured",
            Treatment::Limited { .. } => "refused",
            Treatment::Noted(_) => "noted",
        };
        let row = format!("| `{name}` | {kind} |");
        assert!(doc.contains(&row), "docs/settings.md has no row {row}");
    }
}
