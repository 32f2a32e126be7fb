//! The compiled-plugin cache cannot be used to run code the node did not
//! compile: an entry is used only if its keyed hash verifies with the node's
//! own key and matches its name, so a corrupted entry, another plugin's entry
//! and another node's entry are all recompiled instead of loaded; a cache
//! directory or key file that others could write is refused at start.

use crate::common::{batch, test_config, wasm};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use weir_plugin_host::{Error, ParserRegistry, PluginConfig, Value};

/// A registry of one plugin, the default parser, caching in `cache`.
fn load(cache: &Path, plugin: &str) -> Result<ParserRegistry, Error> {
    let mut config = test_config();
    config.cache_dir = Some(cache.to_path_buf());
    config
        .plugins
        .insert(plugin.into(), PluginConfig::new(wasm(plugin), &[]));
    config.default = Some(plugin.into());
    ParserRegistry::new(&config)
}

/// Which plugin parsed `a=1`: `chaos` adds `calls`, `kv` parses `a`.
fn parsed_by(registry: &ParserRegistry) -> &'static str {
    let events = registry.parse("test", None, batch(&["a=1"]));
    let e = &events[0];
    assert_eq!(e.error(), None, "{:?}", e.to_json());
    match (e.get("calls"), e.get("a")) {
        (Some(_), None) => "chaos",
        (None, Some(Value::Int(1) | Value::Text(_))) => "kv",
        _ => panic!("unknown output {:?}", e.to_json()),
    }
}

/// The cache entries of `dir` (the key is not one).
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list cache")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    found.sort();
    found
}

/// The only entry of a cache that holds one plugin.
fn only_entry(dir: &Path) -> PathBuf {
    let found = entries(dir);
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().expect("one entry")
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").ino()
}

#[test]
fn entries_are_reused_and_the_key_is_private_to_the_user() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("new/plugin-cache");
    assert_eq!(
        parsed_by(&load(&dir, "chaos").expect("first load")),
        "chaos"
    );
    assert_eq!(
        std::fs::metadata(&dir).expect("dir").mode() & 0o777,
        0o700,
        "a cache directory the host creates is private"
    );
    let key = std::fs::metadata(dir.join("cache.key")).expect("the key was created");
    assert_eq!((key.mode() & 0o777, key.len()), (0o600, 32));
    let entry = only_entry(&dir);
    let written = inode(&entry);
    assert_eq!(
        parsed_by(&load(&dir, "chaos").expect("second load")),
        "chaos"
    );
    assert_eq!(
        inode(&entry),
        written,
        "a valid entry is loaded, not compiled and written again"
    );
}

#[test]
fn another_plugins_entry_under_this_plugins_name_is_recompiled_not_run() {
    // Both entries are genuine artifacts of this engine, so wasmtime would
    // load either under either name: only the keyed hash, which covers the
    // entry's name, tells them apart.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cache");
    load(&dir, "chaos").expect("load chaos");
    let chaos_entry = only_entry(&dir);
    load(&dir, "kv").expect("load kv");
    let kv_entry = entries(&dir)
        .into_iter()
        .find(|p| *p != chaos_entry)
        .expect("kv's entry");
    let kv_bytes = std::fs::read(&kv_entry).expect("read");
    std::fs::write(&chaos_entry, &kv_bytes).expect("swap kv's entry in");

    let registry = load(&dir, "chaos").expect("load chaos again");
    assert_eq!(
        parsed_by(&registry),
        "chaos",
        "the plugin ran kv's compiled code from a swapped cache entry"
    );
    assert_ne!(
        std::fs::read(&chaos_entry).expect("read"),
        kv_bytes,
        "the swapped entry must have been replaced by a fresh compile"
    );
    assert_eq!(parsed_by(&load(&dir, "chaos").expect("load")), "chaos");
}

#[test]
fn another_nodes_entry_is_recompiled_not_run() {
    // The same plugin compiled by another node (another key): a valid
    // artifact, but not one this node wrote.
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ours, theirs) = (tmp.path().join("ours"), tmp.path().join("theirs"));
    load(&theirs, "chaos").expect("load on the other node");
    let foreign = std::fs::read(only_entry(&theirs)).expect("read");
    std::fs::create_dir(&ours).expect("mkdir");
    let entry = ours.join(only_entry(&theirs).file_name().expect("name"));
    std::fs::write(&entry, &foreign).expect("plant the other node's entry");

    assert_eq!(parsed_by(&load(&ours, "chaos").expect("load")), "chaos");
    assert_ne!(
        std::fs::read(&entry).expect("read"),
        foreign,
        "an entry written with another node's key was loaded"
    );
    let kept = inode(&entry);
    load(&ours, "chaos").expect("load again");
    assert_eq!(inode(&entry), kept, "the recompiled entry verifies");
}

#[test]
fn a_corrupted_entry_is_discarded_and_recompiled() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cache");
    load(&dir, "chaos").expect("load");
    let entry = only_entry(&dir);
    let good = std::fs::read(&entry).expect("read");
    for (what, at) in [("code", good.len() / 2), ("keyed hash", good.len() - 1)] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        std::fs::write(&entry, &bad).expect("corrupt");
        assert_eq!(
            parsed_by(&load(&dir, "chaos").expect("load")),
            "chaos",
            "{what}"
        );
        assert_ne!(
            std::fs::read(&entry).expect("read"),
            bad,
            "{what}: the corrupted entry must have been replaced"
        );
    }
    std::fs::write(&entry, b"short").expect("truncate");
    assert_eq!(parsed_by(&load(&dir, "chaos").expect("load")), "chaos");
}

/// The user id of this process (the owner of a file it creates).
fn my_uid(dir: &Path) -> u32 {
    let probe = dir.join("probe");
    std::fs::write(&probe, b"").expect("probe");
    std::fs::metadata(&probe).expect("stat").uid()
}

fn refused(dir: &Path) -> Error {
    load(dir, "chaos")
        .err()
        .unwrap_or_else(|| panic!("cache {} must be refused", dir.display()))
}

#[test]
fn a_cache_directory_others_could_write_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for mode in [0o777, 0o775, 0o1777, 0o757] {
        let dir = tmp.path().join(format!("mode-{mode:o}"));
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let err = refused(&dir);
        let text = err.to_string();
        assert!(
            matches!(&err, Error::CacheDir { path, .. } if path == &dir)
                && text.contains(&dir.display().to_string())
                && text.contains("lets group or others write")
                && text.contains("chmod 700"),
            "{text}"
        );
        assert!(
            entries(&dir).is_empty() && !dir.join("cache.key").exists(),
            "nothing may be read or written in a refused directory"
        );
    }

    // Not owned by this user: as root, a directory given to `nobody`;
    // otherwise `/`, which root owns.
    let other = if my_uid(tmp.path()) == 0 {
        let dir = tmp.path().join("nobody");
        std::fs::create_dir(&dir).expect("mkdir");
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
        dir
    } else {
        PathBuf::from("/")
    };
    let err = refused(&other);
    assert!(
        matches!(&err, Error::CacheDir { .. }) && err.to_string().contains("is owned by uid"),
        "{err}"
    );
}

#[test]
fn a_key_file_others_could_read_or_that_is_not_a_key_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cache");
    load(&dir, "chaos").expect("load");
    let key = dir.join("cache.key");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let err = refused(&dir);
    assert!(
        matches!(&err, Error::CacheKey { path, .. } if path == &key)
            && err.to_string().contains("mode 0600"),
        "{err}"
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(&key, b"too short").expect("write");
    let err = refused(&dir);
    assert!(
        err.to_string().contains("holds 9 bytes instead of 32"),
        "{err}"
    );

    std::fs::remove_file(&key).expect("rm");
    let elsewhere = tmp.path().join("elsewhere.key");
    std::fs::write(&elsewhere, [7u8; 32]).expect("write");
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::symlink(&elsewhere, &key).expect("symlink");
    let err = refused(&dir);
    assert!(err.to_string().contains("symbolic link"), "{err}");

    // Deleting the key is the documented way out: a new one is made, and the
    // entries written with the old one are recompiled.
    std::fs::remove_file(&key).expect("rm");
    let entry = only_entry(&dir);
    let old = std::fs::read(&entry).expect("read");
    assert_eq!(
        parsed_by(&load(&dir, "chaos").expect("load with a new key")),
        "chaos"
    );
    assert_ne!(std::fs::read(&entry).expect("read"), old);
}
