use super::*;

#[test]
fn parses_every_kind_of_value() {
    let v =
        parse(br#" {"a": [1, -2.5e3, true, false, null], "b": {"c": "d\u00e9\n\"\\"}, "e": ""} "#)
            .unwrap();
    assert_eq!(
        v.get("a").and_then(Value::as_array).map(<[Value]>::len),
        Some(5)
    );
    assert_eq!(
        v.get("a").and_then(|a| a.as_array()?.first()?.as_u64()),
        Some(1)
    );
    assert_eq!(
        v.get("b").and_then(|b| b.get("c")).and_then(Value::as_str),
        Some("d\u{e9}\n\"\\")
    );
    assert_eq!(
        parse(br#""\ud83d\ude00""#).unwrap(),
        Value::String("\u{1f600}".into())
    );
    assert_eq!(Value::Number("1.5".into()).as_u64(), None);
    assert_eq!(Value::Number("-1".into()).as_u64(), None);
}

#[test]
fn refuses_what_is_not_json_with_a_position() {
    for (bad, reason) in [
        (&b""[..], "unexpected end of input"),
        (b"{", "expected a member name"),
        (b"{\"a\" 1}", "expected `:`"),
        (b"[1,]", "expected a value"),
        (b"01", "trailing characters"),
        (b"1.", "invalid number"),
        (b"\"\\x\"", "invalid escape"),
        (b"\"\\ud800\"", "unpaired surrogate"),
        (b"\"a\nb\"", "control character in string"),
        (b"tru", "invalid literal"),
        (b"\xff", "not UTF-8"),
    ] {
        assert_eq!(
            parse(bad).map_err(|e| e.reason),
            Err(reason),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let e = parse(b"{\n  \"a\": nope}").unwrap_err();
    assert_eq!((e.line, e.column), (2, 8));
    assert_eq!(parse(&[b'['; 100]).unwrap_err().reason, "nested too deeply");
}

#[test]
fn written_strings_read_back() {
    for s in [
        "",
        "plain",
        "q\"b\\s/",
        "tab\tnl\ncr\r",
        "\u{1}\u{1f}",
        "é✓😀",
    ] {
        let mut out = String::new();
        write_str(&mut out, s);
        assert_eq!(
            parse(out.as_bytes()).unwrap(),
            Value::String(s.into()),
            "{out}"
        );
    }
}

proptest::proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn any_string_round_trips(s in ".*") {
        let mut out = String::new();
        write_str(&mut out, &s);
        proptest::prop_assert_eq!(parse(out.as_bytes()).unwrap(), Value::String(s));
    }
}

#[test]
fn integers_are_written_as_display_writes_them() {
    for n in [
        0,
        1,
        9,
        10,
        99,
        100,
        429,
        65_535,
        u64::from(u32::MAX),
        u64::MAX - 1,
        u64::MAX,
    ] {
        let mut out = String::from("x");
        push_u64(&mut out, n);
        assert_eq!(out, format!("x{n}"));
        assert_eq!(u64_text(n), n.to_string());
    }
}
