//! `classifier`: trains the small CNN whose features the image metrics are computed
//! in, on the labelled training set, and reports its accuracy on the held-out set (a
//! feature space is only as meaningful as the classifier is good).

use candle_core::{D, DType, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::cost::{CALL_OVERHEAD_FLOPS, Cost, count};
use super::dataset::{Dataset, DatasetMeta};
use super::context::{InputEntry, StageContext};
use super::kind::{Kind, Neighbours, Role};
use crate::artifacts::{load_f32, load_tensors, read_json, save_tensors, write_json};
use crate::data::images::ImageShape;
use crate::error::{StageError, StageResult};
use crate::nn::models::classifier::{Classifier as Cnn, ClassifierConfig};
use crate::nn::models::init::{named_vars, seeded_varmap};
use crate::rng::stream;

/// The `classifier` kind: the feature space of the image metrics.
pub struct Classifier;

impl Kind for Classifier {
    const NAME: &'static str = "classifier";
    const VERSION: u32 = 2;
    const ROLES: &'static [Role] = &[Role::one("data", Dataset::NAME)];
    const WRITES: &'static str = "`weights.safetensors`, `classifier.json` (test accuracy)";
    type Params = ClassifierParams;

    fn validate(params: &ClassifierParams, _: &Neighbours) -> Result<(), String> {
        params.validate()
    }

    /// The labelled images and a batch's activations through three convolutions
    /// (full, half and quarter resolution) and the feature layer.
    fn cost(params: &ClassifierParams, stages: &Neighbours) -> Cost {
        let Some(data) = stages.input::<Dataset>("data").map(|d| d.extent()) else {
            return Cost::default();
        };
        let (w, f) = (params.network.width as f64, params.network.features as f64);
        let pixels = data.image().map_or(data.dim(), |i| (i.height * i.width) as f64);
        let channels = data.dim() / pixels;
        let convs = 9.0 * (channels * w * pixels + 2.0 * w * w * pixels / 4.0 + 8.0 * w * w * pixels / 16.0);
        let flops = 2.0 * (convs + 4.0 * w * pixels / 16.0 * f);
        let activations = 3.0 * (w * pixels + 2.0 * w * pixels / 4.0 + 4.0 * w * pixels / 16.0);
        let batch = params.batch as f64;
        Cost::holding(
            (data.train + data.test) * data.dim() * 2.0 + batch * activations * 3.0,
            1.0,
            format!(
                "the {} labelled images and batches of {}",
                count(data.train + data.test),
                count(batch)
            ),
        )
        .working(
            params.steps as f64 * (batch * 3.0 * flops + CALL_OVERHEAD_FLOPS),
            format!("{} steps of {} images", count(params.steps as f64), count(batch)),
        )
    }

    fn run(params: &ClassifierParams, ctx: &StageContext) -> StageResult<()> {
        run(params, ctx)
    }
}

/// Parameters of a classifier stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "WrittenClassifier")]
pub struct ClassifierParams {
    #[serde(flatten)]
    pub network: ClassifierConfig,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

/// The parameters as written: the network's sizes beside the training's in one
/// mapping, read without `flatten`'s buffer so errors keep their key and place.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct WrittenClassifier {
    #[serde(default = "width")]
    width: usize,
    #[serde(default = "features")]
    features: usize,
    #[serde(default = "steps")]
    steps: usize,
    #[serde(default = "batch")]
    batch: usize,
    #[serde(default = "lr")]
    lr: f64,
    #[serde(default)]
    seed: u64,
}

/// As written: the network's sizes beside the training's.
impl schemars::JsonSchema for ClassifierParams {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ClassifierParams".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        WrittenClassifier::json_schema(generator)
    }
}

impl From<WrittenClassifier> for ClassifierParams {
    fn from(w: WrittenClassifier) -> Self {
        ClassifierParams {
            network: ClassifierConfig {
                width: w.width,
                features: w.features,
            },
            steps: w.steps,
            batch: w.batch,
            lr: w.lr,
            seed: w.seed,
        }
    }
}

fn width() -> usize {
    ClassifierConfig::default().width
}
fn features() -> usize {
    ClassifierConfig::default().features
}

fn steps() -> usize {
    1500
}
fn batch() -> usize {
    128
}
fn lr() -> f64 {
    1e-3
}

impl ClassifierParams {
    pub fn validate(&self) -> Result<(), String> {
        if self.steps == 0
            || self.batch == 0
            || self.network.width == 0
            || self.network.features == 0
        {
            return Err("`steps`, `batch`, `width` and `features` must be at least 1".into());
        }
        if !(self.lr > 0.0) {
            return Err("`lr` must be positive".into());
        }
        Ok(())
    }
}

/// `classifier.json`: what evaluation needs to rebuild the classifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainedClassifier {
    pub config: ClassifierConfig,
    pub shape: ImageShape,
    pub classes: Vec<String>,
    /// Accuracy on the held-out set.
    pub accuracy: f64,
}

impl TrainedClassifier {
    /// The classifier of a classifier stage's entry.
    pub fn load(
        entry: &InputEntry,
        device: &candle_core::Device,
    ) -> StageResult<(TrainedClassifier, Cnn)> {
        let info: TrainedClassifier = read_json(&entry.dir.join("classifier.json"))?;
        let weights = load_tensors(&entry.dir.join("weights.safetensors"), device)?;
        let vb = VarBuilder::from_tensors(weights, DType::F32, device);
        let net = Cnn::new(&info.config, info.shape, info.classes.len(), vb)?;
        Ok((info, net))
    }
}

/// The labels stored beside a split (`train_labels`, `test_labels`).
pub fn load_labels(data: &InputEntry, name: &str) -> StageResult<Vec<u32>> {
    let path = data.dir.join("data.safetensors");
    let tensors = load_tensors(&path, &candle_core::Device::Cpu)?;
    let labels = tensors.get(name).ok_or_else(|| StageError::BadInput {
        path: path.clone(),
        message: format!(
            "no `{name}`: the dataset has no labels (image folders are labelled by sub-folder)"
        ),
    })?;
    Ok(labels.to_dtype(DType::U32)?.to_vec1::<u32>()?)
}

fn run(params: &ClassifierParams, ctx: &StageContext) -> StageResult<()> {
    let data = ctx.input("data")?;
    let meta: DatasetMeta = read_json(&data.dir.join("meta.json"))?;
    let shape = meta.image.ok_or_else(|| {
        StageError::Failed(
            "a classifier needs image data (mnist, fashion_mnist or image_folder)".into(),
        )
    })?;
    if meta.classes.len() < 2 {
        return Err(StageError::Failed(format!(
            "a classifier needs at least two labelled classes; the dataset has {}",
            meta.classes.len()
        )));
    }
    let dim = meta.dim;
    let (train, _) = load_f32(&data.dir.join("data.safetensors"), "train")?;
    let (test, _) = load_f32(&data.dir.join("data.safetensors"), "test")?;
    let train_labels = load_labels(data, "train_labels")?;
    let test_labels = load_labels(data, "test_labels")?;
    let classes = meta.classes.len();
    let (net, map) = seeded_varmap(
        ctx.device,
        &mut stream(params.seed, "classifier/init"),
        |vb| Cnn::new(&params.network, shape, classes, vb),
    )?;
    let vars = named_vars(&map);
    let mut opt = AdamW::new(
        vars.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: params.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut rng = stream(params.seed, "classifier/batches");
    let n = train_labels.len();
    let mut x = vec![0f32; params.batch * dim];
    let mut y = vec![0u32; params.batch];
    for step in 1..=params.steps {
        for row in 0..params.batch {
            let i = rng.random_range(0..n);
            x[row * dim..(row + 1) * dim].copy_from_slice(&train[i * dim..(i + 1) * dim]);
            y[row] = train_labels[i];
        }
        let xb = Tensor::from_slice(&x, (params.batch, dim), ctx.device)?;
        let yb = Tensor::from_slice(&y, params.batch, ctx.device)?;
        let (_, logits) = net.forward(&xb)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &yb)?;
        opt.backward_step(&loss)?;
        ctx.progress.update(
            step,
            params.steps,
            &format!("cross-entropy {:.3}", loss.to_scalar::<f32>()?),
        );
    }
    let test_x = Tensor::from_slice(&test, (test_labels.len(), dim), ctx.device)?;
    let (_, probs) = net.embed(&test_x, 512)?;
    let predicted = probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let correct = predicted
        .iter()
        .zip(&test_labels)
        .filter(|(p, l)| p == l)
        .count();
    let accuracy = correct as f64 / test_labels.len() as f64;
    let weights: Vec<(&str, Tensor)> = vars
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_tensor().clone()))
        .collect();
    save_tensors(&ctx.path("weights.safetensors"), &weights)?;
    write_json(
        &ctx.path("classifier.json"),
        &TrainedClassifier {
            config: params.network,
            shape,
            classes: meta.classes.clone(),
            accuracy,
        },
    )
}
