//! A coverage-free mutation fuzzer on the stable toolchain (cargo-fuzz and
//! libFuzzer need nightly). For each target it loads `corpus/<target>/`,
//! mutates inputs at random (bit flips, byte edits, splices, duplicated
//! runs, interesting bytes), runs the target under `catch_unwind`, keeps
//! inputs whose outcome signature is new, and saves panicking inputs to
//! `crashes/<target>/`. A capped allocator turns any single allocation over
//! `ALLOC_CAP` into an abort: an input must never make tether allocate
//! without bound.
//!
//! Usage: `tether-fuzz <target|all> <seconds-per-target> [--save]`.

mod targets;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::Rng;

/// Largest single allocation an input may cause.
const ALLOC_CAP: usize = 64 << 20;
/// Largest input the driver makes.
const MAX_INPUT: usize = 4096;
/// Most new corpus entries saved per target and run.
const MAX_SAVED: usize = 24;
/// Most inputs kept in memory per target (error texts that quote the input
/// make many signatures "new").
const MAX_CORPUS: usize = 4096;

struct Capped;

// SAFETY: forwards to the system allocator; refuses oversized requests by
// returning null, which the standard library turns into an abort.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_CAP {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("all", String::as_str);
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let save = args.iter().any(|a| a == "--save");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Panics are expected findings: keep stderr readable.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    for (name, target) in targets::TARGETS {
        if which != "all" && which != *name {
            continue;
        }
        let r = fuzz(root, name, *target, Duration::from_secs(secs), save);
        println!(
            "FUZZ| {name} | {} execs | {} signatures | {} crashes",
            r.execs, r.signatures, r.crashes
        );
        failed |= r.crashes > 0;
    }
    std::process::exit(i32::from(failed));
}

struct Report {
    execs: u64,
    signatures: usize,
    crashes: usize,
}

fn fuzz(root: &Path, name: &str, target: targets::Target, time: Duration, save: bool) -> Report {
    let dir = root.join("corpus").join(name);
    let mut corpus = load(&dir);
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut seen = HashSet::new();
    let mut crashes = 0;
    for input in &corpus {
        match run(target, input) {
            Some(s) => {
                seen.insert(s);
            }
            None => crashes += save_crash(root, name, input),
        }
    }
    let mut rng = rand::thread_rng();
    let (mut execs, mut saved) = (0u64, 0usize);
    let start = Instant::now();
    while start.elapsed() < time {
        for _ in 0..256 {
            let base = &corpus[rng.gen_range(0..corpus.len())];
            let other = &corpus[rng.gen_range(0..corpus.len())];
            let input = mutate(&mut rng, base, other);
            execs += 1;
            match run(target, &input) {
                Some(s) => {
                    if seen.insert(s) && corpus.len() < MAX_CORPUS {
                        if save && saved < MAX_SAVED {
                            saved += 1;
                            write(&dir, &input);
                        }
                        corpus.push(input);
                    }
                }
                None => crashes += save_crash(root, name, &input),
            }
        }
    }
    Report {
        execs,
        signatures: seen.len(),
        crashes,
    }
}

fn run(target: targets::Target, input: &[u8]) -> Option<String> {
    std::panic::catch_unwind(|| target(input)).ok()
}

fn mutate(rng: &mut impl Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let len = v.len();
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] = rng.gen();
            }
            2 => {
                let i = rng.gen_range(0..=len);
                let b = *b"\0\xff\x7f\x80%\"\\/.;=&[]{}\n:"
                    .get(rng.gen_range(0..19))
                    .unwrap_or(&0);
                v.insert(i, b);
            }
            3 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(16));
                v.drain(i..i + n);
            }
            4 if !other.is_empty() => {
                // Splice a piece of another input in.
                let a = rng.gen_range(0..other.len());
                let b = rng.gen_range(a..=other.len().min(a + 64));
                let i = rng.gen_range(0..=len);
                v.splice(i..i, other[a..b].iter().copied());
            }
            5 if len > 0 => {
                // Repeat a run: long values, deep nesting.
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(8));
                let piece = v[i..i + n].to_vec();
                for _ in 0..rng.gen_range(1..64) {
                    v.splice(i..i, piece.iter().copied());
                }
            }
            6 => {
                let mut extra = vec![0u8; rng.gen_range(1..16)];
                rng.fill(&mut extra[..]);
                let i = rng.gen_range(0..=len);
                v.splice(i..i, extra);
            }
            _ if len > 1 => v.truncate(rng.gen_range(0..len)),
            _ => v.push(rng.gen()),
        }
    }
    v.truncate(MAX_INPUT);
    v
}

fn load(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// Content-named, so the same input is stored once.
fn write(dir: &Path, input: &[u8]) -> PathBuf {
    let _ = std::fs::create_dir_all(dir);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    let path = dir.join(format!("{h:016x}"));
    let _ = std::fs::write(&path, input);
    path
}

fn save_crash(root: &Path, name: &str, input: &[u8]) -> usize {
    let path = write(&root.join("crashes").join(name), input);
    eprintln!("{name}: panic on input saved as {}", path.display());
    1
}
