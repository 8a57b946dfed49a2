//! Where training data comes from: generated toy distributions (images arrive later).

pub mod toy;
