//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and any
//! saved crashers (`fuzz/crashes/<target>/`) through the same targets the
//! fuzzer runs (`fuzz/src/targets.rs`), as ordinary tests: no input may
//! panic. `scripts/fuzz.sh` grows the corpus.

#[path = "../../fuzz/src/targets.rs"]
mod targets;

use std::path::Path;

fn inputs(kind: &str, name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| {
            let data = std::fs::read(e.path()).expect("readable corpus file");
            (e.file_name().to_string_lossy().into_owned(), data)
        })
        .collect()
}

#[test]
fn every_corpus_input_runs_without_panicking() {
    let mut total = 0;
    for (name, target) in targets::TARGETS {
        let corpus = inputs("corpus", name);
        assert!(!corpus.is_empty(), "target {name} has a committed corpus");
        for (file, data) in corpus.into_iter().chain(inputs("crashes", name)) {
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: input {file} panicked");
            total += 1;
        }
    }
    eprintln!("replayed {total} fuzz inputs");
}
