//! Generators shared by the fuzzing property tests (`*fuzz_tests.rs`), and a check that the
//! cargo-fuzz crate (`fuzz/`) has a seed corpus for each of its targets.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Whitespace `str::trim` removes (ASCII and Unicode), and characters that look like it but
/// are not (zero-width space, BOM).
pub fn padding() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            " ", "\t", "\n", "\r", "\u{a0}", "\u{3000}", "\u{2028}", "\u{200b}", "\u{feff}", "",
        ]),
        0..3,
    )
    .prop_map(|parts| parts.concat())
}

/// Any JSON value, with object keys drawn mostly from `keys` so that the fuzzed documents reach
/// the fields a deserializer looks for.
pub fn json_value(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        prop::sample::select(keys).prop_map(|k| Value::String(k.to_owned())),
    ];
    let key = prop_oneof![
        4 => prop::sample::select(keys).prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// `value` with the JSON text cut, a byte flipped or a byte inserted at `at` (a fraction).
pub fn damage(text: &[u8], how: u8, at: f64, byte: u8) -> Vec<u8> {
    let mut out = text.to_vec();
    if out.is_empty() {
        return vec![byte];
    }
    let i = ((out.len() - 1) as f64 * at.clamp(0.0, 1.0)) as usize;
    match how % 4 {
        0 => out.truncate(i),
        1 => out[i] = byte,
        2 => out.insert(i, byte),
        _ => {
            out.remove(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Every `[[bin]]` of fuzz/Cargo.toml has a non-empty `fuzz/corpus/<name>/`, and every corpus
    /// folder belongs to a target: scripts/fuzz.sh runs each target on its seeds.
    #[test]
    fn fuzz_targets_and_seed_corpora_match() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let targets: BTreeSet<String> = manifest
            .split("[[bin]]")
            .skip(1)
            .filter_map(|section| {
                let line = section
                    .lines()
                    .find(|l| l.trim_start().starts_with("name"))?;
                Some(line.split('"').nth(1)?.to_owned())
            })
            .collect();
        assert!(targets.len() >= 7, "{targets:?}");
        let corpora: BTreeSet<String> = std::fs::read_dir(root.join("corpus"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(targets, corpora);
        for target in &targets {
            let seeds = std::fs::read_dir(root.join("corpus").join(target))
                .unwrap()
                .count();
            assert!(seeds > 0, "no seed for {target}");
            assert!(
                root.join("fuzz_targets")
                    .join(format!("{target}.rs"))
                    .is_file(),
                "{target}"
            );
        }
    }
}
