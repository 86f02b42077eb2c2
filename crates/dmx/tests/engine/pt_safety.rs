//! No execution, proven: pickles that would create a file (through `posix.system` and
//! `builtins.eval`) if they were unpickled go through every engine operation (compress,
//! info, verify, reading a tensor, decompress, lossy compress) byte-exact, and the file never appears.

use dmx_testkit as common;

use std::path::{Path, PathBuf};

use dmx::dmx_format::EntryKind;
use dmx::lossy::{LossyOptions, Mode as LossyMode};
use dmx::{Archive, Options};

fn quiet() -> Options {
    Options {
        no_sync: true,
        threads: Some(2),
        ..Options::default()
    }
}

/// One STORED zip member, as `torch.save` lays it out (no data descriptor).
fn member(out: &mut Vec<u8>, central: &mut Vec<u8>, name: &str, data: &[u8]) {
    let crc = dmx_pt::zip::crc32(data);
    let local = out.len() as u32;
    let n = data.len() as u32;
    let mut fixed = Vec::new();
    fixed.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date
    fixed.extend_from_slice(&crc.to_le_bytes());
    fixed.extend_from_slice(&n.to_le_bytes());
    fixed.extend_from_slice(&n.to_le_bytes());
    fixed.extend_from_slice(&(name.len() as u16).to_le_bytes());
    fixed.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(b"PK\x03\x04");
    out.extend_from_slice(&fixed);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(data);
    central.extend_from_slice(b"PK\x01\x02\x14\x00");
    central.extend_from_slice(&fixed);
    central.extend_from_slice(&[0; 10]); // comment length, disk, attributes
    central.extend_from_slice(&local.to_le_bytes());
    central.extend_from_slice(name.as_bytes());
}

/// A `torch.save`-style zip holding one F32 tensor `weight` (storage `0`) and two objects
/// that would create `marker` if unpickled: `posix.system("touch marker")` and
/// `builtins.eval("open(marker, 'w')")`.
fn hostile_zip(marker: &Path) -> Vec<u8> {
    let m = marker.to_str().expect("utf-8 temp path");
    let mut pkl = b"\x80\x02}q\x00(X\x06\x00\x00\x00weightq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x08tQK\x00K\x02K\x04\x86K\x04K\x01\x86\x89ccollections\nOrderedDict\n)Rtq\x05R".to_vec();
    let system = format!("touch {m}");
    let eval = format!("open({m:?}, 'w')");
    for (key, global, arg) in [
        (b"X\x06\x00\x00\x00system", "posix\nsystem\n", system),
        (b"X\x06\x00\x00\x00eval()", "builtins\neval\n", eval),
    ] {
        pkl.extend_from_slice(key);
        pkl.push(b'c');
        pkl.extend_from_slice(global.as_bytes());
        pkl.push(b'X');
        pkl.extend_from_slice(&(arg.len() as u32).to_le_bytes());
        pkl.extend_from_slice(arg.as_bytes());
        pkl.extend_from_slice(b"\x85R");
    }
    pkl.extend_from_slice(b"u.");
    let weights: Vec<u8> = (0..8u32)
        .flat_map(|i| (i as f32 * 0.37 - 1.0).to_le_bytes())
        .collect();
    let (mut out, mut central) = (Vec::new(), Vec::new());
    member(&mut out, &mut central, "evil/data.pkl", &pkl);
    member(&mut out, &mut central, "evil/byteorder", b"little");
    member(&mut out, &mut central, "evil/data/0", &weights);
    member(&mut out, &mut central, "evil/version", b"3\n");
    let (cd_at, cd_len) = (out.len() as u32, central.len() as u32);
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00\x04\x00\x04\x00");
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_at.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// The committed dmx-pt fixture made by `torch.save` of objects whose `__reduce__` calls
/// `os.system` / `eval` to create this marker.
const FIXTURE_MARKER: &str = "/tmp/dmx_pt_pwned_marker";

fn fixture_malicious() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dmx-pt/tests/fixtures/malicious.pt")
}

/// Runs every operation on `input` (a hostile file) and checks the results.
fn every_operation(dir: &Path, input: &Path, tag: &str) {
    let original = std::fs::read(input).unwrap();
    let packed = dir.join(format!("{tag}.dmx"));
    let report = dmx::compress(input, &packed, &quiet()).expect("compress");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("system") && w.contains("nothing executed")),
        "{:?}",
        report.warnings
    );
    let archive = Archive::open(&packed).expect("open");
    let entry = &archive.index().entries[0];
    assert_eq!(entry.kind, EntryKind::Torch);
    let stats = dmx::Stats::of_archive(&archive);
    assert!(stats.tensors >= 1);
    assert!(dmx::verify(&archive, Some(input), &quiet()).unwrap().ok);
    assert!(dmx::verify(&archive, None, &quiet()).unwrap().ok);
    let weight = archive
        .tensors()
        .find(|t| t.info.name == "weight")
        .expect("the weight tensor");
    // Reading the tensor decodes its storage only (extraction to safetensors is not
    // available for torch entries yet).
    let data = archive.read_tensor_ref(weight).unwrap();
    let at = weight.segment.offset as usize;
    assert_eq!(data, original[at..at + data.len()]);
    let restored = dir.join(format!("{tag}.restored.pt"));
    dmx::decompress(&packed, &restored, &quiet()).expect("decompress");
    assert!(
        std::fs::read(&restored).unwrap() == original,
        "{tag}: bytes"
    );
    // Lossy: only the float storage changes; the hostile pickle is kept as it is.
    let lossy = LossyOptions {
        mode: LossyMode::Int16,
        ..LossyOptions::default()
    };
    let lossy_packed = dir.join(format!("{tag}.lossy.dmx"));
    dmx::compress_with(input, &lossy_packed, &lossy, &quiet()).expect("lossy compress");
    let lossy_restored = dir.join(format!("{tag}.lossy.pt"));
    dmx::decompress(&lossy_packed, &lossy_restored, &quiet()).expect("lossy decompress");
    let back = std::fs::read(&lossy_restored).unwrap();
    assert_eq!(back.len(), original.len());
    let pickle = dmx_pt::scan(&original).unwrap().pickle;
    let p = pickle.start as usize..pickle.end as usize;
    assert_eq!(back[p.clone()], original[p], "{tag}: pickle changed");
}

#[test]
fn hostile_pickles_are_stored_and_restored_and_never_run() {
    let dir = common::scratch();
    let marker = dir.path().join("pwned-marker");
    let crafted = dir.path().join("crafted.pt");
    common::write(&crafted, &hostile_zip(&marker));
    // The crafted file really holds the calls, with the marker's path.
    let layout = dmx_pt::scan(&std::fs::read(&crafted).unwrap()).unwrap();
    let w = layout.warnings.join("; ");
    assert!(
        w.contains("posix.system") && w.contains("builtins.eval"),
        "{w}"
    );
    every_operation(dir.path(), &crafted, "crafted");
    assert!(!marker.exists(), "the crafted pickle ran");

    // The fixture written by torch.save: its marker is a fixed path, so it is only checked
    // when no earlier run left it behind.
    let fixed = Path::new(FIXTURE_MARKER);
    let was_there = fixed.exists();
    every_operation(dir.path(), &fixture_malicious(), "fixture");
    if !was_there {
        assert!(!fixed.exists(), "the fixture's pickle ran");
    }
}
