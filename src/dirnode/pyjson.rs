//! JSON text byte-identical to Python's `json.dumps(obj)` with default arguments, the encoding
//! Tahoe uses for directory-entry metadata.
//!
//! Python's defaults are: item separator `", "`, key separator `": "`, `ensure_ascii=True` (every
//! character outside printable ASCII `' '..='~'` becomes `\uXXXX` in lowercase hex, astral characters
//! as a UTF-16 surrogate pair), keys in insertion order, `allow_nan=True` (`NaN`, `Infinity`,
//! `-Infinity`), integers as integers and floats as `float.__repr__`.
//!
//! `float.__repr__` is the shortest digit string that round-trips (Rust's `{:e}` formatting
//! produces the same digits), laid out in positional notation when the decimal exponent `e` of
//! `d.ddd × 10^e` satisfies `-4 <= e < 16` (always with a fractional part, so `1.0`, never `1`),
//! and otherwise as `d.ddde±XX` with at least two exponent digits (`1e+16`, `1e-05`).
//!
//! Parsing is left to `serde_json` (built with `preserve_order`, so objects keep insertion order
//! and a duplicate key keeps its first position with its last value, as a Python dict does).

use serde_json::Value;

/// Python's `repr(x)` for a float, except that non-finite values are spelled as `json.dumps`
/// spells them (`NaN`, `Infinity`, `-Infinity`).
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // `{:e}` gives the shortest round-trip digits as `[-]d[.ddd]e<exp>`.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if x < 0.0 {
        out.push('-');
    }
    if !(-4..16).contains(&exp) {
        out.push_str(mantissa);
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let mag = exp.unsigned_abs();
        if mag < 10 {
            out.push('0');
        }
        out.push_str(&mag.to_string());
    } else if exp >= 0 {
        // The integer part has exp+1 digits.
        let int_len = (exp as usize) + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            out.push_str(".0");
        } else {
            let (int_part, frac) = digits.split_at(int_len);
            out.push_str(int_part);
            out.push('.');
            out.push_str(frac);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(&digits);
    }
    out
}

/// Appends a JSON string literal with Python's `ensure_ascii` escaping.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                out.push_str(&float_repr(n.as_f64().unwrap_or(f64::NAN)));
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, k);
                out.push_str(": ");
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// `json.dumps(v)` with Python's default arguments.
pub fn dumps(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn python_float_repr_cases() {
        // Expected values are CPython's repr() of the same literals.
        let cases: &[(f64, &str)] = &[
            (0.1, "0.1"),
            (1.0, "1.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (9999999999999998.0, "9999999999999998.0"),
            (1e-5, "1e-05"),
            (1e-4, "0.0001"),
            (0.00012, "0.00012"),
            (123456789.125, "123456789.125"),
            (1795946854.2489998, "1795946854.2489998"),
            (-2.5, "-2.5"),
            (-1e-7, "-1e-07"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (1.5e16, "1.5e+16"),
            (1e100, "1e+100"),
            (100.0, "100.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
        ];
        for &(x, want) in cases {
            assert_eq!(float_repr(x), want, "repr of {x:?}");
        }
    }

    #[test]
    fn python_dumps_cases() {
        // Expected strings are CPython 3 json.dumps output for the same objects.
        let v: Value = serde_json::from_str(
            r#"{"note": "café", "tahoe": {"linkcrtime": 1795946854.2489998, "linkmotime": 1795946854.2489998}}"#,
        )
        .unwrap();
        assert_eq!(
            dumps(&v),
            r#"{"note": "caf\u00e9", "tahoe": {"linkcrtime": 1795946854.2489998, "linkmotime": 1795946854.2489998}}"#
        );
        let v: Value = serde_json::from_str(
            "{\"z\": [1.0, 5e-324, -0.0, 2, -3, true, false, null, []], \"a\": \"\u{1F600}\u{7f}\\u0000\\\"\\\\\\n\\r\\t\\b\\f/\", \"e\": {}}",
        )
        .unwrap();
        assert_eq!(
            dumps(&v),
            r#"{"z": [1.0, 5e-324, -0.0, 2, -3, true, false, null, []], "a": "\ud83d\ude00\u007f\u0000\"\\\n\r\t\b\f/", "e": {}}"#
        );
    }

    #[test]
    fn duplicate_keys_keep_first_position_last_value() {
        // Python: json.loads('{"a": 1, "b": 2, "a": 3}') == {"a": 3, "b": 2}, in that order.
        let v: Value = serde_json::from_str(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
        assert_eq!(dumps(&v), r#"{"a": 3, "b": 2}"#);
    }

    proptest! {
        #[test]
        fn prop_float_repr_round_trips(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            prop_assume!(x.is_finite());
            let s = float_repr(x);
            let back: f64 = s.parse().unwrap();
            prop_assert_eq!(back.to_bits(), x.to_bits());
        }

        #[test]
        fn prop_positional_range_matches_display(
            x in prop_oneof![-1e15..1e15f64, 1e-3..1.0f64, -1.0..-1e-3f64]
        ) {
            // Independent model for the positional range: Rust's Display prints the same shortest
            // digits positionally; Python adds ".0" when there is no fractional part.
            prop_assume!(x.is_finite() && x != 0.0);
            let e = x.abs().log10().floor();
            prop_assume!((-3.0..15.0).contains(&e));
            let mut want = format!("{x}");
            if !want.contains('.') {
                want.push_str(".0");
            }
            prop_assert_eq!(float_repr(x), want);
        }
    }
}
