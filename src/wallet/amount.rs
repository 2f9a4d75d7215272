//! Amounts of money in exact cents, and wallet names.

use super::error::quote;
use super::{AmountProblem, KeyProblem, WalletError, CENTS_PER_DOLLAR, MAX_AMOUNT_CENTS, MAX_KEY_CHARS};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A non-negative amount of money in exact cents, at most [`Amount::MAX`].
///
/// Serialized (JSON) as its display string, e.g. `"$30"` or `"$0.50"`; deserialized with
/// [`Amount::parse`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Amount(u64);

impl Serialize for Amount {
    /// As its display string, rendered without allocating (a checkpoint writes millions).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; RENDERED_MAX];
        serializer.serialize_str(self.render(&mut buf))
    }
}

/// Longest rendering of an amount: `$` and 13 digits of dollars (at most
/// 1,000,000,000,000), `.` and two of cents.
const RENDERED_MAX: usize = 17;

impl Amount {
    /// $0.
    pub const ZERO: Amount = Amount(0);
    /// The largest amount: $1,000,000,000,000 ([`MAX_AMOUNT_CENTS`] cents).
    pub const MAX: Amount = Amount(MAX_AMOUNT_CENTS);

    /// The amount of `cents` cents, refused above [`Amount::MAX`].
    pub fn from_cents(cents: u64) -> Result<Amount, WalletError> {
        if cents > MAX_AMOUNT_CENTS {
            return Err(amount_error(&format!("{cents} cents"), AmountProblem::TooLarge));
        }
        Ok(Amount(cents))
    }

    /// The amount in cents.
    pub fn cents(self) -> u64 {
        self.0
    }

    /// Parses dollars: an optional `$`, digits, and optionally `.` with one or two digits
    /// (`"$10"`, `"10"`, `"10.5"`, `"10.50"`, `"$0.01"`, `"0"`). No sign, spaces, exponent
    /// or thousands separators; at most [`Amount::MAX`].
    pub fn parse(text: &str) -> Result<Amount, WalletError> {
        parse_dollars(text).map(Amount).map_err(|problem| amount_error(text, problem))
    }

    /// `self + other`, or `None` above [`Amount::MAX`].
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        let sum = self.0.checked_add(other.0)?;
        (sum <= MAX_AMOUNT_CENTS).then_some(Amount(sum))
    }

    /// `self - other`, or `None` below $0.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

fn amount_error(input: &str, problem: AmountProblem) -> WalletError {
    WalletError::InvalidAmount { input: quote(input), problem }
}

/// The cents in `text`, or why there are none.
fn parse_dollars(text: &str) -> Result<u64, AmountProblem> {
    let body = text.strip_prefix('$').unwrap_or(text);
    if body.is_empty() {
        return Err(AmountProblem::Empty);
    }
    if let Some(unsigned) = body.strip_prefix('-') {
        let unsigned = unsigned.strip_prefix('$').unwrap_or(unsigned);
        return match parse_unsigned(unsigned) {
            Ok(_) | Err(AmountProblem::TooPrecise | AmountProblem::TooLarge) => Err(AmountProblem::Negative),
            Err(problem) => Err(problem),
        };
    }
    parse_unsigned(body)
}

/// The cents in `digits[.d[d]]`.
fn parse_unsigned(body: &str) -> Result<u64, AmountProblem> {
    let (whole, fraction) = match body.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (body, None),
    };
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return Err(AmountProblem::NotANumber);
    }
    let fraction = fraction.unwrap_or("");
    if fraction.len() > 2 {
        return Err(AmountProblem::TooPrecise);
    }
    let cents = digits_value(whole)
        .and_then(|dollars| dollars.checked_mul(CENTS_PER_DOLLAR))
        .and_then(|cents| cents.checked_add(fraction_cents(fraction)))
        .filter(|&cents| cents <= MAX_AMOUNT_CENTS);
    cents.ok_or(AmountProblem::TooLarge)
}

/// Whether `s` is one or more ASCII digits.
fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The value of a string of ASCII digits, `None` if it overflows a `u64`.
fn digits_value(digits: &str) -> Option<u64> {
    digits.bytes().try_fold(0u64, |acc, b| acc.checked_mul(10)?.checked_add(u64::from(b - b'0')))
}

/// The cents of zero to two decimal digits: "" → 0, "5" → 50, "05" → 5.
fn fraction_cents(fraction: &str) -> u64 {
    let padded = format!("{fraction:0<2}");
    digits_value(&padded).unwrap_or(0)
}

impl Amount {
    /// The display string (`$30`, `$0.50`) written into `buf`, digits from the right.
    fn render(self, buf: &mut [u8; RENDERED_MAX]) -> &str {
        let (mut dollars, cents) = (self.0 / CENTS_PER_DOLLAR, self.0 % CENTS_PER_DOLLAR);
        let mut at = RENDERED_MAX;
        let mut put = |byte: u8| {
            at -= 1;
            buf[at] = byte;
        };
        if cents != 0 {
            put(b'0' + (cents % 10) as u8);
            put(b'0' + (cents / 10) as u8);
            put(b'.');
        }
        loop {
            put(b'0' + (dollars % 10) as u8);
            dollars /= 10;
            if dollars == 0 {
                break;
            }
        }
        put(b'$');
        std::str::from_utf8(&buf[at..]).expect("ASCII digits")
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; RENDERED_MAX];
        f.write_str(self.render(&mut buf))
    }
}

impl FromStr for Amount {
    type Err = WalletError;

    fn from_str(s: &str) -> Result<Amount, WalletError> {
        Amount::parse(s)
    }
}

impl TryFrom<String> for Amount {
    type Error = WalletError;

    fn try_from(s: String) -> Result<Amount, WalletError> {
        Amount::parse(&s)
    }
}

impl From<Amount> for String {
    fn from(amount: Amount) -> String {
        amount.to_string()
    }
}

/// A valid wallet name (see the [module docs](crate::wallet#keys) for the rules).
///
/// Serialized as a plain JSON string; deserialization validates it. The name is shared
/// (`Arc<str>`): copying a key, as copying a table chunk that a checkpoint image still
/// holds copies a few thousand, costs a reference count, not an allocation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Key(std::sync::Arc<str>);

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl Key {
    /// Validates `name` as a wallet name.
    pub fn new(name: impl Into<String>) -> Result<Key, WalletError> {
        let name = name.into();
        match key_problem(&name) {
            Some(problem) => Err(WalletError::InvalidKey { key: quote(&name), problem }),
            None => Ok(Key(name.into())),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What is wrong with `name` as a wallet name, if anything.
fn key_problem(name: &str) -> Option<KeyProblem> {
    let chars = name.chars().count();
    if chars == 0 {
        Some(KeyProblem::Empty)
    } else if chars > MAX_KEY_CHARS {
        Some(KeyProblem::TooLong { chars })
    } else if name.chars().any(char::is_control) {
        Some(KeyProblem::ControlCharacter)
    } else if name.contains(':') {
        Some(KeyProblem::Colon)
    } else if name.trim() != name {
        Some(KeyProblem::SurroundingWhitespace)
    } else {
        None
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Key {
    type Err = WalletError;

    fn from_str(s: &str) -> Result<Key, WalletError> {
        Key::new(s)
    }
}

impl TryFrom<String> for Key {
    type Error = WalletError;

    fn try_from(s: String) -> Result<Key, WalletError> {
        Key::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wallet::testing::*;
    use crate::wallet::QUOTE_CHARS;

    #[test]
    fn amounts_parse_to_exact_cents() {
        let cases = [
            ("$10", 1000),
            ("10", 1000),
            ("10.5", 1050),
            ("10.50", 1050),
            ("$0.01", 1),
            ("0", 0),
            ("$0", 0),
            ("0.05", 5),
            ("007", 700),
            ("$1000000000000", MAX_AMOUNT_CENTS),
            ("1000000000000.00", MAX_AMOUNT_CENTS),
        ];
        for (text, cents) in cases {
            assert_eq!(Amount::parse(text).map(Amount::cents), Ok(cents), "{text}");
        }
    }

    #[test]
    fn bad_amounts_are_refused_with_a_reason() {
        for text in ["", "$"] {
            assert_eq!(amount_problem(text), AmountProblem::Empty, "{text:?}");
        }
        for text in ["-5", "$-5", "-$5", "-0", "-1.234"] {
            assert_eq!(amount_problem(text), AmountProblem::Negative, "{text:?}");
        }
        for text in ["1.234", "$0.001", "5.000"] {
            assert_eq!(amount_problem(text), AmountProblem::TooPrecise, "{text:?}");
        }
        for text in ["1000000000000.01", "$99999999999999999999999999", "18446744073709551616"] {
            assert_eq!(amount_problem(text), AmountProblem::TooLarge, "{text:?}");
        }
        let syntax = [
            "$abc", ".", "$.", ".5", "10.", "1 0", " 10", "10 ", "$ 10", "1e3", "1E3", "+5", "$$5", "1,000",
            "1.2.3", "0x10", "١٢", "10$", "--5", "-", "NaN", "inf", "５",
        ];
        for text in syntax {
            assert_eq!(amount_problem(text), AmountProblem::NotANumber, "{text:?}");
        }
    }

    #[test]
    fn amounts_display_as_dollars_with_cents_only_when_needed() {
        let cases =
            [(0, "$0"), (1, "$0.01"), (50, "$0.50"), (3000, "$30"), (3050, "$30.50"), (3005, "$30.05")];
        for (cents, text) in cases {
            let amount = Amount::from_cents(cents).unwrap();
            assert_eq!(amount.to_string(), text);
            assert_eq!(Amount::parse(text), Ok(amount), "display parses back");
        }
        assert_eq!(Amount::MAX.to_string(), "$1000000000000");
        // The allocation-free rendering agrees with the arithmetic everywhere: JSON is the
        // display string, and it parses back.
        let mut cents = 0u64;
        while cents <= MAX_AMOUNT_CENTS {
            let amount = Amount::from_cents(cents).unwrap();
            let text = amount.to_string();
            let (dollars, rest) = (cents / 100, cents % 100);
            let expected = if rest == 0 { format!("${dollars}") } else { format!("${dollars}.{rest:02}") };
            assert_eq!(text, expected);
            assert_eq!(serde_json::to_string(&amount).unwrap(), format!("\"{text}\""));
            assert_eq!(Amount::parse(&text), Ok(amount));
            cents = cents * 3 + 7;
        }
        assert_eq!(serde_json::to_string(&Amount::MAX).unwrap(), "\"$1000000000000\"");
    }

    #[test]
    fn amount_arithmetic_stays_within_bounds() {
        assert!(Amount::from_cents(MAX_AMOUNT_CENTS + 1).is_err());
        assert_eq!(Amount::MAX.checked_add(Amount::from_cents(1).unwrap()), None);
        assert_eq!(Amount::MAX.checked_add(Amount::ZERO), Some(Amount::MAX));
        assert_eq!(dollars("5").checked_sub(dollars("5.01")), None);
        assert_eq!(dollars("5").checked_sub(dollars("0.01")), Some(dollars("4.99")));
    }

    #[test]
    fn amounts_serialize_as_strings_and_validate_when_deserialized() {
        assert_eq!(serde_json::to_string(&dollars("30.5")).unwrap(), r#""$30.50""#);
        assert_eq!(serde_json::from_str::<Amount>(r#""10""#).unwrap(), dollars("10"));
        assert!(serde_json::from_str::<Amount>(r#""-1""#).is_err());
        assert!(serde_json::from_str::<Amount>("10").is_err(), "numbers are not amounts");
    }

    #[test]
    fn keys_are_validated() {
        for name in
            ["foo", "a b", "é", "中文", "😀", "q\"uote", "back\\slash", "$", &"x".repeat(64), &"é".repeat(64)]
        {
            assert_eq!(Key::new(name).map(|k| k.as_str().to_owned()), Ok(name.to_owned()));
        }
        assert_eq!(key_problem_of(""), KeyProblem::Empty);
        assert_eq!(key_problem_of(&"x".repeat(65)), KeyProblem::TooLong { chars: 65 });
        for name in ["a\nb", "\t", "nul\0", "del\u{7f}", "c1\u{85}"] {
            assert_eq!(key_problem_of(name), KeyProblem::ControlCharacter, "{name:?}");
        }
        assert_eq!(key_problem_of("a:b"), KeyProblem::Colon);
        for name in [" foo", "foo ", " ", "foo\u{a0}", "\u{3000}foo"] {
            assert_eq!(key_problem_of(name), KeyProblem::SurroundingWhitespace, "{name:?}");
        }
        assert!(serde_json::from_str::<Key>(r#""a:b""#).is_err());
        assert_eq!(serde_json::to_string(&key("foo")).unwrap(), r#""foo""#);
    }

    #[test]
    fn long_inputs_are_quoted_shortened_in_errors() {
        let err = Key::new("é".repeat(100)).unwrap_err();
        let WalletError::InvalidKey { key, .. } = &err else { panic!("{err:?}") };
        assert_eq!(key.chars().count(), QUOTE_CHARS + 1);
        assert!(err.to_string().contains("100 characters, the maximum is 64"));
    }
}
