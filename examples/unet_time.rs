use candle_core::{DType, Device, Tensor};
use runner::data::images::ImageShape;
use runner::nn::init::seeded_varmap;
use runner::nn::unet::{UNet, UNetConfig};
use runner::rng::stream;
use std::time::Instant;
fn main() {
    let cfg = UNetConfig::default();
    let shape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let (net, _map) = seeded_varmap(&Device::Cpu, &mut stream(0, "i"), |vb| {
        UNet::new(&cfg, shape, vb)
    })
    .unwrap();
    let x = Tensor::randn(0f32, 1.0, (64, 784), &Device::Cpu).unwrap();
    let t = Tensor::full(0.5f32, 64, &Device::Cpu).unwrap();
    for _ in 0..3 {
        let s = Instant::now();
        let y = net.forward(&x, &t).unwrap();
        let f = s.elapsed();
        let loss = y.sqr().unwrap().mean_all().unwrap();
        let s2 = Instant::now();
        let _g = loss.backward().unwrap();
        println!("forward {:?} backward {:?}", f, s2.elapsed());
    }
    // conv alone
    let inp = Tensor::randn(0f32, 1.0, (64, 64, 14, 14), &Device::Cpu).unwrap();
    let w = candle_core::Var::randn(0f32, 0.1, (64, 64, 3, 3), &Device::Cpu).unwrap();
    let s = Instant::now();
    let o = inp.conv2d(&w, 1, 1, 1, 1).unwrap();
    println!("conv fwd {:?}", s.elapsed());
    let s = Instant::now();
    let _g = o.sum_all().unwrap().backward().unwrap();
    println!("conv bwd {:?}", s.elapsed());
    let _ = DType::F32;
}
