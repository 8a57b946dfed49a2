//! Image figures: grids of samples, denoising timelines, noising strips. Pixels in
//! [-1, 1] become 8-bit PNGs, each image enlarged by an integer factor so small images
//! (28x28) stay legible.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::data::images::ImageShape;
use crate::error::{StageError, StageResult};

/// Pixels between tiles.
const GAP: u32 = 2;

/// Writes `tiles` (flattened [c, h, w] images in [-1, 1]) as a grid of `columns`
/// columns, row by row.
pub fn write_grid(
    path: &Path,
    tiles: &[&[f32]],
    shape: ImageShape,
    columns: usize,
) -> StageResult<()> {
    let columns = columns.max(1);
    let rows = tiles.len().div_ceil(columns).max(1);
    let zoom = (96 / shape.height.max(1)).clamp(1, 4) as u32;
    let (th, tw) = (shape.height as u32 * zoom, shape.width as u32 * zoom);
    let mut img = RgbImage::from_pixel(
        columns as u32 * (tw + GAP) + GAP,
        rows as u32 * (th + GAP) + GAP,
        Rgb([255, 255, 255]),
    );
    let plane = shape.height * shape.width;
    for (k, tile) in tiles.iter().enumerate() {
        if tile.len() != shape.dim() {
            return Err(StageError::Failed(format!(
                "an image of {} values does not have shape {}x{}x{}",
                tile.len(),
                shape.channels,
                shape.height,
                shape.width
            )));
        }
        let (x0, y0) = (
            GAP + (k % columns) as u32 * (tw + GAP),
            GAP + (k / columns) as u32 * (th + GAP),
        );
        for y in 0..th {
            for x in 0..tw {
                let at = (y / zoom) as usize * shape.width + (x / zoom) as usize;
                let px = |c: usize| to_byte(tile[c * plane + at]);
                let rgb = if shape.channels >= 3 {
                    [px(0), px(1), px(2)]
                } else {
                    [px(0); 3]
                };
                img.put_pixel(x0 + x, y0 + y, Rgb(rgb));
            }
        }
    }
    let fail = |e: &dyn std::fmt::Display| {
        StageError::Failed(format!("cannot write {}: {e}", path.display()))
    };
    img.save(path).map_err(|e| fail(&e))?;
    let png = std::fs::read(path).map_err(|e| fail(&e))?;
    let svg = path.with_extension("svg");
    std::fs::write(&svg, svg_of_png(&png, img.width(), img.height()))
        .map_err(|e| StageError::Failed(format!("cannot write {}: {e}", svg.display())))
}

/// An SVG of the same pixels, like every other figure's SVG: images are pixels, so
/// the PNG is embedded whole (lossless) and drawn without smoothing.
fn svg_of_png(png: &[u8], width: u32, height: u32) -> String {
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(png);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n<image width=\"{width}\" height=\"{height}\" style=\"image-rendering:pixelated\" href=\"data:image/png;base64,{data}\"/>\n</svg>\n"
    )
}

fn to_byte(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_and_scales_tiles() {
        let dir = tempfile::tempdir().unwrap();
        let shape = ImageShape {
            channels: 1,
            height: 2,
            width: 2,
        };
        let black = [-1.0f32; 4];
        let white = [1.0f32; 4];
        let path = dir.path().join("g.png");
        write_grid(&path, &[&black, &white, &black], shape, 2).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let zoom = 4;
        assert_eq!(img.width(), 2 * (2 * zoom + GAP) + GAP);
        assert_eq!(img.height(), 2 * (2 * zoom + GAP) + GAP);
        assert_eq!(img.get_pixel(GAP, GAP)[0], 0);
        assert_eq!(img.get_pixel(GAP + 2 * zoom + GAP, GAP)[0], 255);
        // The SVG beside it holds the very same PNG.
        use base64::Engine as _;
        let svg = std::fs::read_to_string(path.with_extension("svg")).unwrap();
        let data = svg
            .split("base64,")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert_eq!(png, std::fs::read(&path).unwrap());
        assert!(svg.contains(&format!("width=\"{}\"", img.width())));
        assert!(write_grid(&path, &[&[0.0f32; 3]], shape, 2).is_err());
    }
}
