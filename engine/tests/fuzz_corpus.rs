//! Runs both fuzz targets' logic over their committed corpora (`fuzz/corpus`),
//! so every CI run replays them as ordinary tests.

#[path = "../../fuzz/src/lib.rs"]
mod fuzz_logic;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/").to_string() + target;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

#[test]
fn open_bytes_corpus() {
    let inputs = corpus("open_bytes");
    assert!(!inputs.is_empty());
    for input in &inputs {
        fuzz_logic::open_bytes(input);
    }
    println!("open_bytes: {} corpus inputs replayed", inputs.len());
}

#[test]
fn ops_model_corpus() {
    let inputs = corpus("ops_model");
    assert!(!inputs.is_empty());
    for input in &inputs {
        fuzz_logic::ops_model(input);
    }
    println!("ops_model: {} corpus inputs replayed", inputs.len());
}
