//! `Options::cancel`: a cancelled operation returns `Error::Cancelled` and leaves no output.

use dmx_testkit as common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use common::{Mode, Tensor, plain, scratch, write};
use dmx::{ChainOptions, DeltaOptions, Error, Options};

fn opts(cancelled: bool) -> Options {
    Options {
        no_sync: true,
        cancel: Some(Arc::new(AtomicBool::new(cancelled))),
        ..Options::default()
    }
}

fn cancelled<T: std::fmt::Debug>(r: dmx::Result<T>) {
    match r {
        Err(e @ Error::Cancelled) => assert_eq!(e.exit_code(), 2),
        other => panic!("expected Cancelled, got {other:?}"),
    }
}

#[test]
fn cancelled_operations_stop_and_leave_nothing() {
    let dir = scratch();
    let d = dir.path();
    let model = |seed| {
        plain(&[
            Tensor::generated("a", "BF16", &[64, 64], Mode::Weights, seed),
            Tensor::generated("b", "F32", &[32, 32], Mode::Weights, seed + 1),
        ])
    };
    let (m1, m2) = (d.join("m1.safetensors"), d.join("m2.safetensors"));
    write(&m1, &model(1));
    write(&m2, &model(2));
    let packed = d.join("m1.dmx");
    dmx::compress(&m1, &packed, &opts(false)).unwrap();
    let chain = d.join("chain");
    let ckpts = [m1.clone(), m2.clone()];
    dmx::chain_compress(&ckpts, &chain, &ChainOptions::default(), &opts(false)).unwrap();

    let stop = opts(true);
    let out = d.join("out.safetensors");
    cancelled(dmx::decompress(&packed, &out, &stop));
    let archive = dmx::Archive::open(&packed).unwrap();
    cancelled(dmx::verify(&archive, Some(&m1), &stop));
    cancelled(dmx::extract(&archive, &["a".into()], &out, &stop));
    assert!(!out.exists());
    let delta = d.join("d.dmxd");
    cancelled(dmx::delta_compress(
        &m1,
        &m2,
        &delta,
        &DeltaOptions::default(),
        &stop,
    ));
    assert!(!delta.exists());
    let chain2 = d.join("chain2");
    cancelled(dmx::chain_compress(
        &ckpts,
        &chain2,
        &ChainOptions::default(),
        &stop,
    ));
    assert!(!chain2.exists());
    let lossy = d.join("auto.dmx");
    let auto = dmx::lossy::LossyOptions {
        mode: dmx::lossy::Mode::Auto,
        max_rel_error: Some(1e-2),
        ..Default::default()
    };
    cancelled(dmx::compress_with(&m1, &lossy, &auto, &stop));
    cancelled(dmx::compress(&m1, &lossy, &stop));
    assert!(!lossy.exists());
    cancelled(dmx::chain_verify(&chain, &stop));
    let restored = d.join("restored");
    cancelled(dmx::chain_reconstruct(&chain, &restored, None, &stop));
    assert!(
        common::leftovers(d).is_empty(),
        "{:?}",
        common::leftovers(d)
    );
}
