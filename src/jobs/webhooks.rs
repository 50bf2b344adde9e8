//! Which hosts a job's webhook may call: an allow-list from the configuration, so the service
//! cannot be turned against the network it runs in. Empty, no webhook is called, and a job
//! naming one is refused when it is created or changed; the caller checks again before each
//! call, in case the list changed since.

use crate::domain::{Invalid, Webhook};

/// The hosts webhooks may call: `host` (any port), `host:port`, or `*.domain` (any host under
/// it, not the domain itself), compared without case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// The list from its comma-separated text; an entry that is not a host names itself.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut hosts = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let entry = entry.to_ascii_lowercase();
            let host = entry.strip_prefix("*.").unwrap_or(&entry);
            let (name, port) = match host.rsplit_once(':') {
                Some((name, port)) if !name.contains(':') => (name, Some(port)),
                _ => (host, None),
            };
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
            if !name_ok || !port_ok {
                return Err(format!("{entry:?} is not a host, host:port or *.domain"));
            }
            hosts.push(entry);
        }
        Ok(Self(hosts))
    }

    /// Whether none is allowed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a webhook may call `host` (`host` or `host:port`, as [`Webhook::host`] gives it).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let name = host
            .rsplit_once(':')
            .map_or(host.as_str(), |(name, _)| name);
        self.0.iter().any(|entry| match entry.strip_prefix("*.") {
            Some(domain) => name
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None if entry.contains(':') => *entry == host,
            None => entry == name,
        })
    }

    /// Refuses a webhook whose host is not allowed, naming `webhook.url`.
    pub fn check(&self, webhook: &Webhook) -> Result<(), Invalid> {
        let host = webhook.host().unwrap_or_default();
        if self.is_empty() {
            return Err(Invalid::field(
                "webhook.url",
                "no webhook host is allowed: the service calls none unless --webhook-allowed-hosts names it",
            ));
        }
        if !self.allows(&host) {
            return Err(Invalid::field(
                "webhook.url",
                format!("the host {host} is not on the allow-list (--webhook-allowed-hosts)"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_allowed_by_name_by_name_and_port_or_under_a_domain() {
        let allowed =
            AllowedHosts::parse("hooks.example.com, 127.0.0.1:9000, *.internal.test").unwrap();
        let cases = [
            ("hooks.example.com", true),
            ("HOOKS.example.com:8443", true),
            ("evil.example.com", false),
            ("127.0.0.1:9000", true),
            ("127.0.0.1:9001", false),
            ("127.0.0.1", false),
            ("a.internal.test", true),
            ("a.b.internal.test:80", true),
            ("internal.test", false),
            ("xinternal.test", false),
            ("metadata.google.internal", false),
        ];
        for (host, expected) in cases {
            assert_eq!(allowed.allows(host), expected, "{host}");
        }
        assert!(AllowedHosts::parse("").unwrap().is_empty());
        for bad in ["http://x", "host:0", "host:port", "a b"] {
            assert!(AllowedHosts::parse(bad).is_err(), "{bad}");
        }
    }
}
