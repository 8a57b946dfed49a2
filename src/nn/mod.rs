//! Neural networks: the score networks and classifier ([`models`]), built from candle
//! modules and from CPU kernels of their own ([`kernels`]), which hold all of the
//! crate's `unsafe` and import nothing from the rest of it.

pub mod kernels;
pub mod models;
