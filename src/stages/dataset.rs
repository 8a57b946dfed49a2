//! `dataset`: a seeded toy distribution, or an image set read from the user's files,
//! written as a training set and a held-out set.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::de::MapAccess;
use serde::{Deserialize, Deserializer, Serialize};

use super::context::StageContext;
use super::cost::{Cost, Extent, count};
use super::kind::{Kind, Neighbours, Role};
use crate::artifacts::{save_tensors, write_json};
use crate::data::images::{ImageShape, ImageSource, Subset};
use crate::data::toy::{Distribution, Mixture};
use crate::error::{StageError, StageResult};
use crate::nn::models::network::DataShape;
use crate::rng::stream;
use crate::tagged::{Shared, Tagged, take_once};

/// The `dataset` kind.
pub struct Dataset;

impl Kind for Dataset {
    const NAME: &'static str = "dataset";
    /// Bumped whenever `meta.json` or the data layout changes, so that entries written
    /// by an older runner are recomputed instead of failing to parse (2: `source` in
    /// meta).
    const VERSION: u32 = 2;
    const ROLES: &'static [Role] = &[];
    const WRITES: &'static str = "`data.safetensors` (train, test, and `train_labels`/`test_labels` for labelled images), `meta.json`";
    type Params = DatasetParams;

    /// Defaults filled in; files read from the user enter the key by their contents.
    fn resolved(params: &DatasetParams, _: &Neighbours) -> Result<serde_json::Value, String> {
        let mut value = serde_json::to_value(params.canonical())
            .expect("stage parameters always serialize to JSON");
        if let (Some(digest), Some(map)) = (params.content_digest()?, value.as_object_mut()) {
            map.insert("content".into(), digest.into());
        }
        Ok(value)
    }

    fn validate(params: &DatasetParams, _: &Neighbours) -> Result<(), String> {
        params.validate()
    }

    /// The rows, generated or read, then written: about three copies at the peak.
    fn cost(params: &DatasetParams, _: &Neighbours) -> Cost {
        let data = params.extent();
        let rows = data.train + data.test;
        Cost::holding(
            rows * data.dim(),
            3.0,
            format!("{} rows of {} values", count(rows), data.dim()),
        )
    }

    fn run(params: &DatasetParams, ctx: &StageContext) -> StageResult<()> {
        run(params, ctx)
    }
}

/// Parameters of a dataset stage: the source (`name` and its parameters) plus sizes
/// and seed.
// Its keys and the source's are one mapping: none other may appear in it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[schemars(extend("unevaluatedProperties" = false))]
pub struct DatasetParams {
    #[serde(flatten)]
    pub source: Source,
    /// Training points (toys: 50,000 by default; images: all, or a subset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// Held-out points, the evaluation reference (toys: 10,000 drawn independently;
    /// MNIST: the test split; image folders: a tenth of the images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<usize>,
    #[serde(default)]
    pub seed: u64,
}

/// The keys every dataset takes beside its source's own.
#[derive(Default)]
struct Sizes {
    n: Option<usize>,
    holdout: Option<usize>,
    seed: Option<u64>,
}

impl<'de> Shared<'de> for Sizes {
    const FIELDS: &'static [&'static str] = &["n", "holdout", "seed"];
    fn take<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "n" => take_once(&mut self.n, "n", map),
            "holdout" => take_once(&mut self.holdout, "holdout", map),
            _ => take_once(&mut self.seed, "seed", map),
        }
    }
}

impl<'de> Deserialize<'de> for DatasetParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DatasetParams, D::Error> {
        let (source, sizes) = crate::tagged::deserialize::<D, Source, Sizes>(d)?;
        Ok(DatasetParams {
            source,
            n: sizes.n,
            holdout: sizes.holdout,
            seed: sizes.seed.unwrap_or_default(),
        })
    }
}

/// Where the data comes from: a generated distribution or image files.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Source {
    Toy(Distribution),
    Images(ImageSource),
}

/// Chosen by `name` among every dataset, so an unknown name lists them all and errors
/// speak of the one the user meant.
impl<'de> Tagged<'de> for Source {
    const TAG: &'static str = "name";
    fn names() -> Vec<&'static str> {
        Distribution::NAMES
            .iter()
            .chain(&ImageSource::NAMES)
            .copied()
            .collect()
    }
    fn variant<D: Deserializer<'de>>(name: &str, rest: D) -> Result<Source, D::Error> {
        if ImageSource::NAMES.contains(&name) {
            ImageSource::variant(name, rest).map(Source::Images)
        } else {
            Distribution::variant(name, rest).map(Source::Toy)
        }
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Source, D::Error> {
        crate::tagged::deserialize::<D, Source, ()>(d).map(|(source, ())| source)
    }
}

impl Source {
    /// (radius, width) when the data is a thin shell (circle, sphere): planning checks
    /// it in the params, evaluation reads it from the dataset's meta.
    pub fn shell(&self) -> Option<(f64, f64)> {
        match self {
            Source::Toy(d) => d.shell(),
            Source::Images(_) => None,
        }
    }
}

impl DatasetParams {
    /// Defaults filled in, for the key.
    pub fn canonical(&self) -> DatasetParams {
        let mut out = self.clone();
        if let Source::Toy(_) = self.source {
            out.n.get_or_insert(50_000);
            out.holdout.get_or_insert(10_000);
        }
        out
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.n == Some(0) || self.holdout == Some(0) {
            return Err("`n` and `holdout` must be at least 1".into());
        }
        match &self.source {
            Source::Toy(d) => d.validate(),
            Source::Images(s) => s.validate(),
        }
    }

    /// The analytic mixture, when the data has one.
    pub fn mixture(&self) -> Option<Mixture> {
        match &self.source {
            Source::Toy(d) => d.mixture(),
            Source::Images(_) => None,
        }
    }

    /// Rows and shape, as planning can tell them without reading the files (an image
    /// folder's size is taken as `n` + `holdout`, or 10,000 images when unset).
    pub fn extent(&self) -> Extent {
        let full = self.canonical();
        let (train, test, image) = match &self.source {
            Source::Toy(d) => {
                let dim = d.dim();
                let shape = DataShape { dim, image: None };
                return Extent {
                    train: full.n.unwrap_or(0) as f64,
                    test: full.holdout.unwrap_or(0) as f64,
                    shape,
                };
            }
            Source::Images(ImageSource::ImageFolder { size, .. }) => {
                let all = self.n.unwrap_or(9_000) + self.holdout.unwrap_or(1_000);
                let holdout = self.holdout.unwrap_or(all / 10) as f64;
                let image = ImageShape {
                    channels: 3,
                    height: *size,
                    width: *size,
                };
                (all as f64 - holdout, holdout, image)
            }
            Source::Images(_) => {
                let image = ImageShape {
                    channels: 1,
                    height: 28,
                    width: 28,
                };
                let train = self.n.map_or(60_000.0, |n| n.min(60_000) as f64);
                let test = self.holdout.map_or(10_000.0, |n| n.min(10_000) as f64);
                (train, test, image)
            }
        };
        Extent {
            train,
            test,
            shape: DataShape {
                dim: image.channels.saturating_mul(image.height).saturating_mul(image.width),
                image: Some(image),
            },
        }
    }

    /// Digest of the files the data is read from (`None` for generated data): it
    /// enters the stage's key.
    pub fn content_digest(&self) -> Result<Option<String>, String> {
        let Source::Images(source) = &self.source else {
            return Ok(None);
        };
        let files = source.files()?;
        let root = source.dir().unwrap_or(Path::new(""));
        crate::cache::digests::digest_files(root, &files).map(Some)
    }
}

/// `meta.json`: what downstream stages need to know about the data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetMeta {
    pub dim: usize,
    pub n_train: usize,
    pub n_test: usize,
    /// Per-coordinate minimum and maximum of the training set.
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    /// The analytic density when the distribution is a Gaussian mixture.
    pub mixture: Option<Mixture>,
    pub source: Source,
    /// Channels, height and width, for image data (rows are flattened images).
    #[serde(default)]
    pub image: Option<ImageShape>,
    /// Label names by label number; `train_labels`/`test_labels` are stored when set.
    #[serde(default)]
    pub classes: Vec<String>,
}

impl DatasetMeta {
    /// Whether rows are images (and should be drawn as such).
    pub fn is_image(&self) -> bool {
        self.image.is_some()
    }
}

fn run(params: &DatasetParams, ctx: &StageContext) -> StageResult<()> {
    let params = params.canonical();
    let (dim, train, test, image, classes, labels) = match &params.source {
        Source::Toy(dist) => {
            let (n, holdout) = (params.n.unwrap_or(50_000), params.holdout.unwrap_or(10_000));
            let train = dist.sample(n, &mut stream(params.seed, "dataset/train"));
            let test = dist.sample(holdout, &mut stream(params.seed, "dataset/test"));
            (dist.dim(), train, test, None, Vec::new(), None)
        }
        Source::Images(source) => {
            let set = source
                .load(Subset {
                    n: params.n,
                    holdout: params.holdout,
                    seed: params.seed,
                })
                .map_err(StageError::Failed)?;
            for skipped in &set.skipped {
                ctx.progress.warn(&format!(
                    "skipped {} (not a PNG or JPEG)",
                    skipped.display()
                ));
            }
            for (link, target) in &set.repeated {
                ctx.progress.warn(&format!(
                    "skipped {}: it leads to {}, which is read once",
                    link.display(),
                    target.display()
                ));
            }
            let labels = (!set.classes.is_empty()).then_some((set.train_labels, set.test_labels));
            (
                set.shape.dim(),
                set.train,
                set.test,
                Some(set.shape),
                set.classes,
                labels,
            )
        }
    };
    let (n_train, n_test) = (train.len() / dim, test.len() / dim);
    let mut min = vec![f32::INFINITY; dim];
    let mut max = vec![f32::NEG_INFINITY; dim];
    for row in train.chunks(dim) {
        for j in 0..dim {
            min[j] = min[j].min(row[j]);
            max[j] = max[j].max(row[j]);
        }
    }
    let mut tensors = vec![
        (
            "train",
            Tensor::from_vec(train, (n_train, dim), &Device::Cpu)?,
        ),
        ("test", Tensor::from_vec(test, (n_test, dim), &Device::Cpu)?),
    ];
    if let Some((train_labels, test_labels)) = labels {
        tensors.push(("train_labels", Tensor::new(train_labels, &Device::Cpu)?));
        tensors.push(("test_labels", Tensor::new(test_labels, &Device::Cpu)?));
    }
    save_tensors(&ctx.path("data.safetensors"), &tensors)?;
    let meta = DatasetMeta {
        dim,
        n_train,
        n_test,
        min,
        max,
        mixture: params.mixture(),
        source: params.source.clone(),
        image,
        classes,
    };
    write_json(&ctx.path("meta.json"), &meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_choose_the_source_and_unknown_names_list_all() {
        let toy: DatasetParams = serde_norway::from_str("name: moons\nn: 10").unwrap();
        assert!(matches!(
            toy.source,
            Source::Toy(Distribution::Moons { .. })
        ));
        assert_eq!(toy.canonical().holdout, Some(10_000));
        let mnist: DatasetParams =
            serde_norway::from_str("name: mnist\nn: 100\nclasses: [0, 1]").unwrap();
        assert!(matches!(
            mnist.source,
            Source::Images(ImageSource::Mnist { .. })
        ));
        assert_eq!(mnist.canonical().holdout, None);
        let err = serde_norway::from_str::<DatasetParams>("name: mnits")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`gmm`") && err.contains("`image_folder`"),
            "{err}"
        );
        let err = serde_norway::from_str::<DatasetParams>("name: mnist\nsize: 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `size`"), "{err}");
    }

    #[test]
    fn toy_keys_are_unchanged_by_the_image_variants() {
        let toy: DatasetParams = serde_norway::from_str("name: moons").unwrap();
        let json = serde_json::to_value(toy.canonical()).unwrap();
        assert_eq!(json["n"], 50_000);
        assert_eq!(json["name"], "moons");
    }
}
