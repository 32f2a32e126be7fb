//! The `incarnation` file: a random 128-bit id that names this spool directory's life.
//!
//! Sequence numbers only count up within one spool directory; a spool that is wiped or
//! replaced starts again from 0. The forwarder puts the incarnation into the batch id
//! (`edge_id, incarnation, seq`) so such a restart can never repeat an id a core has
//! already seen and would drop as a duplicate.
//!
//! Owns creating (once, durably) and reading the file. Must never replace an existing
//! incarnation, nor guess one when the file is damaged: a guessed id could collide with
//! ids already sent, so `open` refuses instead.

use super::*;

pub(super) const INCARNATION_FILE: &str = "incarnation";
pub(super) const INCARNATION_TMP: &str = "incarnation.tmp";
const INCARNATION_MAGIC: u32 = u32::from_le_bytes(*b"WSI1");
/// `magic: u32 | id: [u8; 16] | crc32c(bytes 0..20): u32`.
const INCARNATION_BYTES: usize = 24;
const ID_BYTES: usize = 16;

/// Reads the spool's incarnation id as 32 lowercase hex digits, creating it first when
/// the directory has none (a new spool, or one written before incarnations existed).
pub(super) fn load_or_create_incarnation(dir: &Path) -> Result<String, SpoolError> {
    // Left by a crash while creating the file: that id was never read back, so never
    // used, and the next step makes a fresh one.
    let tmp = dir.join(INCARNATION_TMP);
    match fs::remove_file(&tmp) {
        Ok(()) => info!(file = %tmp.display(), "removed leftover spool incarnation tmp file"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("removing leftover", &tmp, e)),
    }
    if let Some(id) = read_incarnation(dir)? {
        return Ok(id);
    }
    let id = random_id(dir)?;
    store_incarnation(dir, &id)?;
    let hex = to_hex(&id);
    info!(dir = %dir.display(), incarnation = %hex, "spool incarnation created");
    Ok(hex)
}

/// The stored incarnation, `None` if there is no file. Read-only.
pub(super) fn read_incarnation(dir: &Path) -> Result<Option<String>, SpoolError> {
    let path = dir.join(INCARNATION_FILE);
    let data = match fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("reading", &path, e)),
    };
    // Only ever created whole by a rename after an fsync: damage happened on disk.
    let corrupt = |reason: String| {
        error!(file = %path.display(), reason = %reason, "spool incarnation file is damaged");
        Err(SpoolError::CorruptIncarnation {
            path: path.clone(),
            reason,
        })
    };
    let Ok(buf) = <[u8; INCARNATION_BYTES]>::try_from(data.as_slice()) else {
        return corrupt(format!(
            "{} bytes long, expected {INCARNATION_BYTES}",
            data.len()
        ));
    };
    if buf[..4] != INCARNATION_MAGIC.to_le_bytes() {
        return corrupt("bad magic".into());
    }
    if buf[20..] != crc32c::crc32c(&buf[..20]).to_le_bytes() {
        return corrupt("checksum mismatch".into());
    }
    Ok(Some(to_hex(&buf[4..20])))
}

fn encode_incarnation(id: &[u8; ID_BYTES]) -> [u8; INCARNATION_BYTES] {
    let mut buf = [0u8; INCARNATION_BYTES];
    buf[..4].copy_from_slice(&INCARNATION_MAGIC.to_le_bytes());
    buf[4..20].copy_from_slice(id);
    let crc = crc32c::crc32c(&buf[..20]);
    buf[20..].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// Write, fsync, rename, fsync the directory: once this returns, no crash can bring
/// back a spool without this id, and a crash before leaves no file at all.
fn store_incarnation(dir: &Path, id: &[u8; ID_BYTES]) -> Result<(), SpoolError> {
    replace_durably(
        dir,
        INCARNATION_TMP,
        INCARNATION_FILE,
        &encode_incarnation(id),
    )
}

fn random_id(dir: &Path) -> Result<[u8; ID_BYTES], SpoolError> {
    let mut id = [0u8; ID_BYTES];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut id))
        .map_err(|e| io_error("reading random bytes for the incarnation of", dir, e))?;
    Ok(id)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
