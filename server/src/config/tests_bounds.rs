//! Hostile rule files: each must be refused with a position and a reason, quickly and in bounded
//! memory, on a thread with a spawned thread's default stack (where hot reload used to run).

use std::fmt::Write as _;
use std::fs;

use super::*;

/// Loads `text` as one file on a thread with Rust's default spawned-thread stack (2 MiB), so a
/// recursion that the bounds miss overflows here instead of passing on the main thread's 8 MiB.
fn load_on_small_stack(text: String) -> Result<RuleSet, ConfigErrors> {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || parse_str("bomb.yaml", &text))
        .unwrap()
        .join()
        .expect("loading must not overflow the stack")
}

fn first_error(result: Result<RuleSet, ConfigErrors>) -> ConfigError {
    match result {
        Ok(_) => panic!("expected the file to be refused"),
        Err(e) => e.0.into_iter().next().unwrap(),
    }
}

/// A descriptor tree `levels` deep, each level limited.
fn nested_descriptors(levels: usize) -> String {
    let mut text = String::from("domain: deep\ndescriptors:\n");
    for level in 0..levels {
        let pad = "  ".repeat(2 * level);
        writeln!(text, "{pad}  - key: k{level}").unwrap();
        writeln!(
            text,
            "{pad}    rate_limit: {{unit: second, requests_per_unit: 1}}"
        )
        .unwrap();
        if level + 1 < levels {
            writeln!(text, "{pad}    descriptors:").unwrap();
        }
    }
    text
}

#[test]
fn descriptors_nest_up_to_the_bound() {
    let rules = load_on_small_stack(nested_descriptors(parse::MAX_DESCRIPTOR_DEPTH)).unwrap();
    let entries: Vec<(String, String)> = (0..parse::MAX_DESCRIPTOR_DEPTH)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    let entries: Vec<(&str, &str)> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(rules.lookup("deep", &entries).is_some());
}

#[test]
fn a_descriptor_tree_past_the_bound_is_refused_where_it_goes_too_deep() {
    // 1,500 levels: the tree that passed check-config and start-up, then killed every replica's
    // reload thread.
    let e = first_error(load_on_small_stack(nested_descriptors(1500)));
    let at = e.position().unwrap();
    let message = e.to_string();
    assert!(
        message.contains("mappings and lists nest deeper than 160 levels"),
        "{message}"
    );
    assert!(at.line > 1, "{message}");

    // Just past the descriptor bound, within the YAML one: the descriptor rule reports it.
    let e = first_error(load_on_small_stack(nested_descriptors(
        parse::MAX_DESCRIPTOR_DEPTH + 1,
    )));
    let message = e.to_string();
    assert!(
        message.contains("descriptors nest deeper than 64 levels"),
        "{message}"
    );
    // At the list that would be level 65: its first item, after two header lines and 64 levels
    // of three lines each.
    assert_eq!(e.position().unwrap().line, 3 + 3 * 64, "{message}");
}

#[test]
fn two_megabytes_of_nested_lists_are_refused() {
    // Flow style: the YAML scanner's own recursion limit (256) refuses it.
    let depth = 1024 * 1024;
    let text = format!("domain: {}{}", "[".repeat(depth), "]".repeat(depth));
    let message = first_error(load_on_small_stack(text)).to_string();
    assert!(message.contains("bomb.yaml:1:"), "{message}");
    assert!(message.contains("recursion limit exceeded"), "{message}");
    // Block style, compact (`- - - x`): refused by the tree's own bound.
    let text = format!(
        "domain:
{}x
",
        "- ".repeat(depth)
    );
    let message = first_error(load_on_small_stack(text)).to_string();
    assert!(message.contains("bomb.yaml:2:"), "{message}");
    assert!(message.contains("nest deeper than 160 levels"), "{message}");
}

#[test]
fn an_alias_bomb_is_refused_before_it_expands() {
    // Nine levels of ten aliases each: 10^9 nodes if expanded, 460 bytes as written.
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..10 {
        let prev = format!("*a{}", level - 1);
        let items = [prev.as_str(); 10].join(", ");
        writeln!(text, "a{level}: &a{level} [{items}]").unwrap();
    }
    text.push_str("domain: bomb\n");
    assert!(text.len() < 600, "{}", text.len());
    let e = first_error(load_on_small_stack(text));
    let message = e.to_string();
    assert!(
        message.contains("grows past 500000 YAML nodes (aliases expanded)"),
        "{message}"
    );
    // Reported at the alias that crossed the bound.
    assert!(e.position().unwrap().line > 1, "{message}");
}

#[test]
fn an_alias_to_a_large_scalar_is_bounded_by_text() {
    let big = "x".repeat(1024 * 1024);
    let mut text = format!("big: &big \"{big}\"\ncopies: [");
    for _ in 0..20 {
        text.push_str("*big, ");
    }
    text.push_str("]\ndomain: d\n");
    let message = first_error(load_on_small_stack(text)).to_string();
    assert!(message.contains("grows past 16 MiB of text"), "{message}");
}

#[test]
fn aliases_and_merge_keys_within_the_bounds_still_work() {
    let text = "\
defaults: &per_minute {unit: minute, requests_per_unit: 5}
domain: d
descriptors:
  - key: a
    rate_limit: *per_minute
  - key: b
    rate_limit:
      <<: *per_minute
      requests_per_unit: 7
";
    let rules = parse_str("ok.yaml", text);
    // `defaults` is not a field of the format; only that is reported.
    let message = errors_of(rules);
    assert!(message.contains("unknown field `defaults`"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
}

fn errors_of(result: Result<RuleSet, ConfigErrors>) -> String {
    match result {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_mapping_with_a_hundred_thousand_keys_is_read_in_linear_time() {
    // Duplicate detection used to scan every earlier key: 10^10 comparisons here.
    let mut text = String::from("domain: d\ndescriptors:\n  - key: k\n");
    for i in 0..100_000 {
        writeln!(text, "    f{i}: 1").unwrap();
    }
    let errors = match load_on_small_stack(text) {
        Ok(_) => panic!("unknown fields must be refused"),
        Err(e) => e,
    };
    // The first problems of the file, then one line counting the rest.
    assert_eq!(errors.len(), 101);
    let last = errors.0.last().unwrap().to_string();
    assert!(
        last.contains("and 99900 more problems in this file"),
        "{last}"
    );
}

#[test]
fn a_load_reports_a_bounded_number_of_errors() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        let mut text = format!("domain: d{i}\ndescriptors:\n");
        for j in 0..100 {
            writeln!(text, "  - key: k\n    value: v{j}\n    bogus: 1").unwrap();
        }
        fs::write(dir.path().join(format!("f{i}.yaml")), text).unwrap();
    }
    let errors = load(dir.path(), &LoadOptions::default()).unwrap_err();
    assert_eq!(errors.len(), error::MAX_REPORTED + 1);
    assert_eq!(
        errors.0.last().unwrap().to_string(),
        "... and 300 more errors"
    );
}

#[test]
fn a_file_past_the_size_bound_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let file = fs::File::create(&path).unwrap();
    file.set_len(MAX_FILE_BYTES + 1).unwrap();
    let message = load(&path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(message.contains("huge.yaml"), "{message}");
    assert!(message.contains("larger than 4 MiB"), "{message}");
}
