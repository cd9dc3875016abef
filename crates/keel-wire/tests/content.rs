//! `extract_json` finds the JSON document in a model's answer.

// Test helpers outside `#[test]` functions unwrap and panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_wire::content::extract_json;

#[test]
fn extract_json_table() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("bare object", r#"{"a": 1}"#, Some(r#"{"a": 1}"#)),
        ("bare array, padded", "  \n[1, 2, 3]\n ", Some("[1, 2, 3]")),
        ("bare scalar", "42", Some("42")),
        ("bare string", r#""hi""#, Some(r#""hi""#)),
        (
            "json fence",
            "Here you go:\n```json\n{\"name\": \"Ada\"}\n```\nAnything else?",
            Some("{\"name\": \"Ada\"}"),
        ),
        (
            "JSON fence, uppercase, CRLF",
            "```JSON\r\n[{\"x\": 1}]\r\n```",
            Some("[{\"x\": 1}]"),
        ),
        (
            "bare fence",
            "```\n{\"ok\": true}\n```",
            Some("{\"ok\": true}"),
        ),
        (
            "unclosed fence",
            "```json\n{\"ok\": true}\n",
            Some("{\"ok\": true}"),
        ),
        (
            "one-line fence",
            "```{\"ok\": true}```",
            Some("{\"ok\": true}"),
        ),
        (
            "fence with prose inside",
            "```json\n// the answer\n{\"ok\": true}\n```",
            Some("{\"ok\": true}"),
        ),
        (
            "after prose",
            "Sure! The result is {\"city\": \"Paris\", \"temp\": 15}. Hope this helps.",
            Some("{\"city\": \"Paris\", \"temp\": 15}"),
        ),
        (
            "brackets inside strings",
            "Result: {\"s\": \"a } and ] and { inside\", \"n\": [1, {\"m\": \"]\"}]} done",
            Some("{\"s\": \"a } and ] and { inside\", \"n\": [1, {\"m\": \"]\"}]}"),
        ),
        (
            "escaped quotes inside strings",
            r#"x {"q": "she said \"}\" twice", "b": "\\"} y"#,
            Some(r#"{"q": "she said \"}\" twice", "b": "\\"}"#),
        ),
        (
            "prose brackets before the JSON are skipped",
            "Note [see above] and {not json}: [1, 2]",
            Some("[1, 2]"),
        ),
        (
            "array after prose",
            "The list is [\"a\", \"b\"].",
            Some("[\"a\", \"b\"]"),
        ),
        (
            "nested",
            "x {\"a\": {\"b\": [1, [2, {}]]}} y",
            Some("{\"a\": {\"b\": [1, [2, {}]]}}"),
        ),
        (
            "first of two",
            "{\"a\": 1} and {\"b\": 2}",
            Some("{\"a\": 1}"),
        ),
        (
            "unicode around",
            "Voilà ☃: {\"é\": \"ü\"} ✓",
            Some("{\"é\": \"ü\"}"),
        ),
        ("unbalanced", "{\"a\": [1, 2}", None),
        ("truncated", "Here: {\"a\": \"unterminated", None),
        ("no json", "I cannot help with that.", None),
        ("empty", "", None),
        ("whitespace", "   \n", None),
        ("mismatched close", "{]", None),
    ];
    for (name, input, expected) in cases {
        assert_eq!(extract_json(input), *expected, "case: {name}");
    }
}

#[test]
fn extract_json_is_bounded_on_bracket_heavy_prose() {
    let prose = "[x] ".repeat(10_000) + "{\"a\": 1}";
    // Past the candidate limit the JSON is not found, but the call returns promptly.
    assert_eq!(extract_json(&prose), None);
    let close = "[x] ".repeat(10) + "{\"a\": 1}";
    assert_eq!(extract_json(&close), Some("{\"a\": 1}"));
}
