//! A message as it goes out over SMTP: the headers mail providers expect of
//! a well-formed message (`Message-ID` on our own domain, `Date`,
//! `MIME-Version`), a plain-text part, and, when there is one, an HTML
//! alternative (`multipart/alternative`: clients show the richest part they
//! can, and the text part stays for the rest).

use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;

use crate::config::Config;

/// What one message says.
pub struct Content<'a> {
    pub subject: &'a str,
    /// The plain-text body; always sent.
    pub text: &'a str,
    /// An HTML rendering of the same message, sent as the alternative part.
    pub html: Option<&'a str>,
}

/// How the HTML part of every message looks (`[ui]`): the product's name,
/// its logo (when the team set one, linked from `public_url`) and accent.
#[derive(Clone, Debug)]
pub struct Look {
    pub product_name: String,
    pub accent_color: String,
    /// `{public_url}/branding/logo` when `ui.logo_file` is set.
    pub logo_url: Option<String>,
}

impl Look {
    pub fn from_config(config: &Config) -> Look {
        let site = config.effective_public_url();
        Look {
            product_name: config.ui.product_name.clone(),
            accent_color: config.ui.accent_color.clone(),
            logo_url: config
                .ui
                .logo_file
                .as_ref()
                .map(|_| format!("{}/branding/logo", site.as_str().trim_end_matches('/'))),
        }
    }

    /// The HTML alternative of a plain-text message: the same words,
    /// escaped, under a header in the product's colour. An indented line
    /// (a login code) is set large; web addresses become links.
    pub fn html(&self, subject: &str, text: &str) -> String {
        let esc = crate::ui::branding::escape_html;
        let accent = esc(&self.accent_color);
        let mut body = String::new();
        for para in text.trim_end().split("\n\n") {
            if para.starts_with("    ") && !para.trim().contains(char::is_whitespace) {
                body.push_str(&format!(
                    "<p style=\"font-size:28px;letter-spacing:6px;font-family:monospace;margin:16px 0\"><strong>{}</strong></p>\n",
                    esc(para.trim())
                ));
            } else {
                let lines: Vec<String> = para.lines().map(|l| linkify(&esc(l), &accent)).collect();
                body.push_str(&format!(
                    "<p style=\"margin:0 0 14px\">{}</p>\n",
                    lines.join("<br>\n")
                ));
            }
        }
        let logo = self
            .logo_url
            .as_ref()
            .map(|u| {
                format!(
                    "<img src=\"{}\" alt=\"\" width=\"28\" height=\"28\" style=\"vertical-align:middle;margin-right:8px\">",
                    esc(u)
                )
            })
            .unwrap_or_default();
        format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
             <body style=\"margin:0;padding:24px;background:#f5f6f8;font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;color:#1b2130\">\n\
             <div style=\"max-width:560px;margin:0 auto;background:#ffffff;border:1px solid #dfe3ea;border-radius:8px;overflow:hidden\">\n\
             <div style=\"background:{accent};color:#ffffff;padding:14px 20px;font-size:18px;font-weight:bold\">{logo}{name}</div>\n\
             <div style=\"padding:20px;font-size:15px;line-height:1.5\">\n{body}</div>\n</div>\n</body></html>\n",
            title = esc(subject),
            name = esc(&self.product_name),
        )
    }
}

/// Escaped text with its http(s) addresses made into links.
fn linkify(escaped: &str, accent: &str) -> String {
    let mut out = String::new();
    for (i, word) in escaped.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.starts_with("https://") || word.starts_with("http://") {
            out.push_str(&format!(
                "<a href=\"{word}\" style=\"color:{accent}\">{word}</a>"
            ));
        } else {
            out.push_str(word);
        }
    }
    out
}

/// The domain Message-IDs are made on: the host of `public_url` when it is
/// a domain name, else the domain of `smtp.from`, else `localhost`.
pub fn message_id_domain(config: &Config) -> String {
    if let Some(domain) = config.effective_public_url().domain() {
        return domain.to_ascii_lowercase();
    }
    match config.smtp.from.parse::<Mailbox>() {
        Ok(from) => from.email.domain().to_ascii_lowercase(),
        Err(_) => "localhost".into(),
    }
}

/// A fresh `<random@domain>` (RFC 5322 section 3.6.4).
pub fn message_id(domain: &str) -> String {
    format!("<{}@{domain}>", crate::crypto::random_base62(32))
}

/// The message to send. `Date` is set when it is built.
pub fn compose(
    from: &str,
    to: &str,
    content: &Content<'_>,
    message_id: String,
) -> Result<Message, String> {
    let from: Mailbox = from.parse().map_err(|e| format!("smtp.from: {e}"))?;
    let to: Mailbox = to.parse().map_err(|e| format!("recipient: {e}"))?;
    let builder = Message::builder()
        .from(from)
        .to(to)
        .subject(content.subject)
        .message_id(Some(message_id));
    let text = content.text.to_string();
    match content.html {
        None => builder.singlepart(SinglePart::plain(text)),
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(text, html.to_string())),
    }
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formatted(html: Option<&str>) -> String {
        let content = Content {
            subject: "Your Gatehouse login code",
            text: "Your code is 123456.\n",
            html,
        };
        let message = compose(
            "Gatehouse <keys@acme.test>",
            "alice@acme.test",
            &content,
            message_id("keys.acme.test"),
        )
        .unwrap();
        String::from_utf8(message.formatted()).unwrap()
    }

    fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        let head = text.split("\r\n\r\n").next().unwrap();
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
    }

    #[test]
    fn a_text_message_carries_the_standard_headers() {
        let text = formatted(None);
        let id = header(&text, "Message-ID").unwrap();
        assert!(
            id.starts_with('<') && id.ends_with("@keys.acme.test>") && id.len() > 40,
            "{id}"
        );
        assert_eq!(header(&text, "MIME-Version"), Some("1.0"));
        assert!(header(&text, "Date").is_some(), "{text}");
        assert_eq!(
            header(&text, "Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        assert!(text.contains("Your code is 123456."), "{text}");
    }

    #[test]
    fn an_html_body_is_an_alternative_to_the_text() {
        let text = formatted(Some("<p>Your code is <b>123456</b>.</p>"));
        assert_eq!(header(&text, "MIME-Version"), Some("1.0"));
        let content_type = header(&text, "Content-Type").unwrap();
        assert!(content_type.starts_with("multipart/alternative;"), "{text}");
        let plain = text.find("Content-Type: text/plain").expect("a text part");
        let html = text.find("Content-Type: text/html").expect("an HTML part");
        assert!(plain < html, "the text part comes first (least preferred)");
    }

    #[test]
    fn the_html_part_carries_the_brand_and_escapes_the_text() {
        let mut config = Config {
            public_url: Some("https://keys.acme.test/".parse().unwrap()),
            ..Default::default()
        };
        config.ui.product_name = "Acme <API>".into();
        config.ui.accent_color = "#0b6e4f".into();
        let look = Look::from_config(&config);
        assert_eq!(look.logo_url, None);
        let html = look.html(
            "Your Acme <API> login code",
            "Your code is:\n\n    123456\n\nIt <expires> soon.\n\nAcme at https://keys.acme.test\n",
        );
        assert!(html.contains("background:#0b6e4f"), "{html}");
        assert!(html.contains("Acme &lt;API&gt;"), "{html}");
        assert!(
            !html.contains("<API>") && !html.contains("<expires>"),
            "{html}"
        );
        assert!(html.contains("<strong>123456</strong>"), "{html}");
        assert!(
            html.contains("<a href=\"https://keys.acme.test\""),
            "{html}"
        );
        config.ui.logo_file = Some("/etc/gatehouse/logo.svg".into());
        let look = Look::from_config(&config);
        assert_eq!(
            look.logo_url.as_deref(),
            Some("https://keys.acme.test/branding/logo")
        );
        assert!(look
            .html("s", "t")
            .contains("src=\"https://keys.acme.test/branding/logo\""));
    }

    #[test]
    fn message_ids_are_made_on_the_public_domain() {
        let mut config = Config {
            public_url: Some("https://Keys.Acme.test/".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(message_id_domain(&config), "keys.acme.test");
        // Not on an address: the domain of smtp.from stands in.
        config.public_url = Some("http://127.0.0.1:8080".parse().unwrap());
        config.smtp.from = "Gatehouse <gatehouse@mail.acme.test>".into();
        assert_eq!(message_id_domain(&config), "mail.acme.test");
        assert_ne!(message_id("a.test"), message_id("a.test"));
    }
}
