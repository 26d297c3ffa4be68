use std::fs;
use std::path::Path;

use super::*;

fn errors_of(result: Result<RuleSet, ConfigErrors>) -> String {
    match result {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.to_string(),
    }
}

const A: &str =
    "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: 1}\n";
const B: &str =
    "domain: d\ndescriptors:\n  - key: b\n    rate_limit: {unit: minute, requests_per_unit: 2}\n";

#[test]
fn directory_load_order_and_skips() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    fs::write(p.join("b.yml"), B.replace("domain: d", "domain: e")).unwrap();
    fs::write(p.join("a.yaml"), A).unwrap();
    fs::write(p.join(".hidden.yaml"), "garbage: [").unwrap();
    fs::write(p.join("notes.txt"), "garbage: [").unwrap();
    fs::create_dir(p.join("sub.yaml")).unwrap();
    let rules = load(p, &LoadOptions::default()).unwrap();
    assert_eq!(rules.sources, [p.join("a.yaml"), p.join("b.yml")]);
    assert!(rules.lookup("d", &[("a", "x")]).is_some());
    assert!(rules.lookup("e", &[("b", "x")]).is_some());
}

#[cfg(unix)]
#[test]
fn kubernetes_configmap_layout() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let data = p.join("..2026_01_01_00_00_00.1");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("rules.yaml"), A).unwrap();
    symlink("..2026_01_01_00_00_00.1", p.join("..data")).unwrap();
    symlink("..data/rules.yaml", p.join("rules.yaml")).unwrap();
    let rules = load(p, &LoadOptions::default()).unwrap();
    assert_eq!(rules.sources, [p.join("rules.yaml")]);
    assert!(rules.lookup("d", &[("a", "x")]).is_some());
}

#[test]
fn empty_directory_is_an_empty_rule_set() {
    let dir = tempfile::tempdir().unwrap();
    let rules = load(dir.path(), &LoadOptions::default()).unwrap();
    assert!(rules.domains.is_empty());
    assert!(rules.sources.is_empty());
    assert_eq!(rules.dump, "");
}

#[test]
fn missing_path_is_an_io_error() {
    let err = load(
        Path::new("/nonexistent/rules.yaml"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err.0[..], [ConfigError::Io { .. }]), "{err}");
    assert!(err.to_string().starts_with("/nonexistent/rules.yaml: "));
}

#[test]
fn duplicate_domain_names_both_files() {
    let files = [(Path::new("one.yaml"), A), (Path::new("two.yaml"), B)];
    assert_eq!(
        errors_of(parse_many(&files, &LoadOptions::default())),
        "two.yaml:1:9: duplicate domain 'd': already defined at one.yaml:1:9 (enable domain \
         merging to combine files of one domain)"
    );
}

#[test]
fn merged_domains() {
    let merge = LoadOptions {
        merge_domains: true,
        ..Default::default()
    };
    let files = [(Path::new("one.yaml"), A), (Path::new("two.yaml"), B)];
    let rules = parse_many(&files, &merge).unwrap();
    assert!(rules.lookup("d", &[("a", "x")]).is_some());
    assert!(rules.lookup("d", &[("b", "x")]).is_some());
    assert_eq!(
        rules.dump, "d.a: 1 per SECOND\nd.b: 2 per MINUTE\n",
        "sorted by stats name"
    );

    // No deep merge: the same top-level descriptor in two files is a duplicate.
    let files = [(Path::new("one.yaml"), A), (Path::new("again.yaml"), A)];
    assert_eq!(
        errors_of(parse_many(&files, &merge)),
        "again.yaml:3:10: duplicate descriptor 'd.a': already defined at one.yaml:3:10"
    );
}

#[test]
fn rule_fields_are_per_node() {
    let rules = parse_str(
        "f.yaml",
        r#"
domain: d
descriptors:
  - key: parent
    shadow_mode: true
    quota_mode: true
    detailed_metric: true
    rate_limit: { unit: hour, requests_per_unit: 3 }
    descriptors:
      - key: child
        value: "c*"
        share_threshold: true
        value_to_metric: true
        rate_limit: { unlimited: true, name: child }
"#,
    )
    .unwrap();
    let parent = rules.lookup("d", &[("parent", "p")]).unwrap();
    assert!(parent.shadow_mode && parent.quota_mode && parent.detailed_metric);
    let child = rules
        .lookup("d", &[("parent", "p"), ("child", "c1")])
        .unwrap();
    assert!(!child.shadow_mode && !child.quota_mode && !child.detailed_metric);
    assert_eq!(
        child.limit,
        Limit::Unlimited {
            name: Some("child".into())
        }
    );
    assert_eq!(&*child.stat_key, "d.parent.child_c*");
    assert_eq!(
        child.levels,
        [
            Level {
                key: "parent".into(),
                value: None,
                share_threshold: false,
                value_to_metric: false,
            },
            Level {
                key: "child".into(),
                value: Some("c*".into()),
                share_threshold: true,
                value_to_metric: true,
            },
        ]
    );
    assert_eq!(&*child.domain, "d");
    assert_eq!(
        rules.dump,
        "d.parent: 3 per HOUR, shadow_mode, quota_mode, detailed_metric\n\
         d.parent.child_c*: unlimited name=child, share_threshold, value_to_metric\n"
    );
}

#[test]
fn accepts_what_the_reference_accepts() {
    // Numeric and boolean-looking values are strings by their text; YAML 1.1 booleans; `metadata`;
    // a missing `requests_per_unit` (0); an empty value (a bare key); anchors and merge keys; an
    // unlimited rule with a stray `requests_per_unit`.
    let rules = parse_str(
        "ok.yaml",
        r#"
domain: 42
descriptors:
  - key: status
    value: 200
    shadow_mode: yes
    metadata: { owner: team-a, tags: [x, y] }
    rate_limit: &lim { unit: SECOND, requests_per_unit: 1_000 }
  - key: zero
    value: ""
    rate_limit: { unit: Week }
  - key: again
    rate_limit: { <<: *lim, name: again }
  - key: free
    rate_limit: { unlimited: on, requests_per_unit: 5 }
"#,
    )
    .unwrap();
    let r = rules.lookup("42", &[("status", "200")]).unwrap();
    assert!(r.shadow_mode);
    assert_eq!(r.limit.limits(), [RateLimit::fixed(1000, Unit::Second)]);
    let z = rules.lookup("42", &[("zero", "anything")]).unwrap();
    assert_eq!(z.limit.limits(), [RateLimit::fixed(0, Unit::Week)]);
    let again = rules.lookup("42", &[("again", "x")]).unwrap();
    let mut named = RateLimit::fixed(1000, Unit::Second);
    named.name = Some("again".into());
    assert_eq!(again.limit.limits(), [named]);
    let free = rules.lookup("42", &[("free", "x")]).unwrap();
    assert_eq!(free.limit, Limit::Unlimited { name: None });
}

#[test]
fn errors_table() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "empty file",
            "",
            "t.yaml:1:1: the file is empty: a rule file needs a `domain`",
        ),
        (
            "not a mapping",
            "- a\n",
            "t.yaml:1:1: a rule file must be a mapping with `domain` and `descriptors`, found a list",
        ),
        (
            "missing domain",
            "descriptors: []\n",
            "t.yaml:1:1: missing required field `domain`",
        ),
        (
            "empty domain",
            "domain: ''\n",
            "t.yaml:1:9: `domain` must not be empty",
        ),
        (
            "null domain",
            "domain:\n",
            "t.yaml:1:7: `domain` must not be empty",
        ),
        (
            "domain is a list",
            "domain: [a]\n",
            "t.yaml:1:9: `domain` must be a string, found a list",
        ),
        (
            "descriptors not a list",
            "domain: d\ndescriptors: {key: a}\n",
            "t.yaml:2:14: `descriptors` must be a list of descriptors, found a mapping",
        ),
        (
            "descriptor not a mapping",
            "domain: d\ndescriptors: [a]\n",
            "t.yaml:2:15: each entry of `descriptors` must be a mapping with a `key`, found a scalar",
        ),
        (
            "missing key",
            "domain: d\ndescriptors:\n  - value: v\n",
            "t.yaml:3:5: descriptor is missing `key`",
        ),
        (
            "duplicate field",
            "domain: d\ndomain: e\n",
            "t.yaml:2:1: duplicate field `domain` (first given at line 1, column 1)",
        ),
        (
            "non-scalar field name",
            "domain: d\n[a]: 1\n",
            "t.yaml:2:1: field names must be plain strings, found a list",
        ),
        (
            "rate_limit empty",
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n",
            "t.yaml:4:15: `rate_limit` must be a mapping with `unit` and `requests_per_unit` (or \
             `unlimited: true`), found nothing",
        ),
        (
            "missing unit",
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {requests_per_unit: 1}\n",
            "t.yaml:4:17: `rate_limit` needs a `unit` (or `unlimited: true`)",
        ),
        (
            "unit unknown is not a unit",
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: unknown}\n",
            "t.yaml:4:24: unknown unit 'unknown'; expected one of: second, minute, hour, day, \
             week, month, year",
        ),
        (
            "quoted bool",
            "domain: d\ndescriptors:\n  - key: k\n    shadow_mode: 'true'\n",
            "t.yaml:4:18: `shadow_mode` must be true or false, found the quoted string \"true\"",
        ),
        (
            "bool word",
            "domain: d\ndescriptors:\n  - key: k\n    quota_mode: maybe\n",
            "t.yaml:4:17: `quota_mode` must be true or false, found 'maybe'",
        ),
        (
            "quoted count",
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: '5'}\n",
            "t.yaml:4:51: `requests_per_unit` must be an integer, found the quoted string \"5\"",
        ),
        (
            "metadata list",
            "domain: d\ndescriptors:\n  - key: k\n    metadata: [a]\n",
            "t.yaml:4:15: `metadata` must be a mapping, found a list",
        ),
        (
            "replaces not a list",
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, replaces: x}\n",
            "t.yaml:4:42: `replaces` must be a list of `name:` entries, found a scalar",
        ),
        (
            "unknown field in replaces",
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, replaces: [{name: a, key: b}]}\n",
            "t.yaml:4:53: misplaced field `key` in a `replaces` entry: it belongs on a descriptor \
             (an entry of `descriptors`)",
        ),
        (
            "second document",
            "domain: d\n---\ndomain: e\n",
            "t.yaml:2:1: invalid YAML: a rule file holds exactly one YAML document; found a second one",
        ),
        (
            "undefined alias",
            "domain: *nope\n",
            "t.yaml:1:9: invalid YAML: while parsing node, found unknown anchor",
        ),
    ];
    let mut wrong = Vec::new();
    for (name, text, want) in cases {
        let got = errors_of(parse_str("t.yaml", text));
        if got != *want {
            wrong.push(format!("{name}:\n  got:  {got}\n  want: {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn domain_failure_mode_and_shard_by() {
    let text = "domain: d\nfailure_mode: local\nshard_by: org\ndescriptors:\n  - key: org\n    \
                rate_limit: {unit: second, requests_per_unit: 1}\n";
    let rules = parse_str("f.yaml", text).unwrap();
    let o = &rules.options["d"];
    assert_eq!(o.failure_mode, Some(crate::storage::FailureMode::Local));
    assert_eq!(o.shard_by.as_deref(), Some("org"));
    assert!(
        rules
            .dump
            .contains("domain d: failure_mode=local shard_by=org")
    );
    // A domain without them has no entry.
    assert!(parse_str("a.yaml", A).unwrap().options.is_empty());

    let bad = "domain: d\nfailure_mode: retry\ndescriptors: []\n";
    assert_eq!(
        errors_of(parse_str("f.yaml", bad)),
        "f.yaml:2:15: unknown failure_mode 'retry': expected allow, deny or local"
    );
    let bad = "domain: d\nshard_by: tenant\ndescriptors:\n  - key: org\n    \
               rate_limit: {unit: second, requests_per_unit: 1}\n";
    assert_eq!(
        errors_of(parse_str("f.yaml", bad)),
        "f.yaml:2:11: `shard_by: tenant` names no descriptor key of domain 'd'"
    );
    let misplaced = "domain: d\ndescriptors:\n  - key: a\n    failure_mode: allow\n";
    assert!(errors_of(parse_str("f.yaml", misplaced)).contains("f.yaml:4:5: misplaced field"));
    // Merged files of one domain must agree.
    let opts = LoadOptions {
        merge_domains: true,
        ..Default::default()
    };
    let one = "domain: d\nfailure_mode: allow\ndescriptors: []\n";
    let two = "domain: d\nfailure_mode: deny\ndescriptors: []\n";
    let err = errors_of(parse_many(&[("1.yaml", one), ("2.yaml", two)], &opts));
    assert!(
        err.contains("2.yaml:2:15: failure_mode 'deny' conflicts with 'allow'"),
        "{err}"
    );
    assert!(parse_many(&[("1.yaml", one), ("2.yaml", one)], &opts).is_ok());
}
