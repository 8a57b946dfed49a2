//! Where training data comes from: generated toy distributions, MNIST-style IDX files
//! and folders of images.

pub mod idx;
pub mod image_folder;
pub mod images;
pub mod toy;
