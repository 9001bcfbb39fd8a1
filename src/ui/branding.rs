//! What `[ui]` makes of the pages: the product name put into the HTML, the
//! theme stylesheet (`/branding/theme.css`: the accent colour and the
//! shades worked out from it for both themes) and the logo
//! (`/branding/logo`), read once at start and served from memory.

use crate::config::ui::{contrast, parse_hex_color, read_logo, UiConfig, DEFAULT_ACCENT_COLOR};

/// The built-in mark, served when no `ui.logo_file` is set.
const DEFAULT_LOGO: &[u8] = include_bytes!("../../assets/favicon.svg");

/// Surfaces the accent is drawn on, per theme (as in `assets/app.css`).
const LIGHT_BACKGROUND: [u8; 3] = [0xf5, 0xf6, 0xf8];
const DARK_SURFACE: [u8; 3] = [0x1b, 0x21, 0x2c];
const DARK_BACKGROUND: [u8; 3] = [0x12, 0x16, 0x1e];
/// Text on accent-coloured buttons in the dark theme.
const DARK_ON_ACCENT: [u8; 3] = [0x0d, 0x11, 0x17];
const AA: f64 = crate::config::ui::MIN_CONTRAST;

pub struct Branding {
    pub product_name: String,
    pub theme_css: String,
    pub logo: Vec<u8>,
    pub logo_content_type: &'static str,
    /// Whether the logo is the team's own (`ui.logo_file`).
    pub custom_logo: bool,
}

impl Branding {
    /// `ui` has passed the startup checks; should the logo have become
    /// unreadable since, the built-in mark stands in and the log says why.
    pub fn new(ui: &UiConfig) -> Branding {
        let (logo, logo_content_type, custom_logo) = match &ui.logo_file {
            None => (DEFAULT_LOGO.to_vec(), "image/svg+xml", false),
            Some(path) => match read_logo(path) {
                Ok((bytes, kind)) => (bytes, kind.content_type(), true),
                Err(e) => {
                    tracing::error!(error = %e, "ui.logo_file: using the built-in logo");
                    (DEFAULT_LOGO.to_vec(), "image/svg+xml", false)
                }
            },
        };
        let accent = parse_hex_color(&ui.accent_color)
            .or_else(|| parse_hex_color(DEFAULT_ACCENT_COLOR))
            .expect("the default accent colour parses");
        Branding {
            product_name: ui.product_name.clone(),
            theme_css: theme_css(accent),
            logo,
            logo_content_type,
            custom_logo,
        }
    }

    /// Puts the product name into a page (`{{product_name}}`, HTML-escaped).
    pub fn render_page(&self, html: &str) -> String {
        html.replace("{{product_name}}", &escape_html(&self.product_name))
    }
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn hex([r, g, b]: [u8; 3]) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// `a` moved towards `b` by `t` (0..=1).
fn mix(a: [u8; 3], b: [u8; 3], t: f64) -> [u8; 3] {
    let m = |x: u8, y: u8| (f64::from(x) + (f64::from(y) - f64::from(x)) * t).round() as u8;
    [m(a[0], b[0]), m(a[1], b[1]), m(a[2], b[2])]
}

/// The least shift of `color` towards `towards` that satisfies `ok`.
fn shift_until(color: [u8; 3], towards: [u8; 3], ok: impl Fn([u8; 3]) -> bool) -> [u8; 3] {
    (0..=100)
        .map(|i| mix(color, towards, f64::from(i) / 100.0))
        .find(|c| ok(*c))
        .unwrap_or(towards)
}

/// The accent colours of both themes, each readable where it is used:
/// light theme, white text on the accent (the configuration check
/// guarantees it) and accent-coloured text on the page and on soft
/// backgrounds; dark theme, a lighter shade that
/// reads on the dark surfaces and under dark button text.
pub fn theme_css(accent: [u8; 3]) -> String {
    const WHITE: [u8; 3] = [0xff, 0xff, 0xff];
    const BLACK: [u8; 3] = [0, 0, 0];
    let light_soft = mix(accent, WHITE, 0.92);
    let light_text = shift_until(accent, BLACK, |c| {
        contrast(c, light_soft) >= AA && contrast(c, LIGHT_BACKGROUND) >= AA
    });
    let light_hover = mix(accent, BLACK, 0.15);
    let light_line = mix(accent, WHITE, 0.7);

    let dark = shift_until(accent, WHITE, |c| {
        contrast(c, DARK_SURFACE) >= AA
            && contrast(c, DARK_BACKGROUND) >= AA
            && contrast(c, DARK_ON_ACCENT) >= AA
    });
    let dark_soft = mix(dark, DARK_SURFACE, 0.82);
    let dark_text = shift_until(dark, WHITE, |c| {
        contrast(c, dark_soft) >= AA && contrast(c, DARK_BACKGROUND) >= AA
    });
    let dark_hover = mix(dark, WHITE, 0.15);
    let dark_line = mix(dark, DARK_SURFACE, 0.55);
    let rgb = |c: [u8; 3]| format!("{}, {}, {}", c[0], c[1], c[2]);
    format!(
        "/* The accent colour (ui.accent_color) and its shades, made by Gatehouse at start. */\n\
         :root {{\n  --accent: {};\n  --accent-hover: {};\n  --accent-text: {};\n  --accent-soft: {};\n  --accent-line: {};\n  --on-accent: #ffffff;\n  --accent-rgb: {};\n}}\n\
         @media (prefers-color-scheme: dark) {{\n  :root {{\n    --accent: {};\n    --accent-hover: {};\n    --accent-text: {};\n    --accent-soft: {};\n    --accent-line: {};\n    --on-accent: {};\n    --accent-rgb: {};\n  }}\n}}\n",
        hex(accent),
        hex(light_hover),
        hex(light_text),
        hex(light_soft),
        hex(light_line),
        rgb(accent),
        hex(dark),
        hex(dark_hover),
        hex(dark_text),
        hex(dark_soft),
        hex(dark_line),
        hex(DARK_ON_ACCENT),
        rgb(dark),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(css: &str, name: &str, nth: usize) -> [u8; 3] {
        let needle = format!("--{name}: ");
        let at = css.match_indices(&needle).nth(nth).unwrap().0 + needle.len();
        parse_hex_color(&css[at..at + 7]).unwrap()
    }

    #[test]
    fn every_accent_shade_is_readable_in_both_themes() {
        for accent in [
            "#1f4fd1", "#000000", "#0b6e4f", "#7a1fa2", "#b42318", "#595959",
        ] {
            let rgb = parse_hex_color(accent).unwrap();
            let css = theme_css(rgb);
            assert_eq!(var(&css, "accent", 0), rgb, "{css}");
            // Light: the accent text on its soft background.
            let text = var(&css, "accent-text", 0);
            assert!(contrast(text, var(&css, "accent-soft", 0)) >= AA);
            assert!(contrast(text, LIGHT_BACKGROUND) >= AA);
            // Dark: links on the surfaces, dark text on buttons, soft badges.
            let dark = var(&css, "accent", 1);
            assert!(contrast(dark, DARK_SURFACE) >= AA, "{accent}: {css}");
            assert!(contrast(dark, DARK_BACKGROUND) >= AA, "{accent}");
            assert!(contrast(dark, DARK_ON_ACCENT) >= AA, "{accent}");
            assert!(contrast(var(&css, "accent-text", 1), var(&css, "accent-soft", 1)) >= AA);
        }
    }

    #[test]
    fn the_product_name_is_escaped_into_pages() {
        let b = Branding::new(&UiConfig {
            product_name: "Acme <Keys> & \"Co\"".into(),
            ..Default::default()
        });
        assert_eq!(
            b.render_page("<title>{{product_name}}</title>"),
            "<title>Acme &lt;Keys&gt; &amp; &quot;Co&quot;</title>"
        );
        assert!(!b.custom_logo);
        assert_eq!(b.logo_content_type, "image/svg+xml");
    }
}
