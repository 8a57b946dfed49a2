//! Where things are written in a pipeline file, for the errors found after parsing
//! (an unknown input stage, a wrong input kind, a cycle, a bad sweep axis or claim):
//! a line and column the user can jump to.

use crate::error::Location;

/// Finds where a stage (and optionally a key inside it) is written, for errors found
/// after parsing (unknown input stage, wrong input kind, cycles).
pub fn locate(source: &str, stage: &str, key: Option<&str>) -> Option<Location> {
    let mut in_stages = false;
    let mut stage_indent = None;
    for (n, line) in source.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        if indent == 0 && !trimmed.is_empty() && !trimmed.starts_with('#') {
            in_stages = trimmed.starts_with("stages:");
            if stage_indent.is_some() {
                break;
            }
            continue;
        }
        if !in_stages {
            continue;
        }
        match stage_indent {
            None => {
                let name = trimmed.trim_start_matches(['"', '\'']);
                if name.starts_with(stage)
                    && name[stage.len()..]
                        .trim_start_matches(['"', '\''])
                        .starts_with(':')
                {
                    let Some(key) = key else {
                        return Some(Location {
                            line: n + 1,
                            column: indent + 1,
                        });
                    };
                    stage_indent = Some(indent);
                    if let Some(col) = find_key(line, key) {
                        return Some(Location {
                            line: n + 1,
                            column: col + 1,
                        });
                    }
                }
            }
            Some(si) => {
                if indent <= si && !trimmed.is_empty() && !trimmed.starts_with('#') {
                    break;
                }
                if let Some(col) = find_key(line, key?) {
                    return Some(Location {
                        line: n + 1,
                        column: col + 1,
                    });
                }
            }
        }
    }
    None
}

/// Finds where a sweep path is written under `sweep:`.
pub fn locate_sweep(source: &str, path: &str) -> Option<Location> {
    let mut in_sweep = false;
    for (n, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        if line.len() == trimmed.len() && !trimmed.is_empty() && !trimmed.starts_with('#') {
            in_sweep = trimmed.starts_with("sweep:");
            continue;
        }
        if in_sweep {
            for candidate in [path.to_string(), format!("stages.{path}")] {
                if let Some(col) = find_key(line, &candidate) {
                    return Some(Location {
                        line: n + 1,
                        column: col + 1,
                    });
                }
            }
        }
    }
    None
}

/// Where the last of a chain of keys is written, each key looked for after the one
/// before it (on the same line, flow style, or a later one): `["resources", "stages",
/// "ddpm"]` finds `ddpm:` under `resources:`'s `stages:`.
pub fn locate_keys(source: &str, keys: &[&str]) -> Option<Location> {
    let (mut want, mut found) = (0, None);
    for (n, line) in source.lines().enumerate() {
        let mut from = 0;
        while want < keys.len() {
            let Some(col) = find_key(&line[from..], keys[want]) else {
                break;
            };
            found = Some(Location {
                line: n + 1,
                column: from + col + 1,
            });
            from += col + keys[want].len();
            want += 1;
        }
        if want == keys.len() {
            return found;
        }
    }
    None
}

/// Where `key:` starts in a line (not inside a longer name).
pub fn find_key(line: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = line[from..].find(key) {
        let at = from + pos;
        let before_ok = at == 0
            || !line.as_bytes()[at - 1].is_ascii_alphanumeric() && line.as_bytes()[at - 1] != b'_';
        let after = line[at + key.len()..].trim_start();
        if before_ok && after.starts_with(':') {
            return Some(at);
        }
        from = at + key.len();
    }
    None
}

/// Where the `index`th expectation (or its `key`) is written under `expect:`.
pub fn locate_expectation(source: &str, index: usize, key: &str) -> Option<Location> {
    let mut in_expect = false;
    let mut item: Option<usize> = None;
    let mut item_indent = None;
    let mut start = None;
    for (n, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if indent == 0 && !trimmed.is_empty() && !trimmed.starts_with('#') {
            if in_expect && item.is_some() {
                break;
            }
            in_expect = trimmed.starts_with("expect:");
            continue;
        }
        if !in_expect || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with("- ") && item_indent.is_none_or(|i| indent <= i) {
            item_indent = Some(indent);
            item = Some(item.map_or(0, |i| i + 1));
        }
        if item == Some(index) {
            start.get_or_insert(Location {
                line: n + 1,
                column: indent + 1,
            });
            if let Some(col) = find_key(line, key) {
                return Some(Location {
                    line: n + 1,
                    column: col + 1,
                });
            }
        } else if item.is_some_and(|i| i > index) {
            break;
        }
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_stage_and_nested_key() {
        let src = "name: x\nstages:\n  data: { kind: dataset, params: { name: gmm } }\n  t:\n    kind: train\n    needs: { data: nope }\n";
        assert_eq!(
            locate(src, "data", None),
            Some(Location { line: 3, column: 3 })
        );
        assert_eq!(
            locate(src, "t", Some("needs")),
            Some(Location { line: 6, column: 5 })
        );
        assert_eq!(
            locate(src, "data", Some("params")),
            Some(Location {
                line: 3,
                column: 26
            })
        );
        assert_eq!(locate(src, "missing", None), None);
    }

    #[test]
    fn locate_sweep_finds_axes_and_zipped_axes() {
        let src = "name: x\nstages: {}\nsweep:\n  a.params.x: [1]\n  zip:\n    b.params.y: [1]\n";
        assert_eq!(
            locate_sweep(src, "a.params.x"),
            Some(Location { line: 4, column: 3 })
        );
        assert_eq!(
            locate_sweep(src, "b.params.y"),
            Some(Location { line: 6, column: 5 })
        );
        assert_eq!(locate_sweep(src, "c.params.z"), None);
    }

    #[test]
    fn locate_finds_an_expectation_and_its_keys() {
        let src = "name: x\nstages: {}\nexpect:\n  - { stage: a, metric: fid, below: 1 }\n  - stage: b\n    metric: mmd2\n    above: 0\nreport: {}\n";
        assert_eq!(
            locate_expectation(src, 0, "metric"),
            Some(Location {
                line: 4,
                column: 17
            })
        );
        assert_eq!(
            locate_expectation(src, 1, "metric"),
            Some(Location { line: 6, column: 5 })
        );
        assert_eq!(
            locate_expectation(src, 1, "nothing"),
            Some(Location { line: 5, column: 3 })
        );
        assert_eq!(locate_expectation(src, 2, "stage"), None);
    }
}
