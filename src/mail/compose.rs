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
