//! A file's identity: the blake3 of its first `fingerprint_bytes` bytes of content
//! (decompressed for `.gz`), so that a renamed file is recognised by what it holds,
//! whatever its name or inode, and a compressed copy of a file already read matches it.
//!
//! Rule for short files: a plain file shorter than `fingerprint_bytes` has no fingerprint
//! yet and is not read until it is that long (it is still being started; its lines wait).
//! A `.gz` file is complete when it appears, so one whose whole content is shorter is
//! fingerprinted over all of it. A `.gz` whose stream is cut off or broken has no
//! fingerprint (it may still be being written; it is tried again at the next scan).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use flate2::read::MultiGzDecoder;

/// 128 bits of blake3, as 32 hex digits (the checkpoint file's keys).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub String);

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn of_bytes(bytes: &[u8]) -> Fingerprint {
    let hash = blake3::hash(bytes);
    Fingerprint(hash.as_bytes()[..16].iter().map(|b| format!("{b:02x}")).collect())
}

/// The fingerprint of a plain file: `None` while it is shorter than `n` bytes.
pub fn plain(file: &File, n: usize) -> io::Result<Option<Fingerprint>> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => return Ok(None),
            Ok(read) => filled += read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(of_bytes(&buf)))
}

/// The fingerprint of a gzip file's content: its first `n` decompressed bytes, or all of
/// them when the content is shorter; `None` when the stream is cut off or not gzip.
pub fn gz(file: &File, n: usize) -> io::Result<Option<Fingerprint>> {
    let mut decoder = MultiGzDecoder::new(ReadAt { file, pos: 0 });
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match decoder.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((filled > 0).then(|| of_bytes(&buf[..filled])))
}

/// Reads a shared file from its start without moving its cursor.
pub struct ReadAt<'a> {
    pub file: &'a File,
    pub pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_gz_copy_has_the_fingerprint_of_its_plain_file_and_short_files_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..3000u32).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        std::fs::write(dir.path().join("a.log"), &content).unwrap();
        std::fs::write(dir.path().join("a.log.gz"), gzip(&content)).unwrap();
        std::fs::write(dir.path().join("short.log"), &content[..100]).unwrap();
        let open = |name: &str| File::open(dir.path().join(name)).unwrap();
        let plain_fp = plain(&open("a.log"), 1024).unwrap().unwrap();
        assert_eq!(gz(&open("a.log.gz"), 1024).unwrap(), Some(plain_fp.clone()));
        assert_eq!(plain_fp.0.len(), 32);
        assert_eq!(plain(&open("short.log"), 1024).unwrap(), None);
        // Another file with the same first KiB is "the same file"; a different start is not.
        let mut other = content[..1024].to_vec();
        other.extend_from_slice(b"different tail\n");
        std::fs::write(dir.path().join("b.log"), &other).unwrap();
        assert_eq!(plain(&open("b.log"), 1024).unwrap(), Some(plain_fp.clone()));
        std::fs::write(dir.path().join("c.log"), &content[1..]).unwrap();
        assert_ne!(plain(&open("c.log"), 1024).unwrap(), Some(plain_fp));
    }

    #[test]
    fn a_short_gz_is_fingerprinted_whole_and_a_cut_one_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let packed = gzip(b"just one line\n");
        std::fs::write(dir.path().join("s.gz"), &packed).unwrap();
        std::fs::write(dir.path().join("cut.gz"), &packed[..packed.len() - 6]).unwrap();
        std::fs::write(dir.path().join("junk.gz"), b"not gzip at all").unwrap();
        let open = |name: &str| File::open(dir.path().join(name)).unwrap();
        assert!(gz(&open("s.gz"), 1024).unwrap().is_some());
        assert_eq!(gz(&open("cut.gz"), 1024).unwrap(), None);
        assert_eq!(gz(&open("junk.gz"), 1024).unwrap(), None);
    }
}
