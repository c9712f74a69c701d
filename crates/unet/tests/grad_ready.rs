//! The gradient-ready hook of `UNet::backward_with`: every report comes
//! after the gradients it names are final. Each report's newly final
//! gradients are copied when reported and compared bit for bit with the
//! gradients once the backward has returned; the reports go down to the
//! first parameter and cover each one once. A hook fired too early (before
//! its layer's backward, or before the shared time embedding's) fails here.

use diffuse_tensor::{ops, DType, Device, Tensor};
use diffuse_unet::{ForwardMode, GradReady, ParamId, ParamStore, UNet, UNetConfig};

/// A conditional model with attention, a channel change (nin_shortcut) and
/// resampling, every weight random so that every gradient is non-trivial.
fn model() -> UNet {
    let cfg = UNetConfig { num_classes: 3, dropout: 0.1, ..UNetConfig::tiny() };
    let mut m = UNet::new(cfg, 3, DType::F32, &Device::Cpu).unwrap();
    let ids: Vec<_> = m.params.ids().collect();
    for (k, id) in ids.into_iter().enumerate() {
        let dims = m.params.value(id).dims().to_vec();
        let v = Tensor::randn(dims.clone(), 11, k as u32, DType::F32, &Device::Cpu).unwrap();
        let fan = if dims.len() > 1 { dims[1..].iter().product::<usize>() } else { 4 } as f64;
        m.params.set(id, ops::scale(&v, 1.0 / fan.sqrt()).unwrap()).unwrap();
    }
    m
}

/// The gradients of parameters `first..` (up to the previous report) as
/// reported: (index, values if present).
type Report = (ParamId, Vec<(usize, Option<Vec<f32>>)>);

/// Copies each report's newly final gradients.
#[derive(Default)]
struct Recorder {
    reports: Vec<Report>,
    low: Option<usize>,
}

impl GradReady for Recorder {
    fn grads_final_from(&mut self, ps: &mut ParamStore, first: ParamId) -> Result<(), String> {
        let high = self.low.unwrap_or(ps.len());
        if first.index() >= high {
            return Err(format!("report {first:?} is not below the previous one ({high})"));
        }
        let ids: Vec<ParamId> = ps.ids().filter(|id| (first.index()..high).contains(&id.index())).collect();
        let copied = ids.iter().map(|&id| (id.index(), ps.grad(id).map(|g| g.to_vec_f32().unwrap()))).collect();
        self.reports.push((first, copied));
        self.low = Some(first.index());
        Ok(())
    }
}

fn check_reports(m: &UNet, rec: &Recorder) {
    assert_eq!(rec.low, Some(0), "the reports reach the first parameter");
    // one report per layer: conv_out, norm_out, 2 levels x (2 up blocks) + 1
    // upsample, 3 middle layers, 2 x 1 down blocks + 1 downsample, conv_in,
    // the class table and the time embedding
    assert_eq!(rec.reports.len(), 2 + 5 + 3 + 3 + 1 + 2, "{:?}", rec.reports.iter().map(|r| r.0).collect::<Vec<_>>());
    let ids: Vec<ParamId> = m.params.ids().collect();
    let mut seen = 0;
    for (first, grads) in &rec.reports {
        for (i, g) in grads {
            let name = m.params.name(ids[*i]);
            let fin = m.params.grad(ids[*i]).map(|g| g.to_vec_f32().unwrap());
            let (Some(g), Some(fin)) = (g, fin) else {
                panic!("{name}: no gradient when reported final (report from {first:?})");
            };
            assert!(
                g.iter().zip(&fin).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: its gradient changed after it was reported final"
            );
            assert!(fin.iter().any(|&v| v != 0.0), "{name}: a zero gradient proves nothing");
            seen += 1;
        }
    }
    assert_eq!(seen, m.params.len());
}

#[test]
fn each_reported_gradient_is_final_and_every_parameter_is_reported_once() {
    let mut m = model();
    let x = Tensor::randn([3, 1, 8, 8], 5, 0, DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![3.0f32, 731.0, 400.0], [3]).unwrap();
    let dy = Tensor::randn([3, 1, 8, 8], 5, 1, DType::F32, &Device::Cpu).unwrap();
    let labels = [0usize, 2, 3]; // 3 = no class
    let (_, cache) = m.forward_train_cond(&x, &t, Some(&labels), ForwardMode::train(7, 1)).unwrap();
    let mut rec = Recorder::default();
    m.backward_with(&cache, &dy, &mut rec).unwrap();
    check_reports(&m, &rec);

    // accumulation: a second backward's reports are final for the sum of both
    let plain: Vec<Vec<f32>> = m.params.ids().map(|id| m.params.grad(id).unwrap().to_vec_f32().unwrap()).collect();
    let mut rec = Recorder::default();
    m.backward_with(&cache, &dy, &mut rec).unwrap();
    check_reports(&m, &rec);
    for (k, id) in m.params.ids().enumerate() {
        let twice = m.params.grad(id).unwrap().to_vec_f32().unwrap();
        assert!(twice.iter().zip(&plain[k]).all(|(a, b)| a.to_bits() == (b + b).to_bits()));
    }
}

#[test]
fn the_hook_changes_nothing_and_its_error_stops_the_backward() {
    let x = Tensor::randn([2, 1, 8, 8], 5, 0, DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![10.0f32, 600.0], [2]).unwrap();
    let dy = Tensor::randn([2, 1, 8, 8], 5, 1, DType::F32, &Device::Cpu).unwrap();
    let (mut a, mut b) = (model(), model());
    let (_, cache) = a.forward_train_cond(&x, &t, Some(&[1, 0]), ForwardMode::train(7, 1)).unwrap();
    a.backward(&cache, &dy).unwrap();
    b.backward_with(&cache, &dy, &mut Recorder::default()).unwrap();
    for id in a.params.ids() {
        let (ga, gb) =
            (a.params.grad(id).unwrap().to_vec_f32().unwrap(), b.params.grad(id).unwrap().to_vec_f32().unwrap());
        assert!(ga.iter().zip(&gb).all(|(p, q)| p.to_bits() == q.to_bits()), "{}", a.params.name(id));
    }

    struct Stop(usize);
    impl GradReady for Stop {
        fn grads_final_from(&mut self, _: &mut ParamStore, _: ParamId) -> Result<(), String> {
            self.0 += 1;
            Err("the communicator failed".into())
        }
    }
    let mut c = model();
    let mut stop = Stop(0);
    let e = c.backward_with(&cache, &dy, &mut stop).unwrap_err().to_string();
    assert!(e.contains("the communicator failed"), "{e}");
    assert_eq!(stop.0, 1, "the backward stops at the first error");
}
