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
