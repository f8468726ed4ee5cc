//! The webhook server's configuration from `winipam run` flags. It lives with the flags so that
//! the webhook module (shared with the tests and the simulator's tooling) never imports `run`.

use crate::run::RunArgs;
use crate::run::flags::CertMode;
use crate::webhook::{CertSource, SelfManagedCerts, WebhookConfig};

impl RunArgs {
    /// The configuration the flags describe: `--webhook-addr`, `--webhook-cert-mode` (`files`
    /// in `--webhook-cert-dir`, or self-managed in the controller's namespace) and
    /// `--controller-service-accounts`. `client` serves the watches, `requests` (bounded) the
    /// rest.
    pub fn webhook_config(&self, client: kube::Client, requests: kube::Client) -> WebhookConfig {
        WebhookConfig {
            client,
            requests,
            addr: self.webhook_addr,
            certs: self.cert_source(),
            allowed_users: self.controller_service_accounts(),
        }
    }

    /// Where the serving certificate comes from (`--webhook-cert-mode`).
    pub fn cert_source(&self) -> CertSource {
        match self.webhook_cert_mode {
            CertMode::Files => CertSource::files(&self.webhook_cert_dir),
            CertMode::SelfManaged => {
                CertSource::SelfManaged(SelfManagedCerts::new(self.namespace()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(flags: &[&str]) -> RunArgs {
        Cli::try_parse_from(["winipam"].iter().chain(flags))
            .expect("valid flags")
            .run
    }

    #[test]
    fn cert_source_from_flags() {
        let files = args(&["--webhook-cert-dir", "/certs"]).cert_source();
        assert!(
            matches!(&files, CertSource::Files { dir, poll_interval } if dir == Path::new("/certs") && *poll_interval == Duration::from_secs(10)),
            "{files:?}"
        );
        let own =
            args(&["--webhook-cert-mode", "self-managed", "--namespace", "ops"]).cert_source();
        let CertSource::SelfManaged(settings) = own else {
            panic!("self-managed expected: {own:?}");
        };
        assert_eq!(settings.namespace, "ops");
        assert_eq!(settings.secret_name, "winipam-webhook-tls");
        assert_eq!(settings.service_name, "winipam-webhook");
        assert_eq!(settings.configuration_name, "winipam");
    }

    #[tokio::test]
    async fn config_from_flags() {
        let client = kube::Client::try_from(kube::Config::new(
            "https://127.0.0.1:9".parse().expect("a URL"),
        ))
        .expect("a client");
        let cfg = args(&["--namespace", "ops", "--webhook-addr", "127.0.0.1:8443"])
            .webhook_config(client.clone(), client);
        assert_eq!(
            cfg.addr,
            "127.0.0.1:8443".parse::<SocketAddr>().expect("an address")
        );
        assert_eq!(cfg.allowed_users, ["system:serviceaccount:ops:winipam"]);
        assert!(matches!(cfg.certs, CertSource::Files { .. }));
    }
}
