//! Graph capture and replay on the emulator (issue 12): a sampling step (one
//! model call) captured once and replayed on new inputs gives the bits of
//! an eager call, with no allocation, free or host synchronisation.

use diffuse_tensor::gpu::emu::emu_device;
use diffuse_tensor::{ops, DType, Device, Tensor};
use diffuse_unet::{UNet, UNetConfig};

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn a_replayed_sampling_step_is_bit_identical_to_an_eager_one_emu() {
    let dev = emu_device().unwrap();
    let Device::Gpu(g) = &dev else { panic!("the emulator is a GPU") };
    let cfg: UNetConfig = serde_json::from_str(
        r#"{"in_ch":1,"ch":8,"ch_mult":[1,2],"num_res_blocks":1,"attn_resolutions":[4],"dropout":0.0,"groups":4,"image_size":8}"#,
    )
    .unwrap();
    let model = UNet::new(cfg, 3, DType::F32, &dev).unwrap();
    let input = |seed: u64, ts: [f32; 3]| {
        let x = Tensor::randn([3, 1, 8, 8], seed, 0, DType::F32, &dev).unwrap();
        (x, Tensor::from_vec(ts.to_vec(), [3]).unwrap().to_device(&dev).unwrap())
    };
    let (mut x, mut t) = input(1, [5.0, 500.0, 999.0]);

    g.begin_capture().unwrap();
    let y = model.forward(&x, &t).unwrap();
    let graph = g.end_capture().unwrap();
    assert!(graph.launches() > 20, "{} launches", graph.launches());
    assert_eq!(bits(&y), bits(&model.forward(&x, &t).unwrap()), "the captured call ran as an eager one");

    for (seed, ts) in [(2, [0.0, 1.0, 2.0]), (3, [999.0, 10.0, 300.0])] {
        let (x2, t2) = input(seed, ts);
        ops::copy_into(&mut x, 0, &x2).unwrap();
        ops::copy_into(&mut t, 0, &t2).unwrap();
        let before = g.counts();
        graph.replay().unwrap();
        let d = g.counts() - before;
        assert_eq!((d.allocs, d.frees, d.host_syncs, d.htod), (0, 0, 0, 0), "{d:?}");
        // one graph launch; the kernels inside it are not driver calls of their own
        assert_eq!((d.graph_launches, d.launches), (1, 0), "{d:?}");
        let eager = model.forward(&x2, &t2).unwrap();
        assert_eq!(bits(&y), bits(&eager), "replay on input {seed}");
    }

    // A copy from the host cannot be captured; the error says so.
    g.begin_capture().unwrap();
    let err = Tensor::from_vec(vec![1.0f32], [1]).unwrap().to_device(&dev).unwrap_err().to_string();
    assert!(err.contains("inside a graph capture"), "{err}");
    drop(g.end_capture().unwrap());
    drop(graph);
    let y_after = model.forward(&x, &t).unwrap(); // memory given back is usable again
    assert_eq!(y_after.dims(), y.dims());
}
