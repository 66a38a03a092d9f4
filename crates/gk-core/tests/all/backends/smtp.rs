//! Email over SMTP to a real server started by the test (Python's aiosmtpd, installed by
//! scripts/install-deps.sh): the message arrives with the right headers and body.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gk_core::host::{Mailer, SmtpConfig, SmtpMailer, SmtpSecurity};
use gk_sdk::{Email, HostError};

struct SmtpServer {
    child: Child,
    port: u16,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_smtp_server(maildir: &Path) -> SmtpServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Owned by the server value at once: dropping it kills and reaps the process on every path.
    let server = SmtpServer {
        port,
        child: Command::new("python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with aiosmtpd is needed: scripts/install-deps.sh installs it"),
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "aiosmtpd did not start on port {port} (is aiosmtpd installed? scripts/install-deps.sh)"
    );
}

fn mailer(port: u16) -> SmtpMailer {
    SmtpMailer::new(&SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::None,
        username: None,
        password: None,
        from: "GoatFlow <noreply@goatflow.test>".into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn delivered(maildir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect()
}

#[tokio::test]
async fn messages_arrive_with_headers_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let server = start_smtp_server(&maildir);
    let mailer = mailer(server.port);
    let html = Email {
        to: "ann@example.com".into(),
        subject: "Weekly report".into(),
        body: "<b>12 tickets</b>".into(),
        html: true,
    };
    mailer.send("stats", &html).await.unwrap();
    let plain = Email {
        to: "bob@example.com".into(),
        subject: "Plain".into(),
        body: "just text".into(),
        html: false,
    };
    mailer.send("stats", &plain).await.unwrap();

    let mut messages = Vec::new();
    for _ in 0..100 {
        messages = delivered(&maildir);
        if messages.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(messages.len(), 2, "{messages:?}");
    let html_message = messages
        .iter()
        .find(|m| m.contains("To: ann@example.com"))
        .expect("the HTML message");
    assert!(
        html_message.contains("From: GoatFlow <noreply@goatflow.test>"),
        "{html_message}"
    );
    assert!(
        html_message.contains("Subject: Weekly report"),
        "{html_message}"
    );
    assert!(
        html_message.contains("Content-Type: text/html"),
        "{html_message}"
    );
    assert!(html_message.contains("<b>12 tickets</b>"), "{html_message}");
    let plain_message = messages
        .iter()
        .find(|m| m.contains("To: bob@example.com"))
        .expect("the plain message");
    assert!(
        plain_message.contains("Content-Type: text/plain"),
        "{plain_message}"
    );
    assert!(plain_message.contains("just text"), "{plain_message}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_backend_error() {
    let err = mailer(1)
        .send(
            "stats",
            &Email {
                to: "a@example.com".into(),
                subject: "x".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HostError::Backend(m) if m.starts_with("SMTP 127.0.0.1:")),
        "{err:?}"
    );
}
