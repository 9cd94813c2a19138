//! The bounded, stable-toolchain runs of the fuzz targets (`weir_proto::fuzz_checks` and
//! `weir_storage::fuzz_checks`): each target's `parse` and `check` over (a) its committed seed
//! corpus `fuzz/corpus/{target}/` and cuts of every seed, (b) arbitrary bytes, and (c) seeds
//! mutated by bit flips, truncation, insertions, removals and length or count fields set to
//! huge or negative values (checksums recomputed most of the time, so the mutations reach the
//! checks behind the CRC).
//!
//! Each case runs on a worker thread with a deadline (a parser that loops forever fails the
//! test instead of hanging it) and under a counting allocator: the peak bytes `parse` holds at
//! once must stay within the target's `max_alloc` for the input's length, so a parser that
//! trusts a length field and reserves what it claims fails here.
//!
//! Included with `#[path]` by `proto/tests/fuzz_parsers.rs` and
//! `broker/storage/tests/storage_fuzz_parsers.rs`. `PROPTEST_CASES=100000` runs longer searches.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use weir_proto::fuzz_checks::Target;

/// How long one case may take before it counts as not terminating. Generous: debug builds on a
/// loaded 2-core machine; a real hang never finishes.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Allocation accounting, per thread (tests run in parallel; each case runs on its own thread).

struct CountingAlloc;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: allocations during thread teardown find the slots gone; they are not measured.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the bookkeeping only touches
// const-initialized thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Runs `f` and returns the most bytes it had allocated at once (on this thread).
fn peak_alloc(f: impl FnOnce()) -> usize {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    f();
    (PEAK.with(Cell::get) - start).max(0) as usize
}

// ---------------------------------------------------------------------------------------------
// One case.

/// Runs `target` on `input`: `parse` under the allocation bound, then `check`, on a worker
/// thread that must finish within [`DEADLINE`]. Panics (failing the proptest case, which then
/// shrinks) on any violation.
pub fn run_case(target: &Target, input: Vec<u8>) {
    let target = *target;
    let (done, finished) = mpsc::channel();
    let hex = hex_of(&input);
    let worker = std::thread::Builder::new()
        .name(format!("fuzz-{}", target.name))
        .spawn(move || {
            let peak = peak_alloc(|| (target.parse)(&input));
            let limit = (target.max_alloc)(input.len());
            assert!(
                peak <= limit,
                "{}: parsing {} bytes allocated {peak} bytes at once; the bound is {limit}",
                target.name,
                input.len()
            );
            (target.check)(&input);
            let _ = done.send(());
        })
        .expect("spawn a worker thread");
    match finished.recv_timeout(DEADLINE) {
        Ok(()) => worker.join().expect("worker finished"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            // The worker panicked: hand its panic to proptest, which shrinks the input.
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it returns"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!(
            "{}: did not finish within {DEADLINE:?} on input {hex}",
            target.name
        ),
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// The seed corpus.

/// The repository root: the nearest ancestor of the including crate that holds the spec.
pub fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("segments-format.md").exists() {
        assert!(
            dir.pop(),
            "no segments-format.md above {}",
            env!("CARGO_MANIFEST_DIR")
        );
    }
    dir
}

pub fn corpus_dir(target: &str) -> PathBuf {
    repo_root().join("fuzz").join("corpus").join(target)
}

/// The committed seeds of `target`, sorted by file name. Panics if there are none: a target
/// without seeds would silently test arbitrary bytes only.
pub fn load_corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading the seed corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read a seed"))
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// Replaces `target`'s committed corpus with `seeds` (run by the `regenerate_seed_corpus`
/// tests when `WEIR_REGENERATE_CORPUS=1`).
pub fn write_corpus(target: &str, seeds: &[(String, Vec<u8>)]) {
    let dir = corpus_dir(target);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the corpus dir");
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).expect("write a seed");
    }
}

/// Seeds plus cuts of each: a valid input and truncations of it, named `{seed}.cut{n}`.
pub fn with_truncations(seeds: Vec<(String, Vec<u8>)>, cuts: &[usize]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, bytes) in seeds {
        for &cut in cuts {
            if cut < bytes.len() {
                out.push((format!("{name}.cut{cut}"), bytes[..cut].to_vec()));
            }
        }
        out.push((name, bytes));
    }
    out
}

/// Whether the corpus should be rewritten from the generators.
pub fn regenerate() -> bool {
    std::env::var_os("WEIR_REGENERATE_CORPUS").is_some_and(|v| v == "1")
}

/// Every committed seed, and cuts of it: every length up to 256 bytes, then 64 evenly spaced
/// ones, then the last 64 (where a torn tail ends).
pub fn run_corpus(target: &Target) {
    for (_, seed) in load_corpus(target.name) {
        let len = seed.len();
        let mut cuts: Vec<usize> = (0..=len.min(256)).collect();
        cuts.extend((0..64).map(|i| len * i / 64));
        cuts.extend(len.saturating_sub(64)..=len);
        cuts.sort_unstable();
        cuts.dedup();
        for cut in cuts {
            run_case(target, seed[..cut].to_vec());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations of the seeds.

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index),
    SetByte(Index, u8),
    Truncate(Index),
    /// Overwrites `width` bytes at a random place with a big-endian extreme value.
    Extreme {
        at: Index,
        width: usize,
        value: Index,
    },
    /// Sets one of the target's known length or count fields to an extreme value.
    Field {
        field: Index,
        value: Index,
    },
    /// Overwrites bytes at a random place with a zigzag varint: huge, negative, null, overlong.
    Varint {
        at: Index,
        pattern: Index,
    },
    Insert {
        at: Index,
        bytes: Vec<u8>,
    },
    Remove {
        at: Index,
        len: usize,
    },
    /// Appends a copy of a slice of the input (a second batch, frame or line).
    Repeat {
        from: Index,
        len: usize,
    },
    /// Inserts (or writes over the input) one of the target's tokens, anywhere or at the
    /// start of a word of a text format (after a space or a line end).
    Token {
        at: Index,
        token: Index,
        over: bool,
        word_start: bool,
    },
}

const VARINTS: &[&[u8]] = &[
    &[0xfe, 0xff, 0xff, 0xff, 0x0f], // i32::MAX
    &[0xff, 0xff, 0xff, 0xff, 0x0f], // i32::MIN
    &[0x03],                         // -2: below the null length
    &[0x01],                         // -1: null
    &[
        0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
    ], // too long
    &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // i64::MAX
];

/// Extreme values of a `width`-byte big-endian field: all ones (-1 signed), the signed maximum
/// and minimum, a quarter of the range (a huge positive length: 1 GiB for 4 bytes), zero, one.
fn extreme(width: usize, pick: &Index) -> Vec<u8> {
    let bits = 8 * width as u32;
    let all = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let values = [all, all >> 1, 1u64 << (bits - 1), 1u64 << (bits - 2), 0, 1];
    let v = values[pick.index(values.len())];
    v.to_be_bytes()[8 - width..].to_vec()
}

fn overwrite(buf: &mut [u8], at: usize, bytes: &[u8]) {
    let end = (at + bytes.len()).min(buf.len());
    buf[at..end].copy_from_slice(&bytes[..end - at]);
}

fn apply(buf: &mut Vec<u8>, m: &Mutation, target: &Target) {
    let len = buf.len();
    match m {
        Mutation::FlipBit(i) if len > 0 => {
            let bit = i.index(len * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
        }
        Mutation::SetByte(i, b) if len > 0 => buf[i.index(len)] = *b,
        Mutation::Truncate(i) => buf.truncate(i.index(len + 1)),
        Mutation::Extreme { at, width, value } if len > 0 => {
            overwrite(buf, at.index(len), &extreme(*width, value))
        }
        Mutation::Field { field, value } if !target.length_fields.is_empty() => {
            let (at, width) = target.length_fields[field.index(target.length_fields.len())];
            if at < len {
                overwrite(buf, at, &extreme(width, value));
            }
        }
        Mutation::Varint { at, pattern } if len > 0 => {
            overwrite(buf, at.index(len), VARINTS[pattern.index(VARINTS.len())])
        }
        Mutation::Insert { at, bytes } => {
            let at = at.index(len + 1);
            buf.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, len: n } if len > 0 => {
            let at = at.index(len);
            buf.drain(at..(at + n).min(len));
        }
        Mutation::Token {
            at,
            token,
            over,
            word_start,
        } if !target.tokens.is_empty() => {
            let token = target.tokens[token.index(target.tokens.len())];
            let at = if *word_start {
                let starts: Vec<usize> = (0..=len)
                    .filter(|&i| i == 0 || matches!(buf[i - 1], b' ' | b'\n'))
                    .collect();
                starts[at.index(starts.len())]
            } else {
                at.index(len + 1)
            };
            if *over && at < len {
                overwrite(buf, at, token);
            } else {
                buf.splice(at..at, token.iter().copied());
            }
        }
        Mutation::Repeat { from, len: n } if len > 0 => {
            let from = from.index(len);
            let slice = buf[from..(from + n).min(len)].to_vec();
            buf.extend_from_slice(&slice);
        }
        _ => {}
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => any::<Index>().prop_map(Mutation::FlipBit),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), prop::sample::select(vec![1usize, 2, 4, 8]), any::<Index>())
            .prop_map(|(at, width, value)| Mutation::Extreme { at, width, value }),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(field, value)| Mutation::Field { field, value }),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(at, pattern)| Mutation::Varint { at, pattern }),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<Index>(), 1usize..64).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => (any::<Index>(), 1usize..4096).prop_map(|(from, len)| Mutation::Repeat { from, len }),
        3 => (any::<Index>(), any::<Index>(), any::<bool>(), any::<bool>()).prop_map(
            |(at, token, over, word_start)| Mutation::Token { at, token, over, word_start }
        ),
    ]
}

/// Seeds of `target`'s committed corpus with 1 to 4 mutations; checksums recomputed after
/// them 3 times in 4. Whole seeds are picked 4 times in 5 (cuts are most of the corpus, and
/// mutations of a whole valid input reach deeper).
pub fn mutated(target: &Target) -> impl Strategy<Value = Vec<u8>> + use<> {
    let (cuts, whole): (Vec<_>, Vec<_>) = load_corpus(target.name)
        .into_iter()
        .partition(|(name, _)| name.contains(".cut"));
    let pick = |seeds: Vec<(String, Vec<u8>)>| {
        prop::sample::select(seeds.into_iter().map(|(_, b)| b).collect::<Vec<_>>())
    };
    let seed = if cuts.is_empty() {
        pick(whole).boxed()
    } else {
        prop_oneof![4 => pick(whole), 1 => pick(cuts)].boxed()
    };
    let target = *target;
    (
        seed,
        prop::collection::vec(mutation(), 1..5),
        prop::bool::weighted(0.75),
    )
        .prop_map(move |(mut input, mutations, fix)| {
            for m in &mutations {
                apply(&mut input, m, &target);
            }
            if fix {
                (target.fix_checksums)(&mut input);
            }
            input
        })
}

/// Arbitrary bytes, up to 2 KiB.
pub fn arbitrary_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..2048)
}

/// The tests of each named target: its corpus, arbitrary bytes, mutated seeds.
macro_rules! fuzz_target_tests {
    ($targets:expr; $($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                use proptest::prelude::*;

                fn target() -> weir_proto::fuzz_checks::Target {
                    *$targets
                        .iter()
                        .find(|t| t.name == stringify!($name))
                        .expect("a target of this name")
                }

                #[test]
                fn seed_corpus_and_its_cuts() {
                    crate::fuzz_harness::run_corpus(&target());
                }

                proptest! {
                    #[test]
                    fn arbitrary_bytes(input in crate::fuzz_harness::arbitrary_bytes()) {
                        crate::fuzz_harness::run_case(&target(), input);
                    }

                    #[test]
                    fn mutated_seeds(input in crate::fuzz_harness::mutated(&target())) {
                        crate::fuzz_harness::run_case(&target(), input);
                    }
                }
            }
        )*
    };
}

/// A libFuzzer dictionary of `tokens`: one quoted token a line, bytes outside printable ASCII
/// (and `"` and `\\`) as `\\xNN`.
pub fn dictionary(tokens: &[&[u8]]) -> String {
    let mut out = String::from(
        "# Generated from the target's tokens (weir fuzz_checks); see fuzz/README.md.\n",
    );
    for token in tokens {
        out.push('"');
        for &b in *token {
            if b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ' {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
        out.push_str("\"\n");
    }
    out
}

/// Checks that `fuzz/fuzz_targets/{name}.rs` exists, calls the named check, and is declared
/// in `fuzz/Cargo.toml`, and that targets with tokens have them as `fuzz/dicts/{name}.dict`
/// (written when `WEIR_REGENERATE_CORPUS=1`), for every target: the fuzz crate is outside the
/// workspace (it needs nightly), so this is what keeps it in step with the checks.
pub fn fuzz_crate_declares(targets: &[Target], module: &str) {
    let fuzz = repo_root().join("fuzz");
    for t in targets.iter().filter(|t| !t.tokens.is_empty()) {
        let path = fuzz.join("dicts").join(format!("{}.dict", t.name));
        let want = dictionary(t.tokens);
        if regenerate() {
            std::fs::create_dir_all(fuzz.join("dicts")).expect("create fuzz/dicts");
            std::fs::write(&path, &want).expect("write a dictionary");
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is not the target's tokens; rerun with WEIR_REGENERATE_CORPUS=1",
            path.display()
        );
    }
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for t in targets {
        let path = fuzz.join("fuzz_targets").join(format!("{}.rs", t.name));
        let source =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let call = format!("{module}::check_{}(", t.name);
        assert!(
            source.contains(&call),
            "{} does not call {call}",
            path.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{}\"", t.name))
                && manifest.contains(&format!("path = \"fuzz_targets/{}.rs\"", t.name)),
            "fuzz/Cargo.toml has no [[bin]] for {}",
            t.name
        );
    }
}
