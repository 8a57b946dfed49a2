//! A folder of PNG/JPEG images brought by the user (Oxford Flowers, WikiArt paintings,
//! ...), read as square RGB images: the shorter side resized to `size`, then
//! center-cropped. Images in sub-folders are labelled by the sub-folder's name.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

/// Extensions read as images (case-insensitive); anything else is skipped.
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The files of a folder, split into images and skipped files, all sorted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    pub images: Vec<PathBuf>,
    pub skipped: Vec<PathBuf>,
    /// Paths that lead (through symlinks) to a folder or image already listed, with
    /// where they lead: each real path is read once, so a link to `..` neither counts
    /// images twice nor loops forever.
    pub repeated: Vec<(PathBuf, PathBuf)>,
}

/// Lists `dir` recursively, following symlinks once per real path. Hidden files and
/// folders (a leading `.`) are ignored.
pub fn list(dir: &Path) -> Result<Listing, String> {
    if !dir.is_dir() {
        return Err(format!(
            "image folder {} does not exist or is not a directory",
            dir.display()
        ));
    }
    let mut listing = Listing::default();
    let mut seen = std::collections::HashSet::new();
    let real = |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    seen.insert(real(dir));
    // Breadth first, each folder's entries in name order: of the paths to one real
    // folder or image, the shallowest (then the first by name) is the one read.
    let mut queue = std::collections::VecDeque::from([dir.to_path_buf()]);
    while let Some(current) = queue.pop_front() {
        let mut entries = std::fs::read_dir(&current)
            .and_then(|d| d.collect::<std::io::Result<Vec<_>>>())
            .map_err(|e| format!("cannot list {}: {e}", current.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let is_dir = path.is_dir();
            if is_dir || is_image(&path) {
                let target = real(&path);
                if !seen.insert(target.clone()) {
                    listing.repeated.push((path, target));
                } else if is_dir {
                    queue.push_back(path);
                } else {
                    listing.images.push(path);
                }
            } else {
                listing.skipped.push(path);
            }
        }
    }
    listing.images.sort();
    listing.skipped.sort();
    listing.repeated.sort();
    if listing.images.is_empty() {
        return Err(format!(
            "image folder {} has no PNG or JPEG images",
            dir.display()
        ));
    }
    Ok(listing)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The label of an image: its first-level sub-folder under `root` (`None` for images
/// directly in `root`).
pub fn label_of(root: &Path, image: &Path) -> Option<String> {
    let relative = image.strip_prefix(root).ok()?;
    let mut parts = relative.components();
    let first = parts.next()?;
    parts.next()?;
    Some(first.as_os_str().to_string_lossy().into_owned())
}

/// Reads one image as planar RGB bytes [3, size, size]: shorter side resized to
/// `size` (Catmull-Rom), then the centre cropped. Errors name the file.
pub fn load(path: &Path, size: usize) -> Result<Vec<u8>, String> {
    let img = image::open(path)
        .map_err(|e| format!("cannot decode image {}: {e}", path.display()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(format!("image {} is empty", path.display()));
    }
    let scale = size as f64 / w.min(h) as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(size as u32),
        ((h as f64 * scale).round() as u32).max(size as u32),
    );
    let resized = image::imageops::resize(&img, nw, nh, FilterType::CatmullRom);
    let (x0, y0) = ((nw - size as u32) / 2, (nh - size as u32) / 2);
    let mut out = vec![0u8; 3 * size * size];
    for y in 0..size {
        for x in 0..size {
            let p = resized.get_pixel(x0 + x as u32, y0 + y as u32);
            for c in 0..3 {
                out[c * size * size + y * size + x] = p[c];
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, colour: [u8; 3]) {
        image::RgbImage::from_pixel(w, h, image::Rgb(colour))
            .save(path)
            .unwrap();
    }

    #[test]
    fn lists_images_skips_others_and_labels_by_subfolder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("roses")).unwrap();
        write_png(&dir.path().join("roses/a.png"), 4, 4, [255, 0, 0]);
        write_png(&dir.path().join("b.PNG"), 4, 4, [0, 255, 0]);
        std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
        std::fs::write(dir.path().join(".hidden.png"), "x").unwrap();
        let listing = list(dir.path()).unwrap();
        assert_eq!(listing.images.len(), 2);
        assert_eq!(listing.skipped, vec![dir.path().join("notes.txt")]);
        assert_eq!(
            label_of(dir.path(), &dir.path().join("roses/a.png")).as_deref(),
            Some("roses")
        );
        assert_eq!(label_of(dir.path(), &dir.path().join("b.PNG")), None);
    }

    /// Links to `..` (a loop) and to an image already listed are followed once: the
    /// images count once each, the listing ends, and the repeats are reported.
    #[test]
    fn symlinks_are_followed_once_per_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for class in ["c", "d"] {
            std::fs::create_dir(root.join(class)).unwrap();
            write_png(&root.join(class).join("a.png"), 4, 4, [255, 0, 0]);
        }
        std::os::unix::fs::symlink("..", root.join("c/l1")).unwrap();
        std::os::unix::fs::symlink("../c", root.join("d/l2")).unwrap();
        std::os::unix::fs::symlink("a.png", root.join("d/same.png")).unwrap();
        let listing = list(root).unwrap();
        assert_eq!(
            listing.images,
            vec![root.join("c/a.png"), root.join("d/a.png")]
        );
        let repeated: Vec<&Path> = listing.repeated.iter().map(|(p, _)| p.as_path()).collect();
        assert_eq!(
            repeated,
            [
                root.join("c/l1"),
                root.join("d/l2"),
                root.join("d/same.png")
            ]
        );
    }

    #[test]
    fn resizes_the_short_side_and_crops_the_centre() {
        let dir = tempfile::tempdir().unwrap();
        // 40x20: left half red, right half blue, with a green centre stripe.
        let mut img = image::RgbImage::new(40, 20);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if (18..22).contains(&x) {
                image::Rgb([0, 255, 0])
            } else if x < 20 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            };
        }
        let path = dir.path().join("wide.png");
        img.save(&path).unwrap();
        let out = load(&path, 10).unwrap();
        assert_eq!(out.len(), 3 * 10 * 10);
        // Resized to 20x10, cropped to columns 5..15: red edge on the left, blue on
        // the right, green in the middle.
        let px = |c: usize, y: usize, x: usize| out[c * 100 + y * 10 + x];
        assert!(px(0, 5, 0) > 200 && px(2, 5, 0) < 50);
        assert!(px(2, 5, 9) > 200 && px(0, 5, 9) < 50);
        assert!(px(1, 5, 5) > 150);
    }

    #[test]
    fn a_corrupt_image_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.jpg");
        std::fs::write(&path, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
        let err = load(&path, 8).unwrap_err();
        assert!(
            err.contains("cannot decode image") && err.contains("broken.jpg"),
            "{err}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(list(empty.path()).unwrap_err().contains("no PNG or JPEG"));
    }
}
