//! `[ui]`: the face a team puts on what its customers see (the admin UI,
//! `/docs` and the mail): a product name, a logo and an accent colour.
//! Checked here like every other setting; what the server makes of them
//! (the theme stylesheet, the embedded logo) is `crate::ui::branding`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Finding;

pub const DEFAULT_PRODUCT_NAME: &str = "Gatehouse";
pub const DEFAULT_ACCENT_COLOR: &str = "#1f4fd1";
/// Logos are read into memory at start and served from there.
pub const MAX_LOGO_BYTES: u64 = 256 * 1024;
const MAX_PRODUCT_NAME_CHARS: usize = 40;
/// WCAG 2 AA for normal text: white button text on the accent colour.
pub const MIN_CONTRAST: f64 = 4.5;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct UiConfig {
    /// The name in the header, page titles, the login page, `/docs` and the
    /// subject and signature of every mail.
    pub product_name: String,
    /// An SVG or PNG file, read once at start and served as the logo and
    /// icon; the built-in mark when unset.
    pub logo_file: Option<PathBuf>,
    /// `#rrggbb`: buttons, links and the current tab. White text on it must
    /// be readable (contrast at least 4.5:1); the dark theme uses a lighter
    /// shade of it, worked out by the server.
    pub accent_color: String,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            product_name: DEFAULT_PRODUCT_NAME.into(),
            logo_file: None,
            accent_color: DEFAULT_ACCENT_COLOR.into(),
        }
    }
}

/// What kind of image a logo file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogoKind {
    Svg,
    Png,
}

impl LogoKind {
    pub fn content_type(self) -> &'static str {
        match self {
            LogoKind::Svg => "image/svg+xml",
            LogoKind::Png => "image/png",
        }
    }
}

/// Recognises a logo by its content, not its name.
pub fn logo_kind(bytes: &[u8]) -> Option<LogoKind> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.starts_with(PNG) {
        return Some(LogoKind::Png);
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let text = text.trim_start_matches('\u{feff}').trim_start();
    let head = &text[..text.len().min(4096)];
    let is_svg =
        (text.starts_with("<svg") || text.starts_with("<?xml") || text.starts_with("<!--"))
            && head.contains("<svg")
            && text.trim_end().ends_with("</svg>");
    is_svg.then_some(LogoKind::Svg)
}

/// Reads and recognises the logo file; the error says what is wrong with it.
pub fn read_logo(path: &std::path::Path) -> Result<(Vec<u8>, LogoKind), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    if meta.len() > MAX_LOGO_BYTES {
        return Err(format!(
            "{} is {} bytes; a logo may be at most {} KiB",
            path.display(),
            meta.len(),
            MAX_LOGO_BYTES / 1024
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let kind = logo_kind(&bytes)
        .ok_or_else(|| format!("{} is neither an SVG nor a PNG image", path.display()))?;
    Ok((bytes, kind))
}

/// `#rrggbb` as three bytes.
pub fn parse_hex_color(s: &str) -> Option<[u8; 3]> {
    let hex = s.strip_prefix('#')?;
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some([byte(0)?, byte(2)?, byte(4)?])
}

/// Relative luminance (WCAG 2).
pub fn luminance([r, g, b]: [u8; 3]) -> f64 {
    let channel = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)
}

/// Contrast ratio between two colours (1 to 21).
pub fn contrast(a: [u8; 3], b: [u8; 3]) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    let (hi, lo) = if la > lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

pub(super) fn check(ui: &UiConfig, out: &mut Vec<Finding>) {
    let name = ui.product_name.trim();
    if name.is_empty() || name.chars().count() > MAX_PRODUCT_NAME_CHARS {
        out.push(Finding::error(
            "ui.product_name",
            format!("must be 1-{MAX_PRODUCT_NAME_CHARS} characters"),
        ));
    } else if name.chars().any(char::is_control) || name != ui.product_name {
        out.push(Finding::error(
            "ui.product_name",
            "must not hold control characters or start or end with spaces",
        ));
    }
    match parse_hex_color(&ui.accent_color) {
        None => out.push(
            Finding::error(
                "ui.accent_color",
                format!("`{}` is not a colour written as #rrggbb", ui.accent_color),
            )
            .with_hint(format!(
                "for example accent_color = \"{DEFAULT_ACCENT_COLOR}\""
            )),
        ),
        Some(rgb) => {
            let ratio = contrast(rgb, [255, 255, 255]);
            if ratio < MIN_CONTRAST {
                out.push(
                    Finding::error(
                        "ui.accent_color",
                        format!(
                            "`{}` is too light: white text on it has a contrast of {ratio:.1}:1, \
                             and buttons need at least {MIN_CONTRAST}:1 to be readable",
                            ui.accent_color
                        ),
                    )
                    .with_hint("choose a darker shade of the colour"),
                );
            }
        }
    }
    if let Some(path) = &ui.logo_file {
        if let Err(e) = read_logo(path) {
            out.push(Finding::error("ui.logo_file", e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(ui: UiConfig) -> Vec<Finding> {
        let mut out = Vec::new();
        check(&ui, &mut out);
        out
    }

    #[test]
    fn the_defaults_pass() {
        assert!(findings(UiConfig::default()).is_empty());
    }

    #[test]
    fn a_name_must_be_short_and_plain() {
        for bad in ["", "   ", " Acme", "Acme\nKeys", &"x".repeat(41)] {
            let f = findings(UiConfig {
                product_name: bad.into(),
                ..Default::default()
            });
            assert_eq!(f.len(), 1, "{bad:?}");
            assert_eq!(f[0].key, "ui.product_name");
        }
        assert!(findings(UiConfig {
            product_name: "Acme Keys & Co".into(),
            ..Default::default()
        })
        .is_empty());
    }

    #[test]
    fn an_accent_colour_is_hex_and_dark_enough_for_white_text() {
        for bad in ["blue", "#12345", "#1234567", "1f4fd1", "#ggg000"] {
            let f = findings(UiConfig {
                accent_color: bad.into(),
                ..Default::default()
            });
            assert_eq!(f[0].key, "ui.accent_color", "{bad}");
            assert!(f[0].reason.contains("#rrggbb"), "{}", f[0].reason);
        }
        let f = findings(UiConfig {
            accent_color: "#ffcc00".into(),
            ..Default::default()
        });
        assert!(f[0].reason.contains("too light"), "{}", f[0].reason);
        for good in ["#1f4fd1", "#0B6E4F", "#7a1fa2", "#000000"] {
            assert!(
                findings(UiConfig {
                    accent_color: good.into(),
                    ..Default::default()
                })
                .is_empty(),
                "{good}"
            );
        }
    }

    #[test]
    fn contrast_follows_wcag() {
        assert!((contrast([0, 0, 0], [255, 255, 255]) - 21.0).abs() < 1e-9);
        assert!((contrast([10, 20, 30], [10, 20, 30]) - 1.0).abs() < 1e-9);
        // #767676 on white is the classic 4.54:1.
        let r = contrast([0x76, 0x76, 0x76], [255, 255, 255]);
        assert!(r > 4.5 && r < 4.6, "{r}");
    }

    #[test]
    fn a_logo_is_recognised_by_its_content() {
        assert_eq!(
            logo_kind(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some(LogoKind::Png)
        );
        assert_eq!(
            logo_kind(br#"<svg xmlns="http://www.w3.org/2000/svg"></svg>"#),
            Some(LogoKind::Svg)
        );
        assert_eq!(
            logo_kind(b"<?xml version=\"1.0\"?>\n<svg viewBox=\"0 0 1 1\"/>\n</svg>\n"),
            Some(LogoKind::Svg)
        );
        assert_eq!(logo_kind(b"GIF89a"), None);
        assert_eq!(logo_kind(b"<html><svg></svg></html>"), None);
    }

    #[test]
    fn a_logo_file_that_is_missing_large_or_not_an_image_is_refused() {
        let dir = std::env::temp_dir().join(format!("gatehouse-logo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("logo.txt");
        std::fs::write(&text, "not an image").unwrap();
        let big = dir.join("big.png");
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.resize(MAX_LOGO_BYTES as usize + 1, 0);
        std::fs::write(&big, bytes).unwrap();
        for (path, says) in [
            (dir.join("missing.svg"), "cannot read"),
            (text, "neither an SVG nor a PNG"),
            (big, "at most 256 KiB"),
        ] {
            let f = findings(UiConfig {
                logo_file: Some(path.clone()),
                ..Default::default()
            });
            assert_eq!(f.len(), 1, "{}", path.display());
            assert_eq!(f[0].key, "ui.logo_file");
            assert!(f[0].reason.contains(says), "{}", f[0].reason);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
