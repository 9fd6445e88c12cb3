//! Thumbnails of PNG, JPEG, GIF and WebP images.
//!
//! A requested size is rounded up to one of a few standard sizes (as Synapse does), so
//! a media has at most a handful of cached thumbnails whatever clients ask for. Images
//! are never enlarged. JPEG sources give JPEG thumbnails; the others give PNG (which
//! keeps transparency). Animated GIF and WebP give their first frame.

use std::{io::Cursor, path::Path};

use image::{DynamicImage, ImageFormat, ImageReader, Limits, imageops::FilterType};

/// The sizes thumbnails are made at: a request gets the smallest that covers it.
pub const SIZES: [(u32, u32); 5] = [(32, 32), (96, 96), (320, 240), (640, 480), (800, 600)];

/// How a thumbnail fits the requested box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Exactly the box's aspect ratio, cropping what sticks out.
    Crop,
    /// Within the box, keeping the image's aspect ratio.
    Scale,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

/// Whether thumbnails can be made of a detected type.
pub fn supported(content_type: &str) -> bool {
    format_of(content_type).is_some()
}

fn format_of(content_type: &str) -> Option<ImageFormat> {
    match content_type {
        "image/png" => Some(ImageFormat::Png),
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// The standard size that serves a request for `width` x `height`.
pub fn standard_size(width: u32, height: u32) -> (u32, u32) {
    SIZES.into_iter().find(|&(w, h)| w >= width && h >= height).unwrap_or(SIZES[SIZES.len() - 1])
}

/// The content type of the thumbnails of a source type.
pub fn output_type(content_type: &str) -> &'static str {
    if content_type == "image/jpeg" { "image/jpeg" } else { "image/png" }
}

/// Decodes `source` (of the detected `content_type`) and renders a thumbnail for the
/// box `width` x `height`. Blocking and CPU-bound: call it from a blocking thread.
pub fn render(source: &Path, content_type: &str, width: u32, height: u32, method: Method) -> Result<Vec<u8>, String> {
    let format = format_of(content_type).ok_or_else(|| format!("no thumbnails of {content_type}"))?;
    let mut reader = ImageReader::with_format(
        std::io::BufReader::new(std::fs::File::open(source).map_err(|e| e.to_string())?),
        format,
    );
    // A small file may claim a huge canvas: refuse to allocate for it.
    let mut limits = Limits::default();
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    limits.max_alloc = Some(256 * 1024 * 1024);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| e.to_string())?;
    let thumb = resize(&image, width.max(1), height.max(1), method);
    let mut out = Cursor::new(Vec::new());
    if output_type(content_type) == "image/jpeg" {
        DynamicImage::ImageRgb8(thumb.to_rgb8()).write_to(&mut out, ImageFormat::Jpeg)
    } else if thumb.color().has_alpha() {
        DynamicImage::ImageRgba8(thumb.to_rgba8()).write_to(&mut out, ImageFormat::Png)
    } else {
        DynamicImage::ImageRgb8(thumb.to_rgb8()).write_to(&mut out, ImageFormat::Png)
    }
    .map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

fn resize(image: &DynamicImage, width: u32, height: u32, method: Method) -> DynamicImage {
    let (iw, ih) = (image.width(), image.height());
    match method {
        Method::Scale if iw <= width && ih <= height => image.clone(),
        Method::Scale => image.thumbnail(width, height),
        Method::Crop => {
            // The box's aspect ratio, shrunk until it fits inside the image.
            let s = (f64::from(iw) / f64::from(width)).min(f64::from(ih) / f64::from(height)).min(1.0);
            let (w, h) =
                (((f64::from(width) * s).round() as u32).max(1), ((f64::from(height) * s).round() as u32).max(1));
            image.resize_to_fill(w, h, FilterType::Triangle)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, img: DynamicImage, format: ImageFormat) -> std::path::PathBuf {
        let path = dir.join(name);
        img.save_with_format(&path, format).unwrap();
        path
    }

    fn dimensions(bytes: &[u8]) -> (u32, u32) {
        let img = image::load_from_memory(bytes).unwrap();
        (img.width(), img.height())
    }

    #[test]
    fn sizes_round_up_to_a_standard_one() {
        assert_eq!(standard_size(10, 10), (32, 32));
        assert_eq!(standard_size(33, 20), (96, 96));
        assert_eq!(standard_size(300, 200), (320, 240));
        assert_eq!(standard_size(5000, 5000), (800, 600));
    }

    #[test]
    fn scale_keeps_the_aspect_ratio_and_crop_fills_the_box() {
        let dir = tempfile::tempdir().unwrap();
        let src = write(dir.path(), "a.png", DynamicImage::new_rgba8(400, 200), ImageFormat::Png);
        let scaled = render(&src, "image/png", 96, 96, Method::Scale).unwrap();
        assert_eq!(dimensions(&scaled), (96, 48));
        let cropped = render(&src, "image/png", 96, 96, Method::Crop).unwrap();
        assert_eq!(dimensions(&cropped), (96, 96));
        assert_eq!(image::guess_format(&cropped).unwrap(), ImageFormat::Png);
    }

    #[test]
    fn small_images_are_not_enlarged() {
        let dir = tempfile::tempdir().unwrap();
        let src = write(dir.path(), "s.jpg", DynamicImage::new_rgb8(20, 10), ImageFormat::Jpeg);
        let scaled = render(&src, "image/jpeg", 320, 240, Method::Scale).unwrap();
        assert_eq!(dimensions(&scaled), (20, 10));
        assert_eq!(image::guess_format(&scaled).unwrap(), ImageFormat::Jpeg);
        let cropped = render(&src, "image/jpeg", 96, 96, Method::Crop).unwrap();
        assert_eq!(dimensions(&cropped), (10, 10));
    }

    #[test]
    fn gif_and_corrupt_input() {
        let dir = tempfile::tempdir().unwrap();
        let src = write(dir.path(), "g.gif", DynamicImage::new_rgba8(64, 64), ImageFormat::Gif);
        assert_eq!(dimensions(&render(&src, "image/gif", 32, 32, Method::Scale).unwrap()), (32, 32));
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        assert!(render(&bad, "image/png", 32, 32, Method::Scale).is_err());
        assert!(render(&bad, "application/pdf", 32, 32, Method::Scale).is_err());
    }
}
