//! Mail: one interface, two deliveries. In local mode every message goes to
//! the local mailbox (`/dev/mailbox`) and to the log, and also to SMTP when
//! `smtp.host` is set; otherwise messages go through SMTP only. Either way a
//! message is a row in the outbox written in the transaction of the change
//! that caused it; the SMTP worker (`worker`) delivers it with retries.

pub mod compose;
pub mod worker;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Config;
use crate::store::work::{Outgoing, Transport};
use crate::types::Email;

/// How long an invitation keeps being retried.
const NOTICE_TTL_SECS: i64 = 7 * 86_400;

/// A login code's lifetime in words, as the email states it. The login
/// page (`assets/js/pages/login.js`, `lifetime`) words the `expires_in` of
/// send-code the same way.
pub fn lifetime(secs: u64) -> String {
    match secs {
        s if s >= 120 && s % 60 == 0 => format!("{} minutes", s / 60),
        1 => "1 second".into(),
        s => format!("{s} seconds"),
    }
}

pub struct Mailer {
    config: Arc<Config>,
    wake: Arc<Notify>,
}

impl Mailer {
    pub fn new(config: Arc<Config>) -> Self {
        Mailer {
            config,
            wake: Arc::new(Notify::new()),
        }
    }

    fn smtp_configured(&self) -> bool {
        self.config
            .smtp
            .host
            .as_deref()
            .is_some_and(|h| !h.trim().is_empty())
    }

    pub fn transports(&self) -> Vec<Transport> {
        let mut t = Vec::new();
        if self.config.mode.is_local() {
            t.push(Transport::Mailbox);
        }
        if self.smtp_configured() || !self.config.mode.is_local() {
            t.push(Transport::Smtp);
        }
        t
    }

    fn site(&self) -> String {
        self.config
            .effective_public_url()
            .as_str()
            .trim_end_matches('/')
            .to_string()
    }

    /// The name the mail goes out under (`ui.product_name`).
    fn product(&self) -> &str {
        &self.config.ui.product_name
    }

    pub fn login_code(&self, to: &Email, code: &str, now: i64) -> Outgoing {
        let ttl = self.config.auth.code_ttl_secs;
        let lifetime = lifetime(ttl);
        let product = self.product();
        Outgoing {
            transports: self.transports(),
            to: to.as_str().to_string(),
            subject: format!("Your {product} login code"),
            body: format!(
                "Your {product} login code is:\n\n    {code}\n\n\
                 It expires in {lifetime} and works once. A newer code replaces it.\n\n\
                 If you did not try to log in, you can ignore this email: nobody can\n\
                 log in without the code.\n\n\
                 {product} at {site}\n",
                site = self.site()
            ),
            expires_at: now + ttl as i64,
        }
    }

    pub fn member_added(
        &self,
        to: &Email,
        project: &str,
        by: &str,
        role: &str,
        now: i64,
    ) -> Outgoing {
        Outgoing {
            transports: self.transports(),
            to: to.as_str().to_string(),
            subject: format!("You were added to {project} on {}", self.product()),
            body: format!(
                "{by} added you to the project \"{project}\" as {role}.\n\n\
                 Log in with this email address at {site}/login\n\
                 (you will get a one-time code by email; there is no password).\n",
                site = self.site()
            ),
            expires_at: now + NOTICE_TTL_SECS,
        }
    }

    /// Call after the transaction that queued `msg` committed: logs mailbox
    /// copies (local mode) and wakes the SMTP worker.
    pub fn queued(&self, msg: &Outgoing) {
        if msg.transports.contains(&Transport::Mailbox) {
            tracing::info!(
                to = %msg.to,
                subject = %msg.subject,
                body = %msg.body,
                "local mailbox: message delivered (see /dev/mailbox)"
            );
        }
        if msg.transports.contains(&Transport::Smtp) {
            self.wake.notify_one();
        }
    }

    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::{lifetime, Mailer};
    use crate::config::Config;
    use crate::types::Email;
    use std::sync::Arc;

    #[test]
    fn mail_goes_out_under_the_product_name() {
        let mut config = Config::default();
        config.ui.product_name = "Acme API".into();
        let mailer = Mailer::new(Arc::new(config));
        let to = Email::parse("alice@acme.test").unwrap();
        let code = mailer.login_code(&to, "123456", 0);
        assert_eq!(code.subject, "Your Acme API login code");
        assert!(
            code.body.starts_with("Your Acme API login code is:"),
            "{}",
            code.body
        );
        assert!(code.body.contains("\nAcme API at http://"), "{}", code.body);
        assert!(!code.body.contains("Gatehouse"), "{}", code.body);
        let invite = mailer.member_added(&to, "Shop", "bob@acme.test", "member", 0);
        assert_eq!(invite.subject, "You were added to Shop on Acme API");
    }

    #[test]
    fn a_lifetime_reads_in_minutes_when_whole() {
        assert_eq!(lifetime(600), "10 minutes");
        assert_eq!(lifetime(120), "2 minutes");
        assert_eq!(lifetime(90), "90 seconds");
        assert_eq!(lifetime(60), "60 seconds");
        assert_eq!(lifetime(1), "1 second");
    }
}
