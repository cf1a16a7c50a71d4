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
    // `{:e}` gives the shortest round-trip digits as `d[.ddd]e<exp>`. When the value lies exactly
    // halfway between two shortest candidates, Rust rounds the tie up while Python's dtoa rounds
    // it to even; formatting to the same number of digits in Rust's exact mode (ties to even)
    // gives Python's choice, kept only if it still round-trips.
    let shortest = format!("{:e}", x.abs());
    let n_digits = shortest
        .split('e')
        .next()
        .map_or(1, |m| m.chars().filter(char::is_ascii_digit).count());
    let exact = format!("{:.*e}", n_digits.saturating_sub(1), x.abs());
    let sci = if exact.parse::<f64>() == Ok(x.abs()) {
        exact
    } else {
        shortest
    };
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
            // Exactly halfway between two 16-digit candidates: Python rounds to even.
            (-91882525972685.0 - 0.125, "-91882525972685.12"),
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
    fn python_float_repr_random_sample() {
        // (bits, CPython json.dumps(float)) for a random sample of doubles.
        let cases: &[(u64, &str)] = &[
            (0x91b7584a2265b1f5, "-2.522753946247637e-223"),
            (0x3ea750ddbc0d36a3, "6.948674738744652e-07"),
            (0x41be6816c37a957b, "510138051.4788434"),
            (0x7311d8a3c2ce6f44, "1.9496803455965684e+246"),
            (0xc29431b9eb00a2a9, "-5550951284776.665"),
            (0x41d7817b4b933333, "1577446702.3"),
            (0x0741c7a87ce42c82, "1.0270784629388736e-273"),
            (0x42d1e2d0215a89c1, "78663408511527.02"),
            (0x41c9cb805c000000, "865534136.0"),
            (0x7204e52db2221a58, "1.7416210662938164e+241"),
            (0xc0b2416387cc2664, "-4673.3887908548095"),
            (0x41d19e248d800000, "1182306870.0"),
            (0x51431193e6c3f339, "2.8940701966505206e+83"),
            (0xbe1020f96384ecf2, "-9.388200339328929e-10"),
            (0x41d35ba4cbc00000, "1299092271.0"),
            (0xe1988ad9f06c144a, "-1.380176098350245e+162"),
            (0xc06db2edc50c2116, "-237.59152462357514"),
            (0x41dce13185400000, "1938081301.0"),
            (0x38c0c8fd8712b8bc, "2.5255439364572104e-35"),
            (0x443c972c43d942e3, "5.27401990262979e+20"),
            (0x41d079fbdc257fe1, "1105719152.58593"),
            (0xad45f23d3b1a11df, "-1.3467022099658464e-90"),
            (0xc3d38373c86bf45e, "-5.624379253246228e+18"),
            (0x41dc610c73c00000, "1904488911.0"),
            (0xd66b829e6a8ac4ba, "-2.0190295626283073e+108"),
            (0x3f15d314438b5c6c, "8.325396710105883e-05"),
            (0x41b62968b3ca161e, "371812531.7894"),
            (0xbe3edc0a1ef2a4f0, "-7.1850441006303285e-09"),
            (0xc466ac8d423d7b32, "-3.346096292797418e+21"),
            (0x41dbe879856654b0, "1872881173.598919"),
            (0xd47d380d81f9c1f6, "-9.985809833137603e+98"),
            (0x4054825e66b07d29, "82.03701178775067"),
            (0x41c215093eeed3b0, "606737021.8658352"),
            (0xf0dfb4a5d8a064df, "-5.040497046129446e+235"),
            (0x45217b91f345e540, "1.056764115920077e+25"),
            (0x41d96e1207352a68, "1706575900.8307133"),
            (0xbe6521cc3e2434e3, "-3.936145966292681e-08"),
            (0x433521c0729a73e8, "5948084951086056.0"),
            (0x41d3cf9730cde22e, "1329487043.21693"),
            (0xe1fab9d78c7e134f, "-9.619017905508365e+163"),
            (0x428d8bdb99830509, "4060815241312.6294"),
            (0x41a49d9017000000, "172935179.5"),
            (0x29e821a4c74803e3, "8.220049573381495e-107"),
            (0x42c30b1af1a95936, "41876835226290.42"),
            (0x41c615ba2a800000, "741045333.0"),
        ];
        for &(bits, want) in cases {
            assert_eq!(float_repr(f64::from_bits(bits)), want, "bits {bits:#x}");
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
            // Display rounds exact ties up where Python rounds to even, so compare the layout
            // (length, decimal point) and the value rather than the last digit.
            let mut want = format!("{x}");
            if !want.contains('.') {
                want.push_str(".0");
            }
            let got = float_repr(x);
            prop_assert_eq!(got.len(), want.len());
            prop_assert_eq!(got.find('.'), want.find('.'));
            prop_assert_eq!(got.parse::<f64>().unwrap(), x);
        }
    }
}
