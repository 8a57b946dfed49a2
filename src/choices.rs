//! Enums of named choices (`metrics: [mmd, fid]`, `plots: [grid]`), each choice's name
//! written once: serde reads and writes it, `runner list` lists `NAMES`, and an
//! unknown name is an error that lists them.

/// Declares `pub enum $name` with one `Variant = "name"` line per choice, plus `ALL`,
/// `NAMES`, `name()` and serde by name. With `pub enum $name: $About`, each line also
/// gives the choice's `$About` (`Variant = "name" => About { .. }`), read by `about()`.
macro_rules! named_choices {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $about:ty {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal => $info:expr),* $(,)?
        }
    ) => {
        named_choices! {
            $(#[$meta])*
            pub enum $name {
                $($(#[$vmeta])* $variant = $text),*
            }
        }

        impl $name {
            /// What the table says of this choice.
            pub fn about(self) -> &'static $about {
                match self {
                    $($name::$variant => &$info),*
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            /// Every choice's name, the valid values in a pipeline file.
            pub const NAMES: &'static [&'static str] = &[$($text),*];

            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "enum": $name::NAMES })
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                struct Name;
                impl serde::de::Visitor<'_> for Name {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        write!(f, "one of {}", $name::NAMES.join(", "))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::ALL
                            .iter()
                            .copied()
                            .find(|c| c.name() == v)
                            .ok_or_else(|| E::unknown_variant(v, $name::NAMES))
                    }
                }
                d.deserialize_str(Name)
            }
        }
    };
}

pub(crate) use named_choices;

#[cfg(test)]
mod tests {
    named_choices! {
        /// A test enum.
        pub enum Colour {
            Red = "red",
            DarkBlue = "dark_blue",
        }
    }

    #[test]
    fn choices_read_and_write_their_names_and_list_them_when_unknown() {
        assert_eq!(Colour::NAMES, &["red", "dark_blue"]);
        assert_eq!(Colour::ALL, &[Colour::Red, Colour::DarkBlue]);
        let c: Vec<Colour> = serde_norway::from_str("[dark_blue, red]").unwrap();
        assert_eq!(c, vec![Colour::DarkBlue, Colour::Red]);
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"["dark_blue","red"]"#);
        let err = serde_norway::from_str::<Colour>("green")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown variant `green`, expected `red` or `dark_blue`"),
            "{err}"
        );
    }
}

/// serde's wording for the valid choices of a field or variant (`expected `a` or
/// `b``), so hand-made errors read like the parser's and get a "did you mean".
pub fn expected_one_of(names: &[&str]) -> String {
    match names {
        [] => "there are no fields".into(),
        [one] => format!("expected `{one}`"),
        [a, b] => format!("expected `{a}` or `{b}`"),
        _ => format!(
            "expected one of {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The option closest to a misspelt `word`, when one is close enough to be what was
/// meant (at most a third of its letters edited, and at least 2 allowed).
pub fn did_you_mean<'a>(word: &str, options: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    options
        .into_iter()
        .map(|o| (strsim::damerau_levenshtein(word, o), o))
        .filter(|&(d, o)| d <= limit && o != word)
        .min_by_key(|&(d, _)| d)
        .map(|(_, o)| o)
}

/// `; did you mean `x`?` when an option is close to `word`, else nothing.
pub fn suggestion<'a>(word: &str, options: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(word, options)
        .map(|best| format!("; did you mean `{best}`?"))
        .unwrap_or_default()
}

/// A parser's message in a user's terms: integers and numbers rather than Rust's
/// types, and a "did you mean" after an unknown name with its valid choices.
pub fn in_user_terms(message: &str) -> String {
    let mut text = message.to_string();
    for (rust, user) in [
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected u32", "expected a whole number (0 or more)"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping (key: value)"),
        ("floating point", "number"),
    ] {
        text = replace_words(&text, rust, user);
    }
    for kind in ["unknown variant `", "unknown field `"] {
        let Some(start) = text.find(kind) else {
            continue;
        };
        let rest = &text[start + kind.len()..];
        let Some(end) = rest.find('`') else { continue };
        let word = &rest[..end];
        let choices: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
        let hint = suggestion(word, choices);
        text.push_str(&hint);
    }
    text
}

/// `text` with each `from` that is not the start of a longer word (`expected a map`,
/// not `expected a mapping`) replaced by `to`.
fn replace_words(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let after = &rest[at + from.len()..];
        let whole = !after.starts_with(|c: char| c.is_alphanumeric() || c == '_');
        out.push_str(&rest[..at]);
        out.push_str(if whole { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod suggestion_tests {
    use super::*;

    #[test]
    fn close_names_are_suggested_and_far_ones_are_not() {
        assert_eq!(
            did_you_mean("ddmi", ["ancestral", "ddim", "pc"]),
            Some("ddim")
        );
        assert_eq!(did_you_mean("zzzzzz", ["ancestral", "ddim"]), None);
        let message = "unknown variant `ancestrl`, expected one of `ancestral`, `ddim`, `ode`";
        assert!(in_user_terms(message).ends_with("; did you mean `ancestral`?"));
        assert_eq!(
            in_user_terms("invalid value: integer `-5`, expected usize"),
            "invalid value: integer `-5`, expected a whole number (0 or more)"
        );
        assert_eq!(
            in_user_terms("expected a map, or expected a mapping with `type`"),
            "expected a mapping (key: value), or expected a mapping with `type`"
        );
    }
}
