//! CLI hygiene (issue 11, findings 4, 5, 12, 14): `--threads` capped at the work and the
//! cores, quiet exits on a closed stdout pipe, names from archives shown with their control
//! characters escaped, and clear messages for foreign, extended and dangling inputs.

use dmx_testkit as common;

use crate::support::{dmx, json, run, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Mode, Tensor};
use dmx::dmx_format::{SegmentKind, Trailer};

/// A small model: a BF16 matrix, an F32 vector and an I64 vector, `seed` varying the values.
fn model(seed: u64, names: [&str; 3]) -> Vec<u8> {
    let tensors = vec![
        Tensor::generated(names[0], "BF16", &[32, 64], Mode::Weights, seed),
        Tensor::generated(names[1], "F32", &[100], Mode::Weights, seed + 1),
        Tensor::generated(names[2], "I64", &[9], Mode::Weights, seed + 2),
    ];
    common::safetensors(&tensors, &common::Layout::default())
}

const PLAIN: [&str; 3] = ["model.embed.weight", "model.norm.weight", "ids"];

/// Names that try to clear the screen, rewrite the line, forge report lines and reverse the
/// text around them.
const EVIL: [&str; 3] = [
    "\x1b[2J\x1b[Hclear.weight",
    "norm\rverify: all checks passed\nOK   forged\u{202e}gnp.exe\u{9b}31m",
    "ids\u{2066}\x07\x7f",
];

/// A scratch folder with `m.safetensors`, `m.dmx`, `n.safetensors` (other values), a delta
/// `d.dmxd` from `m` to `n` and a chain `chain/` of both.
fn scratch(names: [&str; 3]) -> tempfile::TempDir {
    let tmp = common::scratch();
    let d = tmp.path();
    common::write(&d.join("m.safetensors"), &model(1, names));
    common::write(&d.join("n.safetensors"), &model(2, names));
    run(d, &["compress", "m.safetensors", "m.dmx", "-q"], 0);
    run(
        d,
        &[
            "delta-compress",
            "m.safetensors",
            "n.safetensors",
            "d.dmxd",
            "-q",
        ],
        0,
    );
    run(
        d,
        &[
            "chain-compress",
            "m.safetensors",
            "n.safetensors",
            "--output-dir",
            "chain",
            "-q",
        ],
        0,
    );
    tmp
}

/// Every command that prints a report on stdout, with its exit status.
fn printing_commands() -> Vec<(Vec<&'static str>, i32)> {
    vec![
        (vec!["info", "m.dmx"], 0),
        (vec!["info", "m.dmx", "--json"], 0),
        (vec!["info", "m.dmx", "--tensors"], 0),
        (vec!["verify", "m.dmx"], 0),
        (vec!["verify", "m.dmx", "--json"], 0),
        (vec!["verify", "m.safetensors", "m.dmx"], 0),
        (vec!["verify", "n.safetensors", "m.dmx"], 1),
        (vec!["verify", "chain"], 0),
        (vec!["verify", "chain", "--json"], 0),
        (vec!["delta-info", "d.dmxd"], 0),
        (vec!["delta-info", "d.dmxd", "--json"], 0),
        (vec!["chain-info", "chain"], 0),
        (vec!["chain-info", "chain", "--json"], 0),
        (vec!["diff", "m.safetensors", "n.safetensors"], 0),
        (vec!["diff", "m.dmx", "n.safetensors", "--json"], 0),
        (vec!["bench", "m.safetensors", "--reps", "1"], 0),
        (vec!["bench", "m.safetensors", "--reps", "1", "--json"], 0),
        (
            vec!["compress", "n.safetensors", "j.dmx", "--json", "-f"],
            0,
        ),
    ]
}

/// Runs `dmx ARGS` with stdout a pipe whose reader is already gone, so that the first write
/// fails with `EPIPE` every time (no race with a reader that exits early).
fn run_into_closed_pipe(dir: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    dmx(dir, args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run dmx")
}

/// Finding 5: `dmx info X | head -1` panicked ("failed printing to stdout: Broken pipe",
/// exit 101). Every printing command now stops quietly: no message, the command's own exit
/// status.
#[test]
fn a_closed_stdout_pipe_ends_every_command_quietly() {
    let tmp = scratch(PLAIN);
    let mut commands = printing_commands();
    // Binary output too: a restore to standard output whose reader went away.
    commands.push((vec!["decompress", "m.dmx", "-", "-q"], 0));
    for (args, code) in commands {
        let out = run_into_closed_pipe(tmp.path(), &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(
            stderr.is_empty() || (code == 1 && !stderr.contains("panicked")),
            "{args:?}: {stderr}"
        );
    }
}

/// Progress and summaries go to stderr: a closed stderr pipe is no reason to panic or fail.
#[test]
fn a_closed_stderr_pipe_is_ignored() {
    let tmp = scratch(PLAIN);
    for args in [
        vec!["compress", "m.safetensors", "x.dmx"],
        vec!["decompress", "x.dmx", "x.safetensors"],
        vec!["info", "nothing.dmx"],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = dmx(tmp.path(), &args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(writer))
            .output()
            .expect("run dmx");
        let code = if args[0] == "info" { 2 } else { 0 };
        assert_eq!(out.status.code(), Some(code), "{args:?}");
    }
    assert_eq!(
        std::fs::read(tmp.path().join("x.safetensors")).unwrap(),
        std::fs::read(tmp.path().join("m.safetensors")).unwrap()
    );
}

/// No raw control or bidi character in human output.
fn assert_clean(what: &str, s: &str) {
    let bad: Vec<char> = s
        .chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
        })
        .collect();
    assert!(bad.is_empty(), "{what}: raw {bad:?} in\n{s}");
    // Only the genuine verdict, on the last line, may say that all checks passed.
    let lines: Vec<&str> = s.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let l = line.trim_start();
        let verdict = l.starts_with("verify: all checks passed") && i + 1 == lines.len();
        assert!(
            verdict
                || !(l.starts_with("verify: all checks passed") || l.starts_with("OK   forged")),
            "{what}: forged line {line:?} in\n{s}"
        );
    }
}

/// Finding 12: tensor and file names from an archive reached the terminal raw (`info`,
/// `verify`, `diff`, `delta-info`, `chain-info`, error messages): an archive could clear the
/// screen or forge "all checks passed". Human output escapes them; JSON keeps them exact.
#[test]
fn names_with_terminal_escapes_are_shown_escaped() {
    let tmp = scratch(EVIL);
    let d = tmp.path();
    for (args, code) in printing_commands() {
        let (stdout, stderr) = run(d, &args, code);
        let what = format!("{args:?}");
        assert_clean(&what, &stderr);
        if args.contains(&"--json") {
            // serde escapes controls; the names come back exactly.
            let v = json(&stdout);
            if args[0] == "info" {
                let names: Vec<&str> = v["files"][0]["tensors"]
                    .as_array()
                    .expect("tensors")
                    .iter()
                    .filter_map(|t| t["name"].as_str())
                    .collect();
                for name in EVIL {
                    assert!(names.contains(&name), "{what}: {name:?} not in {names:?}");
                }
            }
        } else {
            assert_clean(&what, &stdout);
        }
        if matches!(args[0], "info" | "diff") && !args.contains(&"--json") {
            assert!(stdout.contains("\\x1b[2J"), "{what}: {stdout}");
            assert!(stdout.contains("\\u{202e}"), "{what}: {stdout}");
        }
    }
    // The genuine verdict is still there, once.
    let (stdout, _) = run(d, &["verify", "m.dmx"], 0);
    let verdicts = stdout.lines().filter(|l| l.starts_with("verify: ")).count();
    assert_eq!(verdicts, 1, "{stdout}");

    // File names of a folder archive, and error messages quoting names.
    let folder = d.join("folder");
    std::fs::create_dir(&folder).unwrap();
    let evil_file = "a\x1b]0;pwned\x07\rOK   forged\n.bin";
    common::write(&folder.join(evil_file), b"hello");
    common::write(&folder.join("model.safetensors"), &model(3, EVIL));
    run(d, &["compress", "folder", "f.dmx", "-q"], 0);
    for args in [
        vec!["info", "f.dmx"],
        vec!["verify", "f.dmx"],
        vec!["compress", "folder", "f2.dmx"],
        vec!["extract", "f.dmx", "e.safetensors", "--tensor", EVIL[0]],
        vec![
            "extract",
            "m.dmx",
            "e.safetensors",
            "--tensor",
            "\x1b[31mnone",
        ],
        vec!["info", "\x1b[2Jmissing.dmx"],
    ] {
        let out = dmx(d, &args).output().expect("run dmx");
        let what = format!("{args:?}");
        assert!(
            matches!(out.status.code(), Some(0..=2)),
            "{what}: {:?}",
            out.status
        );
        assert_clean(&what, &text(&out.stdout));
        assert_clean(&what, &text(&out.stderr));
    }
    // Chain entry names come from checkpoint file names; a delta lists removed tensors.
    let evil_ckpt = "\x1b[2Jck\rOK   forged\u{202e}.safetensors";
    common::write(&d.join(evil_ckpt), &model(4, EVIL));
    common::write(&d.join("plain.safetensors"), &model(5, PLAIN));
    run(
        d,
        &["chain-compress", evil_ckpt, "--output-dir", "c2", "-q"],
        0,
    );
    run(
        d,
        &[
            "delta-compress",
            "m.safetensors",
            "plain.safetensors",
            "p.dmxd",
            "-q",
        ],
        0,
    );
    for args in [
        vec!["chain-info", "c2"],
        vec!["verify", "c2"],
        vec!["chain-reconstruct", "c2", "--output-dir", "c2out"],
        vec!["chain-append", "c2", evil_ckpt],
        vec!["delta-info", "p.dmxd"],
        vec![
            "delta-compress",
            "m.safetensors",
            "plain.safetensors",
            "p2.dmxd",
        ],
    ] {
        let (stdout, stderr) = run(d, &args, 0);
        let what = format!("{args:?}");
        assert_clean(&what, &stdout);
        assert_clean(&what, &stderr);
        assert!(
            args[0] == "delta-compress" || format!("{stdout}{stderr}").contains("\\x1b[2J"),
            "{what}: {stdout}{stderr}"
        );
    }

    let (stdout, _) = run(d, &["info", "f.dmx", "--json"], 0);
    let v = json(&stdout);
    let paths: Vec<&str> = v["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert!(paths.contains(&evil_file), "{paths:?}");
}

/// Finding 4: `--threads 100000` on a 1.5 MB file was still creating threads after 10
/// minutes. The pool is capped at the work (one thread per 1 MiB chunk) and at twice the
/// cores, for every command.
#[test]
fn huge_thread_counts_are_capped() {
    let tmp = common::scratch();
    let d = tmp.path();
    let tensors = vec![Tensor::generated(
        "w",
        "BF16",
        &[750, 1000],
        Mode::Weights,
        5,
    )];
    common::write(
        &d.join("m.safetensors"),
        &common::safetensors(&tensors, &common::Layout::default()),
    );
    let t = ["--threads", "100000"];
    let start = Instant::now();
    let commands: Vec<Vec<&str>> = vec![
        vec!["compress", "m.safetensors", "m.dmx", "-q"],
        vec!["decompress", "m.dmx", "back.safetensors", "-q"],
        vec!["verify", "m.safetensors", "m.dmx", "-q"],
        vec!["extract", "m.dmx", "w.safetensors", "--tensor", "w", "-q"],
        vec!["diff", "m.safetensors", "m.dmx"],
        vec![
            "delta-compress",
            "m.safetensors",
            "m.safetensors",
            "d.dmxd",
            "-q",
        ],
        vec![
            "delta-reconstruct",
            "m.dmx",
            "d.dmxd",
            "d.safetensors",
            "-q",
        ],
        vec!["chain-compress", "m.safetensors", "--output-dir", "c", "-q"],
        vec!["chain-reconstruct", "c", "--output-dir", "co", "-q"],
    ];
    for args in commands {
        let mut args = args;
        args.extend(t);
        run(d, &args, 0);
    }
    let (stdout, _) = run(
        d,
        &[
            "bench",
            "m.safetensors",
            "--reps",
            "1",
            "--json",
            "-t",
            "100000",
        ],
        0,
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let used = json(&stdout)[0]["threads"].as_u64().expect("threads") as usize;
    // Without -t: 1 thread, then all cores capped at the 2 chunks; never the same row twice.
    let (stdout, _) = run(d, &["bench", "m.safetensors", "--reps", "1", "--json"], 0);
    let threads: Vec<u64> = json(&stdout)
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["threads"].as_u64())
        .collect();
    let expected = if cores > 1 { vec![1, 2] } else { vec![1] };
    assert_eq!(threads, expected);
    assert!(
        (1..=2).contains(&used) && used <= 2 * cores,
        "{used} threads"
    );
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(
        std::fs::read(d.join("back.safetensors")).unwrap(),
        std::fs::read(d.join("m.safetensors")).unwrap()
    );
    let (help, _) = run(d, &["compress", "--help"], 0);
    assert!(help.contains("twice the cores"), "{help}");
    let (_, err) = run(d, &["info", "m.dmx", "-t", "0"], 2);
    assert!(err.contains("--threads"), "{err}");
}

/// Finding 14: clear messages for foreign files, appended data and dangling links.
#[test]
fn unclear_errors_are_clear() {
    let tmp = scratch(PLAIN);
    let d = tmp.path();
    let good = std::fs::read(d.join("m.dmx")).unwrap();

    // Data appended after a valid archive: not "truncated"; says what is wrong (exit 1).
    let mut appended = good.clone();
    appended.extend_from_slice(b"some junk\n");
    common::write(&d.join("appended.dmx"), &appended);
    let (_, err) = run(d, &["info", "appended.dmx"], 1);
    assert!(
        err.contains("10 bytes of other data are appended") && !err.contains("truncated"),
        "{err}"
    );
    // Without a whole archive before the end: cut short or appended, not "truncated".
    let mut cut = good[..good.len() - 40].to_vec();
    cut.extend_from_slice(b"some junk\n");
    common::write(&d.join("cut-and-appended.dmx"), &cut);
    let (_, err) = run(d, &["info", "cut-and-appended.dmx"], 1);
    assert!(
        err.contains("appended") && err.contains("cut short") && !err.contains("truncated"),
        "{err}"
    );

    // A folder given where an archive is expected: said so, for every reader (exit 2).
    std::fs::create_dir(d.join("plain-folder")).unwrap();
    for args in [
        vec!["info", "plain-folder"],
        vec!["decompress", "plain-folder", "x.safetensors"],
        vec!["extract", "plain-folder", "x.safetensors", "--tensor", "w"],
    ] {
        let (_, err) = run(d, &args, 2);
        assert!(
            err.contains("is a folder, not a dmx archive"),
            "{args:?}: {err}"
        );
    }

    // Short foreign files are "not a dmx archive" (exit 2), whatever their length.
    for (name, bytes) in [
        ("six.dmx", b"hello\n".to_vec()),
        ("one.dmx", b"x".to_vec()),
        ("forty-seven.dmx", vec![b'a'; 47]),
        ("near-magic.dmx", b"\x89DMX\r\n\x1a\x00".to_vec()),
    ] {
        common::write(&d.join(name), &bytes);
        let (_, err) = run(d, &["info", name], 2);
        assert!(err.contains("not a dmx archive"), "{name}: {err}");
        assert!(!err.contains("truncated"), "{name}: {err}");
        run(d, &["decompress", name, "out.safetensors"], 2);
        run(d, &["verify", name], 2);
    }
    // A true prefix of an archive is truncated (exit 1).
    for len in [4, 15, 20] {
        common::write(&d.join("prefix.dmx"), &good[..len]);
        let (_, err) = run(d, &["info", "prefix.dmx"], 1);
        assert!(err.contains("truncated"), "{len}: {err}");
    }

    // A dangling symbolic link names itself and its target.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("gone.safetensors", d.join("link.safetensors")).unwrap();
        std::os::unix::fs::symlink("gone.dmx", d.join("link.dmx")).unwrap();
        for args in [
            vec!["compress", "link.safetensors", "l.dmx"],
            vec!["info", "link.dmx"],
            vec!["decompress", "link.dmx", "l.safetensors"],
        ] {
            let (_, err) = run(d, &args, 2);
            assert!(
                err.contains("dangling symbolic link") && err.contains("gone."),
                "{args:?}: {err}"
            );
        }
    }
    let missing: PathBuf = d.join("missing.safetensors");
    let (_, err) = run(d, &["compress", missing.to_str().unwrap(), "x.dmx"], 2);
    assert!(!err.contains("dangling"), "{err}");
}

/// Finding 14: errors while restoring a folder named the hidden temporary folder
/// (`.dmx-tmp-*/...`) instead of the output the user asked for. Here the restored path is too
/// long for the OS once inside the temporary folder (its input path was not).
#[cfg(target_os = "linux")]
#[test]
fn restore_errors_name_the_users_path_not_a_temporary_one() {
    let tmp = common::scratch();
    let d = tmp.path();
    // f/ + 20 folders of 200 bytes + a 60-byte file name: 4082 bytes from the scratch folder
    // (under PATH_MAX, 4096), but 4098 from inside `./.dmx-tmp-XXXXXX/`. Built one short
    // relative step at a time, as absolute paths would be too long.
    let script = format!(
        "set -e; mkdir f; cd f; for i in $(seq 20); do mkdir {0}; cd {0}; done; \
         printf hello > {1}",
        "d".repeat(200),
        "x".repeat(60)
    );
    let status = Command::new("sh")
        .current_dir(d)
        .args(["-c", &script])
        .status()
        .expect("sh");
    assert!(status.success());
    run(d, &["compress", "f", "f.dmx", "-q"], 0);
    let (_, err) = run(d, &["decompress", "f.dmx", "o", "-q"], 2);
    assert!(!err.contains(".dmx-tmp-"), "{err}");
    assert!(err.contains(&format!("o/{}", "d".repeat(200))), "{err}");
    assert!(!d.join("o").exists());
}

/// Finding 14: "unknown codec id 162" for a chunk whose record says codec 3: the number was
/// a byte inside the payload (the codec of the row bases, or a cast's inner codec). A damaged
/// byte there (behind recomputed checksums, as a tamperer would leave it) is now reported as
/// a corrupt payload of the chunk's codec.
#[test]
fn a_payload_byte_is_not_reported_as_the_codec_id() {
    let tmp = common::scratch();
    let d = tmp.path();
    let tensors = vec![
        Tensor::new(
            "rows",
            "BF16",
            &[64, 256],
            common::fill_rows("BF16", 64, 256, 9),
        ),
        Tensor::generated("f32", "F32", &[4096], Mode::Weights, 3),
    ];
    common::write(
        &d.join("m.safetensors"),
        &common::safetensors(&tensors, &common::Layout::default()),
    );
    run(
        d,
        &["compress", "m.safetensors", "m.dmx", "-q", "--cast", "bf16"],
        0,
    );
    // (tensor, codec ids the chunk record may hold, offset in the payload of an inner codec
    // id): the row transform over codec 10 (11) or codec 12 (17) has the same header.
    for (name, codecs, at) in [("rows", &[11u8, 17][..], 5usize), ("f32", &[8], 1)] {
        let mut bytes = std::fs::read(d.join("m.dmx")).unwrap();
        let archive = dmx::Archive::open(&d.join("m.dmx")).expect("open");
        let mut index = archive.index().clone();
        let (e, s) = index
            .entries
            .iter()
            .enumerate()
            .flat_map(|(e, entry)| {
                entry
                    .segments
                    .iter()
                    .enumerate()
                    .map(move |(s, g)| (e, s, g))
            })
            .find(|(_, _, g)| matches!(&g.kind, SegmentKind::Tensor(t) if t.name == name))
            .map(|(e, s, _)| (e, s))
            .expect("segment");
        let chunk = &mut index.entries[e].segments[s].chunks[0];
        assert!(
            codecs.contains(&chunk.codec),
            "{name}: the test needs codec {codecs:?}, not {}",
            chunk.codec
        );
        let start = chunk.offset as usize;
        bytes[start + at] = 162;
        chunk.xxh3 = dmx::dmx_format::xxh3_64(&bytes[start..start + chunk.stored_len as usize]);
        let n = bytes.len();
        let trailer = Trailer::from_bytes(&bytes[n - 32..]).expect("trailer");
        let offset = trailer.index_offset as usize;
        let new_index = index.to_bytes();
        bytes.truncate(offset);
        bytes.extend_from_slice(&new_index);
        bytes.extend_from_slice(&Trailer::for_index(offset as u64, &new_index).to_bytes());
        common::write(&d.join("bad.dmx"), &bytes);
        for args in [
            vec!["verify", "bad.dmx"],
            vec!["decompress", "bad.dmx", "out.safetensors"],
        ] {
            let (stdout, stderr) = run(d, &args, 1);
            let all = format!("{stdout}{stderr}");
            assert!(!all.contains("codec id 162"), "{name} {args:?}: {all}");
            assert!(all.contains("corrupt payload"), "{name} {args:?}: {all}");
        }
    }
}

/// Hostile pass: two files of a folder archive with a tensor of the same name. `extract` once
/// took the first silently; it now refuses, naming both files (exit 2).
#[test]
fn extract_refuses_a_name_two_files_share() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("run/a")).unwrap();
    std::fs::create_dir_all(d.join("run/b")).unwrap();
    std::fs::write(d.join("run/a/m.safetensors"), model(1, PLAIN)).unwrap();
    std::fs::write(d.join("run/b/m.safetensors"), model(7, PLAIN)).unwrap();
    run(d, &["compress", "run", "r.dmx", "-q"], 0);
    let (_, err) = run(
        d,
        &["extract", "r.dmx", "x.safetensors", "--tensor", "ids"],
        2,
    );
    assert!(
        err.contains("2 tensors are named \"ids\"")
            && err.contains("a/m.safetensors")
            && err.contains("b/m.safetensors"),
        "{err}"
    );
    assert!(!d.join("x.safetensors").exists());
}

/// Hostile pass: `--output-dir -` once created a folder named `-` (chain-compress,
/// chain-reconstruct); `-` is refused there as for every output but `decompress ARCHIVE -`.
#[test]
fn dash_is_not_a_chain_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("c.safetensors"), model(3, PLAIN)).unwrap();
    let (_, err) = run(
        d,
        &["chain-compress", "c.safetensors", "--output-dir", "-", "-q"],
        2,
    );
    assert!(err.contains("./-"), "{err}");
    assert!(!d.join("-").exists());
    run(
        d,
        &[
            "chain-compress",
            "c.safetensors",
            "--output-dir",
            "ch",
            "-q",
        ],
        0,
    );
    run(
        d,
        &["chain-reconstruct", "ch", "--output-dir", "-", "-q"],
        2,
    );
    assert!(!d.join("-").exists());
    // ./- names a folder called `-`.
    run(
        d,
        &["chain-reconstruct", "ch", "--output-dir", "./-", "-q"],
        0,
    );
    assert!(d.join("-/c.safetensors").is_file());
}

/// Hostile pass: `diff` of a delta pointed to `dmx decompress`, which refuses deltas.
#[test]
fn diff_of_a_delta_points_to_delta_reconstruct() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a.safetensors"), model(1, PLAIN)).unwrap();
    std::fs::write(d.join("b.safetensors"), model(2, PLAIN)).unwrap();
    run(
        d,
        &[
            "delta-compress",
            "a.safetensors",
            "b.safetensors",
            "d.dmxd",
            "-q",
        ],
        0,
    );
    let (_, err) = run(d, &["diff", "d.dmxd", "a.safetensors"], 2);
    assert!(err.contains("dmx delta-reconstruct"), "{err}");
    // The hint is right: decompress refuses the delta.
    run(d, &["decompress", "d.dmxd", "out"], 2);
}
