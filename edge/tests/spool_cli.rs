//! `weir-edge spool inspect` and `spool fsck` as an operator runs them: exit codes and
//! output of the real binary on a spool with a damaged record.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use weir_edge::spool::{RECORD_HEADER_BYTES, Spool, SpoolConfig};

fn write_config(dir: &Path) -> PathBuf {
    let example = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/edge.example.toml")).unwrap();
    let spool = dir.join("spool");
    let text = example.replace("dir = \"spool\"", &format!("dir = {:?}", spool.display().to_string()));
    assert_ne!(text, example, "the example config's spool dir line changed");
    let path = dir.join("edge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn weir_edge(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_weir-edge")).args(args).env_remove("WEIR_CONFIG").output().unwrap();
    eprintln!("weir-edge {args:?}: {}\n{}{}", output.status, String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    output
}

#[tokio::test]
async fn fsck_fails_on_a_corrupt_record_until_repaired_and_inspect_shows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let config = config.to_str().unwrap();
    let spool_dir = tmp.path().join("spool");
    let spool = Spool::open(SpoolConfig::new(&spool_dir)).unwrap();
    for i in 0..5u8 {
        spool.append(Bytes::from(vec![i; 100])).await.unwrap();
    }
    drop(spool);
    assert!(weir_edge(&["spool", "fsck", "--config", config]).status.success(), "a clean spool passes");

    let segment = std::fs::read_dir(&spool_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut data = std::fs::read(&segment).unwrap();
    // Seq 2's payload.
    data[2 * (RECORD_HEADER_BYTES as usize + 100) + 50] ^= 1;
    std::fs::write(&segment, data).unwrap();

    let inspect = weir_edge(&["spool", "inspect", "--config", config, "--json"]);
    assert!(inspect.status.success());
    let report: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(report["pending"], 4);
    assert_eq!(report["corrupt"][0]["seq"], 2);
    let text = weir_edge(&["spool", "inspect", "--config", config]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("NOT dead-lettered yet"));

    let check = weir_edge(&["spool", "fsck", "--config", config]);
    assert!(!check.status.success(), "a corrupt record must fail fsck");
    assert!(String::from_utf8_lossy(&check.stderr).contains("--repair"));

    let repair = weir_edge(&["spool", "fsck", "--config", config, "--repair"]);
    assert!(repair.status.success());
    assert!(weir_edge(&["spool", "fsck", "--config", config]).status.success(), "repaired for good");
    let text = weir_edge(&["spool", "inspect", "--config", config]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("corrupt record") && !text.contains("NOT dead-lettered"), "{text}");
    let list = weir_edge(&["dead-letter", "list", "--config", config]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("seq 2"));
}
