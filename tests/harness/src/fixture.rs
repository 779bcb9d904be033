//! Legs and metadata as real files in a private temporary directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory with `n` leg files of `size` bytes and a metadata path; removed on drop.
pub struct Legs {
    pub dir: PathBuf,
    pub legs: Vec<PathBuf>,
    pub meta: PathBuf,
    pub size: u64,
}

impl Legs {
    /// Creates the files; `tag` keeps parallel tests apart (keep it short:
    /// the paths go into a cfgstring of at most 255 bytes).
    pub fn new(tag: &str, n: usize, size: u64) -> Legs {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("hmh{}-{seq}-{tag}", std::process::id()));
        fs::create_dir_all(&dir).expect("create the test directory");
        let legs: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("l{i}"))).collect();
        for leg in &legs {
            fs::File::create(leg).and_then(|f| f.set_len(size)).expect("create a leg file");
        }
        let meta = dir.join(format!("{tag}.meta"));
        Legs { dir, legs, meta, size }
    }

    /// The volume's name (the metadata file's stem when the cfgstring gives none).
    pub fn name(&self) -> String {
        self.meta.file_stem().unwrap().to_string_lossy().into_owned()
    }

    /// `hamirror/leg=...;leg=...;meta=...;initial_sync=none` plus `extra` (`;k=v...`).
    pub fn cfgstring(&self, extra: &str) -> String {
        let legs: Vec<String> = self.legs.iter().map(|p| p.display().to_string()).collect();
        let legs: String = legs.iter().map(|l| format!("leg={l};")).collect();
        format!("hamirror/{legs}meta={};initial_sync=none{extra}", self.meta.display())
    }

    /// The bytes of leg `i` in `[offset, offset+len)`.
    pub fn leg_bytes(&self, i: usize, offset: u64, len: usize) -> Vec<u8> {
        read_range(&self.legs[i], offset, len)
    }
}

fn read_range(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    fs::File::open(path).and_then(|f| f.read_exact_at(&mut buf, offset)).expect("read a leg");
    buf
}

impl Drop for Legs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Deterministic test data: a xorshift stream.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// Chunk sizes for scattering a buffer: odd sizes included.
    pub fn split(&mut self) -> Vec<usize> {
        let choices = [1usize, 7, 100, 511, 512, 513, 4096, 3000, 65536];
        (0..1 + self.below(5)).map(|_| choices[self.below(choices.len() as u64) as usize]).collect()
    }
}
