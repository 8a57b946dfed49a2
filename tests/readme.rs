//! README.md states what the registries hold: its table of stage kinds has one row per
//! kind of the table in `stages/mod.rs` (name, inputs, files written), its sample row
//! names every registered sampler with every parameter, and `runner list` lists them.

mod common;

use runner::diffusion::samplers::SamplerParams;
use runner::stages::StageKind;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The rows of the table whose header is `| kind | needs | params | writes |`.
fn kind_rows(readme: &str) -> Vec<Vec<String>> {
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.starts_with("| kind | needs | params | writes |"))
        .skip(2);
    let mut rows = Vec::new();
    while let Some(line) = lines.next().filter(|l| l.starts_with('|')) {
        let cells: Vec<String> = line
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_string())
            .collect();
        rows.push(cells);
    }
    rows
}

#[test]
fn readme_table_of_kinds_is_the_table_of_kinds() {
    let rows = kind_rows(&readme());
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        StageKind::NAMES,
        "README's kinds, in the table's order"
    );
    for (row, &kind) in rows.iter().zip(StageKind::ALL) {
        let needs = match runner::catalog::roles(kind).as_str() {
            "no inputs" => "-".to_string(),
            roles => roles.to_string(),
        };
        assert_eq!(row[1], needs, "needs of {kind}");
        assert_eq!(row[3], kind.writes(), "files {kind} writes");
    }
}

/// Each sampler's entry in the sample row: the text in parentheses after its name.
fn sampler_entry<'a>(row: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(pos) = row[from..].find(&format!("{name} (")) {
        let at = from + pos;
        from = at + name.len();
        let before = row[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let open = at + name.len() + 2;
        let close = open + row[open..].find(')')?;
        return Some(&row[open..close]);
    }
    None
}

#[test]
fn readme_and_runner_list_name_every_registered_sampler_and_its_parameters() {
    let readme = readme();
    let rows = kind_rows(&readme);
    let sample = &rows
        .iter()
        .find(|r| r[0] == "sample")
        .expect("a sample row")[2];
    let list = common::stdout(&common::runner(std::path::Path::new("unused"), &["list"]));
    for name in SamplerParams::NAMES {
        let entry = sampler_entry(sample, name)
            .unwrap_or_else(|| panic!("README's sample row does not list `{name} (...)`"));
        let defaults = serde_json::to_value(SamplerParams::defaults(name).unwrap()).unwrap();
        for param in defaults
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "sampler")
        {
            assert!(
                entry.contains(&format!("`{param}`")),
                "README's entry for `{name}` misses `{param}`: {entry}"
            );
        }
        assert!(
            list.lines()
                .any(|l| l.trim_start().starts_with(&format!("{name} "))),
            "`runner list` misses sampler {name}"
        );
    }
    for kind in StageKind::NAMES {
        assert!(
            list.lines()
                .any(|l| l.trim_start().starts_with(&format!("{kind} "))),
            "`runner list` misses kind {kind}"
        );
    }
}
